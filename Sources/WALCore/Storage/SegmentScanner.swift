// Walks every record frame of one segment file: recovery scans the last segment with it,
// `walctl verify` and repair scan them all. At the first frame that is not the expected valid
// record it gathers what recovery needs to tell a torn tail from damage (docs/format.md,
// "Recovery rules"): whether the damaged frame looks like an interrupted write (an unwritten,
// all-zero sector inside it, or the end of the file), and whether valid records follow it and
// which LSN they say was durable when they were written.

struct SegmentScan {
    var header: SegmentHeader
    var recordCount: Int = 0
    /// LSN of the last valid record, or header.firstLSN - 1 when there is none.
    var lastLSN: LSN
    /// File offset just past the last valid record.
    var endOffset: Int = SegmentHeader.size
    var fileSize: Int = 0
    /// Set when the scan stopped at something other than zeros or end of file.
    var damage: Damage?

    struct Damage {
        let offset: Int
        let expectedLSN: LSN
        let reason: String
        /// The first CRC-valid record with a later LSN after the damage, if any.
        let validRecordFollows: (offset: Int, lsn: LSN)?
        /// The highest durable LSN the valid records after the damage carry (v2 segments).
        let laterCommitted: LSN?
        /// The damaged frame looks like a write the power cut interrupted: its header is zero,
        /// the file ends inside it, or one of its 512-byte sectors is all zero (never written:
        /// segments start zero-filled, and a sector is written whole or not at all).
        let tornSignature: Bool
        /// Offset just past the last non-zero byte of the file (what a cut must clear).
        let dirtyEnd: Int
    }
}

enum SegmentScanner {
    /// The unit a disk writes atomically.
    static let sectorSize = 512

    /// Reads the header of the segment at `path`.
    static func readHeader(io: any FileIO, handle: IOHandle, path: String) throws -> SegmentHeader {
        let bytes = try io.read(handle, count: SegmentHeader.size, at: 0, path: path)
        do {
            return try SegmentHeader.decode(bytes)
        } catch {
            throw WALError.corruption(file: path, offset: 0, lsn: 0, reason: error.description)
        }
    }

    /// Scans the segment at `path` to its end or its first damage; from its first record, or
    /// from `start` (a valid frame found after damage: `walctl verify` goes on from there).
    /// `through`: stop after the record with this LSN (its end is then `endOffset`); default: the whole file.
    static func scan(io: any FileIO, path: String, maxPayload: Int, from start: (offset: Int, lsn: LSN)? = nil,
                     through last: LSN = LSN.max) throws -> SegmentScan {
        let handle = try io.open(path, mode: .readOnly)
        defer { io.close(handle) }
        let header = try readHeader(io: io, handle: handle, path: path)
        let layout = header.layout
        var offset = start?.offset ?? SegmentHeader.size
        var expected = start?.lsn ?? header.firstLSN
        var scan = SegmentScan(header: header, lastLSN: expected - 1)
        scan.endOffset = offset
        scan.fileSize = try io.size(handle, path: path)
        let window = FileWindow(io: io, handle: handle, path: path)
        while expected <= last {
            var view = try window.view(from: offset, minimum: layout.headerSize)
            var decoded = RecordFrame.decode(view, at: 0, expectedLSN: expected, maxPayload: maxPayload, layout: layout)
            if case .needMore(let bytes) = decoded, view.count >= layout.headerSize {
                // Never more than the file holds: a damaged or forged length field (up to
                // 4 GiB) must not become an allocation; the frame is then "cut off" below.
                view = try window.view(from: offset, minimum: min(bytes, max(layout.headerSize, scan.fileSize - offset)))
                decoded = RecordFrame.decode(view, at: 0, expectedLSN: expected, maxPayload: maxPayload, layout: layout)
            }
            let context = Context(window: window, layout: layout, fileSize: scan.fileSize, maxPayload: maxPayload)
            switch decoded {
            case .record(_, _, let next):
                // The last LSN there can be is 2^64 − 2 (the writer stops there): a record at
                // 2^64 − 1 leaves no LSN for the next, and was never written by wald.
                guard expected < LSN.max else {
                    scan.damage = try damage(context, at: offset, expected: expected, reason: "record at LSN \(expected), beyond the last LSN a log can hold",
                                             tornSignature: false)
                    return scan
                }
                scan.recordCount += 1
                scan.lastLSN = expected
                expected += 1
                offset += next
                scan.endOffset = offset
                continue
            case .invalid(.zeroes):
                // Zero header: the end, unless something non-zero follows.
                if try lastNonZero(window, from: offset, fileSize: scan.fileSize) > offset {
                    scan.damage = try damage(context, at: offset, expected: expected,
                                             reason: "zero-filled frame header followed by non-zero bytes", tornSignature: true)
                }
            case .needMore:
                if try view.count > 0 && lastNonZero(window, from: offset, fileSize: scan.fileSize) > offset {
                    // Cut off, unless a rotted length field is what makes it reach past the end.
                    let torn = try !lengthBitFlipExplains(context, frameAt: offset, expected: expected)
                    scan.damage = try damage(context, at: offset, expected: expected,
                                             reason: "record frame cut off by the end of the file", tornSignature: torn)
                }
            case .invalid(let reason):
                let torn = try hasUnwrittenSector(context, frameAt: offset, view: view)
                    && !(try lengthBitFlipExplains(context, frameAt: offset, expected: expected))
                scan.damage = try damage(context, at: offset, expected: expected, reason: reason.description, tornSignature: torn)
            }
            return scan
        }
        return scan
    }

