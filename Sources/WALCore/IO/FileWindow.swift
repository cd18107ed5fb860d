// A sliding read window over one file: sequential scans (recovery, readers, verify) see
// the bytes at an offset without reading the file into memory. Memory is bounded by the
// largest frame the caller asks for.

final class FileWindow {
    let io: FileIO
    let handle: IOHandle
    let path: String
    private var storage: UnsafeMutableRawBufferPointer
    /// The most a sequential refill reads; storage grows toward it only as refills double.
    private let capacity: Int
    /// File offset of storage[0], and how many bytes of storage are valid.
    private var start = 0
    private var count = 0
    /// Bytes the next refill reads: small after an invalidation (a reader tailing the log
    /// only needs the few new records), doubling on each sequential refill up to capacity.
    private var readSize = FileWindow.initialReadSize
    private static let initialReadSize = 64 * 1024

    /// Storage starts at 64 KiB and grows only as sequential refills double, so a reader of
    /// a small log or a tailing follower does not hold a full `capacity` buffer.
    init(io: FileIO, handle: IOHandle, path: String, capacity: Int = 1 << 20) {
        self.io = io
        self.handle = handle
        self.path = path
        self.capacity = max(capacity, Self.initialReadSize)
        storage = .allocate(byteCount: Self.initialReadSize, alignment: 16)
    }

    deinit { storage.deallocate() }

    /// Bytes of the file from `offset` on: at least `minimum` of them unless the file ends
    /// first. The view stays valid until the next call.
    func view(from offset: Int, minimum: Int) throws -> UnsafeRawBufferPointer {
        if offset >= start && offset + minimum <= start + count {
            return UnsafeRawBufferPointer(rebasing: storage[(offset - start)..<count])
        }
        let sequential = offset == start + count
        let size = max(minimum, min(capacity, readSize))
        if size > storage.count {
            storage.deallocate()
            storage = .allocate(byteCount: size, alignment: 16)
        }
        start = offset
        count = 0
        count = try io.read(handle, into: UnsafeMutableRawBufferPointer(rebasing: storage[0..<size]), at: offset, path: path)
        if sequential { readSize = min(capacity, readSize * 2) }
        return UnsafeRawBufferPointer(rebasing: storage[0..<count])
    }

    /// Drops cached bytes, so the next view re-reads the file (it may have grown).
    func invalidate() {
        count = 0
        readSize = Self.initialReadSize
    }
}
