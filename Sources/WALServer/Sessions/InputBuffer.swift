// A connection's own input buffer: read(2) writes straight into its free tail, requests are
// parsed where they lie, and consumed bytes are dropped by moving an index. When everything
// read has been consumed (the usual case) both indexes return to 0; otherwise the partial
// request at the front is moved down only when the tail has no room for the next read, so
// an unparsed remainder is copied at most once per refill, never per request.

struct InputBuffer: ~Copyable {
    private var storage: UnsafeMutableRawBufferPointer
    /// First unconsumed byte.
    private var start = 0
    /// One past the last byte read.
    private var end = 0

    /// A new connection's buffer size; it grows for large frames and shrinks back when idle.
    static let initialCapacity = 16 * 1024

    init() {
        storage = .allocate(byteCount: Self.initialCapacity, alignment: 16)
    }

    deinit { storage.deallocate() }

    /// Bytes read and not yet consumed.
    var count: Int { end - start }
    var isEmpty: Bool { start == end }
    var capacity: Int { storage.count }

    /// The unconsumed bytes; valid until the next mutating call.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<end]) }

    /// Drops `n` bytes from the front (fewer if fewer are left: a request that ended the
    /// connection may have dropped everything already).
    mutating func consume(_ n: Int) {
        start = min(start + n, end)
        if start == end {
            start = 0
            end = 0
        }
    }

    /// Drops everything (after a framing error, nothing more is parsed).
    mutating func removeAll() {
        start = 0
        end = 0
    }

    /// Free space at the tail for the next read: at least `minimum` bytes (when `limit`
    /// allows), moving the unconsumed bytes down or growing the storage only when needed.
    /// Returns an empty buffer when holding `limit` bytes already.
    mutating func freeSpace(minimum: Int, limit: Int) -> UnsafeMutableRawBufferPointer {
        let wanted = min(minimum, limit - count)
        guard wanted > 0 else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        if storage.count - end < wanted && start > 0 {
            let unconsumed = count
            storage.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: unconsumed)
            start = 0
            end = unconsumed
        }
        if storage.count - end < wanted {
            let size = min(max(storage.count * 2, end + wanted), max(limit, end + wanted))
            let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            grown.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: count)
            end = count
            start = 0
            storage.deallocate()
            storage = grown
        }
        return UnsafeMutableRawBufferPointer(rebasing: storage[end...])
    }

    /// Marks `n` bytes of the space `freeSpace` returned as read.
    mutating func didRead(_ n: Int) { end += n }

    /// Gives back storage grown for a large request once it has been consumed.
    mutating func shrinkIfIdle() {
        guard isEmpty, storage.count > 4 * Self.initialCapacity else { return }
        storage.deallocate()
        storage = .allocate(byteCount: Self.initialCapacity, alignment: 16)
    }
}