    private struct Context {
        let window: FileWindow
        let layout: RecordFrame.Layout
        let fileSize: Int
        let maxPayload: Int
    }

    private static func damage(
        _ context: Context, at offset: Int, expected: LSN, reason: String, tornSignature: Bool
    ) throws -> SegmentScan.Damage {
        let dirtyEnd = try lastNonZero(context.window, from: offset, fileSize: context.fileSize)
        let later = try validRecordsAfter(context, offset: offset, above: expected &- 1, dirtyEnd: dirtyEnd)
        return .init(offset: offset, expectedLSN: expected, reason: reason, validRecordFollows: later.first,
                     laterCommitted: later.maxCommitted, tornSignature: tornSignature, dirtyEnd: max(dirtyEnd, offset))
    }

    /// Whether a 512-byte sector of the damaged frame at `offset` (as far as its length field,
    /// bounded by the file, says it reaches) is all zero: the mark of a write that never
    /// reached the disk, as opposed to a record that did and later rotted (etcd's torn-write test).
    private static func hasUnwrittenSector(_ context: Context, frameAt offset: Int, view: UnsafeRawBufferPointer) throws -> Bool {
        let headerSize = context.layout.headerSize
        var end = min(offset + headerSize, context.fileSize)
        if view.count >= 8 {
            let length = Int(view.loadLE(UInt32.self, at: 4))
            end = min(context.fileSize, offset + headerSize + min(length, context.maxPayload))
        }
        var sector = offset / sectorSize * sectorSize
        while sector < end {
            let size = min(sectorSize, context.fileSize - sector)
            let bytes = try context.window.view(from: sector, minimum: size)
            if ZeroScan.firstNonZero(UnsafeRawBufferPointer(rebasing: bytes[0..<min(size, bytes.count)])) == nil { return true }
            sector += sectorSize
        }
        return false
    }

    /// Whether flipping one bit of the frame's length field makes it the valid record expected:
    /// a complete record whose length rotted, so that its claimed extent reaches into
    /// zero-filled space and would otherwise look torn.
    private static func lengthBitFlipExplains(_ context: Context, frameAt offset: Int, expected: LSN) throws -> Bool {
        let headerSize = context.layout.headerSize
        guard context.fileSize - offset >= headerSize else { return false }
        let header = Array(try context.window.view(from: offset, minimum: headerSize).prefix(headerSize))
        let length = header.withUnsafeBytes { $0.loadLE(UInt32.self, at: 4) }
        for bit in 0..<32 {
            let candidate = Int(length ^ (UInt32(1) << UInt32(bit)))
            guard candidate <= context.maxPayload, candidate <= context.fileSize - offset - headerSize else { continue }
            var frame = Array(try context.window.view(from: offset, minimum: headerSize + candidate).prefix(headerSize + candidate))
            frame.withUnsafeMutableBytes { $0.storeLE(UInt32(candidate), at: 4) }
            let decoded = frame.withUnsafeBytes {
                RecordFrame.decode($0, at: 0, expectedLSN: expected, maxPayload: context.maxPayload, layout: context.layout)
            }
            if case .record = decoded { return true }
        }
        return false
    }

