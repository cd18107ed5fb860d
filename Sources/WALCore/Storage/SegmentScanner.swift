// Walks every record frame of one segment file: recovery scans the last segment with it,
// `walctl verify` and repair scan them all. Tells a torn tail (garbage, then nothing valid)
// from damage in the middle (garbage followed by a valid later record).

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
        /// A CRC-valid record with a later LSN lies after the damage: this is not a torn tail.
        let validRecordFollows: (offset: Int, lsn: LSN)?
        /// Offset just past the last non-zero byte of the file (what a cut must clear).
        let dirtyEnd: Int
    }
}

enum SegmentScanner {
    /// Reads the header of the segment at `path`.
    static func readHeader(io: any FileIO, handle: IOHandle, path: String) throws -> SegmentHeader {
        let bytes = try io.read(handle, count: SegmentHeader.size, at: 0, path: path)
        do {
            return try SegmentHeader.decode(bytes)
        } catch {
            throw WALError.corruption(file: path, offset: 0, lsn: 0, reason: error.description)
        }
    }

    /// Scans the whole segment at `path`.
    static func scan(io: any FileIO, path: String, maxPayload: Int) throws -> SegmentScan {
        let handle = try io.open(path, mode: .readOnly)
        defer { io.close(handle) }
        let header = try readHeader(io: io, handle: handle, path: path)
        var scan = SegmentScan(header: header, lastLSN: header.firstLSN - 1)
        scan.fileSize = try io.size(handle, path: path)
        let window = FileWindow(io: io, handle: handle, path: path)
        var offset = SegmentHeader.size
        var expected = header.firstLSN
        while true {
            var view = try window.view(from: offset, minimum: RecordFrame.headerSize)
            var decoded = RecordFrame.decode(view, at: 0, expectedLSN: expected, maxPayload: maxPayload)
            if case .needMore(let bytes) = decoded, view.count >= RecordFrame.headerSize {
                // Never more than the file holds: a damaged or forged length field (up to
                // 4 GiB) must not become an allocation; the frame is then "cut off" below.
                view = try window.view(from: offset, minimum: min(bytes, max(RecordFrame.headerSize, scan.fileSize - offset)))
                decoded = RecordFrame.decode(view, at: 0, expectedLSN: expected, maxPayload: maxPayload)
            }
            switch decoded {
            case .record(_, _, let next):
                scan.recordCount += 1
                scan.lastLSN = expected
                expected += 1
                offset += next
                scan.endOffset = offset
                continue
            case .invalid(.zeroes):
                // Zero header: the end, unless something non-zero follows.
                let dirtyEnd = try lastNonZero(window, from: offset, fileSize: scan.fileSize)
                if dirtyEnd > offset {
                    scan.damage = try damage(window, at: offset, expected: expected, reason: "zero-filled frame header followed by non-zero bytes", fileSize: scan.fileSize, maxPayload: maxPayload, dirtyEnd: dirtyEnd)
                }
            case .needMore:
                if view.count > 0 {
                    let dirtyEnd = try lastNonZero(window, from: offset, fileSize: scan.fileSize)
                    if dirtyEnd > offset {
                        scan.damage = try damage(window, at: offset, expected: expected, reason: "record frame cut off by the end of the file", fileSize: scan.fileSize, maxPayload: maxPayload, dirtyEnd: dirtyEnd)
                    }
                }
            case .invalid(let reason):
                let dirtyEnd = try lastNonZero(window, from: offset, fileSize: scan.fileSize)
                scan.damage = try damage(window, at: offset, expected: expected, reason: reason.description, fileSize: scan.fileSize, maxPayload: maxPayload, dirtyEnd: dirtyEnd)
            }
            return scan
        }
    }

    private static func damage(
        _ window: FileWindow, at offset: Int, expected: LSN, reason: String, fileSize: Int, maxPayload: Int, dirtyEnd: Int
    ) throws -> SegmentScan.Damage {
        let follows = try findValidRecord(window, after: offset, above: expected &- 1, fileSize: fileSize, maxPayload: maxPayload, dirtyEnd: dirtyEnd)
        return .init(offset: offset, expectedLSN: expected, reason: reason, validRecordFollows: follows, dirtyEnd: max(dirtyEnd, offset))
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

    /// Looks at every byte offset after `offset` (skipping zero runs) for a CRC-valid frame
    /// whose LSN is above `lastValid`: proof that the damage is not a torn tail.
    static func findValidRecord(
        _ window: FileWindow, after offset: Int, above lastValid: LSN, fileSize: Int, maxPayload: Int, dirtyEnd: Int
    ) throws -> (offset: Int, lsn: LSN)? {
        var candidate = offset + 1
        let limit = min(fileSize, dirtyEnd)
        while candidate + RecordFrame.headerSize <= limit {
            let view = try window.view(from: candidate, minimum: min(RecordFrame.headerSize, limit - candidate))
            // Skip ahead to within one frame header of the next non-zero byte.
            guard let firstNonZero = ZeroScan.firstNonZero(view) else {
                candidate += max(1, view.count - RecordFrame.headerSize + 1)
                continue
            }
            if firstNonZero >= RecordFrame.headerSize {
                candidate += firstNonZero - RecordFrame.headerSize + 1
                continue
            }
            let lsn = view.loadLE(UInt64.self, at: 8)
            let length = Int(view.loadLE(UInt32.self, at: 4))
            let remainingFrames = UInt64((fileSize - candidate) / RecordFrame.headerSize)
            if lsn > lastValid, lsn - lastValid <= remainingFrames + 1, length <= maxPayload,
               candidate + RecordFrame.headerSize + length <= fileSize {
                let full = try window.view(from: candidate, minimum: RecordFrame.headerSize + length)
                if case .record = RecordFrame.decode(full, at: 0, expectedLSN: lsn, maxPayload: maxPayload) {
                    return (candidate, lsn)
                }
            }
            candidate += 1
        }
        return nil
    }
}