    /// Offset just past the last non-zero byte in [from, fileSize), or `from` if all zero.
    static func lastNonZero(_ window: FileWindow, from: Int, fileSize: Int) throws -> Int {
        var result = from
        var offset = from
        while offset < fileSize {
            let view = try window.view(from: offset, minimum: min(1 << 20, fileSize - offset))
            if view.isEmpty { break }
            if let last = ZeroScan.lastNonZero(view) { result = offset + last + 1 }
            offset += view.count
        }
        return result
    }

    /// Every run of valid records after `offset` with LSNs above `lastValid`: the first one,
    /// and the highest committed LSN any of them carries.
    private static func validRecordsAfter(
        _ context: Context, offset: Int, above lastValid: LSN, dirtyEnd: Int
    ) throws -> (first: (offset: Int, lsn: LSN)?, maxCommitted: LSN?) {
        var first: (offset: Int, lsn: LSN)?
        var maxCommitted: LSN?
        var searchFrom = offset
        while let found = try findValidRecord(context, after: searchFrom, above: lastValid, dirtyEnd: dirtyEnd) {
            first = first ?? found
            // Follow the run of consecutive records from there.
            var position = found.offset
            var lsn = found.lsn
            while true {
                let view = try context.window.view(from: position, minimum: context.layout.headerSize)
                var decoded = RecordFrame.decode(view, at: 0, expectedLSN: lsn, maxPayload: context.maxPayload, layout: context.layout)
                if case .needMore(let bytes) = decoded, position + bytes <= context.fileSize {
                    decoded = RecordFrame.decode(try context.window.view(from: position, minimum: bytes), at: 0, expectedLSN: lsn,
                                                 maxPayload: context.maxPayload, layout: context.layout)
                }
                guard case .record(_, _, let next) = decoded else { break }
                if let committed = RecordFrame.committed(in: try context.window.view(from: position, minimum: context.layout.headerSize),
                                                         at: 0, layout: context.layout) {
                    maxCommitted = max(maxCommitted ?? 0, committed)
                }
                position += next
                guard lsn < LSN.max else { break }
                lsn += 1
            }
            searchFrom = max(position, found.offset + 1)
        }
        return (first, maxCommitted)
    }

    /// Looks at every byte offset after `offset` (skipping zero runs) for a CRC-valid frame
    /// whose LSN is above `lastValid`: proof that the damage is not simply the end of the log.
    private static func findValidRecord(
        _ context: Context, after offset: Int, above lastValid: LSN, dirtyEnd: Int
    ) throws -> (offset: Int, lsn: LSN)? {
        let headerSize = context.layout.headerSize
        let window = context.window
        var candidate = offset + 1
        let limit = min(context.fileSize, dirtyEnd)
        while candidate + headerSize <= limit {
            let view = try window.view(from: candidate, minimum: min(headerSize, limit - candidate))
            // Skip ahead to within one frame header of the next non-zero byte.
            guard let firstNonZero = ZeroScan.firstNonZero(view) else {
                candidate += max(1, view.count - headerSize + 1)
                continue
            }
            if firstNonZero >= headerSize {
                candidate += firstNonZero - headerSize + 1
                continue
            }
            let lsn = view.loadLE(UInt64.self, at: 8)
            let length = Int(view.loadLE(UInt32.self, at: 4))
            let remainingFrames = UInt64((context.fileSize - candidate) / headerSize)
            if lsn > lastValid, lsn - lastValid <= remainingFrames + 1, length <= context.maxPayload,
               candidate + headerSize + length <= context.fileSize {
                let full = try window.view(from: candidate, minimum: headerSize + length)
                if case .record = RecordFrame.decode(full, at: 0, expectedLSN: lsn, maxPayload: context.maxPayload, layout: context.layout) {
                    return (candidate, lsn)
                }
            }
            candidate += 1
        }
        return nil
    }
}
