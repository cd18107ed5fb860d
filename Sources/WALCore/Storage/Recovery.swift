// Opening a data directory: find the segments, check that they form one unbroken log,
// scan the last one to find where the log ends, and cut a torn tail left by a crash.
// Damage anywhere else is corruption: open fails naming file, byte offset and LSN, unless
// repair was asked for, which keeps a `.broken` copy of what it cuts.
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct RecoveredLog {
    var logID: LogID
    var segments: [SegmentInfo]
    /// LSN of the last record in the log (first LSN - 1 when empty).
    var lastLSN: LSN
    /// Where the next record goes in the last segment.
    var endOffset: Int
}

enum Recovery {
    static func recover(_ options: WALOptions, logger: Logger) throws -> RecoveredLog {
        let io = options.io
        let dir = options.directory
        while true {
            var names = try segmentNames(io: io, options: options)
            if names.isEmpty {
                let logID = LogID.random()
                let segment = try createSegment(io: io, options: options, logID: logID, firstLSN: 1, previousFirstLSN: 0)
                io.close(segment.handle)
                logger.info("created a new log", metadata: ["log_id": "\(logID)", "directory": "\(dir)"])
                return RecoveredLog(logID: logID, segments: [segment.info], lastLSN: 0, endOffset: SegmentHeader.size)
            }
            // Headers: identity, names and the chain of previous-segment links.
            var logID: LogID?
            var damagedAt: (index: Int, error: WALError)?
            for (index, segment) in names.enumerated() {
                let path = joinPath(dir, segment.name)
                let header: SegmentHeader
                do {
                    let handle = try io.open(path, mode: .readOnly)
                    defer { io.close(handle) }
                    header = try SegmentScanner.readHeader(io: io, handle: handle, path: path)
                } catch WALError.corruption(let file, let offset, _, let reason) {
                    damagedAt = (index, .corruption(file: file, offset: offset, lsn: segment.firstLSN, reason: reason))
                    break
                }
                let problem: String? =
                    if header.firstLSN != segment.firstLSN {
                        "header says first LSN \(header.firstLSN) but the file name says \(segment.firstLSN)"
                    } else if let logID, header.logID != logID {
                        "segment belongs to log \(header.logID), not \(logID)"
                    } else if index > 0 && header.previousFirstLSN != names[index - 1].firstLSN {
                        "missing segment: this segment follows the one starting at LSN \(header.previousFirstLSN), "
                            + "but the previous file starts at LSN \(names[index - 1].firstLSN)"
                    } else { nil }
                if let problem {
                    damagedAt = (index, .corruption(file: path, offset: 0, lsn: segment.firstLSN, reason: problem))
                    break
                }
                logID = logID ?? header.logID
            }
            if let (index, error) = damagedAt {
                guard options.repair else { throw error }
                logger.warning("repair: setting aside damaged segments", metadata: ["error": "\(error)"])
                try quarantine(io: io, dir: dir, names: Array(names[index...]))
                continue
            }
            // Repair checks every segment; a plain open only the last one.
            let firstToScan = options.repair ? 0 : names.count - 1
            var result: RecoveredLog?
            for index in firstToScan..<names.count {
                let path = joinPath(dir, names[index].name)
                let scan = try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max))
                let isLast = index == names.count - 1
                if !isLast {
                    let expectedLast = names[index + 1].firstLSN - 1
                    if scan.damage == nil && scan.lastLSN == expectedLast { continue }
                    // Repair only: cut here and set the rest aside.
                    logger.warning("repair: cutting the log", metadata: [
                        "file": "\(path)", "last_lsn": "\(scan.lastLSN)",
                        "reason": "\(scan.damage?.reason ?? "segment ends before the next one starts")",
                    ])
                    try keepBrokenCopy(io: io, path: path)
                    try cut(io: io, path: path, at: scan.endOffset, through: scan.damage?.dirtyEnd ?? scan.fileSize)
                    try quarantine(io: io, dir: dir, names: Array(names[(index + 1)...]))
                    names.removeSubrange((index + 1)...)
                    result = RecoveredLog(logID: logID!, segments: names, lastLSN: scan.lastLSN, endOffset: scan.endOffset)
                    break
                }
                if let damage = scan.damage {
                    if let follows = damage.validRecordFollows {
                        let error = WALError.corruption(
                            file: path, offset: damage.offset, lsn: damage.expectedLSN,
                            reason: "\(damage.reason), but a valid record (LSN \(follows.lsn)) follows at byte \(follows.offset)")
                        guard options.repair else { throw error }
                        logger.warning("repair: cutting the log", metadata: ["error": "\(error)"])
                        try keepBrokenCopy(io: io, path: path)
                    } else {
                        logger.notice("cutting torn tail after crash", metadata: [
                            "file": "\(path)", "offset": "\(damage.offset)", "last_lsn": "\(scan.lastLSN)",
                            "reason": "\(damage.reason)",
                        ])
                    }
                    try cut(io: io, path: path, at: damage.offset, through: damage.dirtyEnd)
                }
                result = RecoveredLog(logID: logID!, segments: names, lastLSN: scan.lastLSN, endOffset: scan.endOffset)
            }
            return result!
        }
    }

    /// Segment files of this log's prefix in LSN order. Leftover temp files are removed. Anything
    /// named like one that is no regular file (a directory, a FIFO) stops the open, named.
    static func segmentNames(io: any FileIO, options: WALOptions) throws -> [SegmentInfo] {
        var segments: [SegmentInfo] = []
        for name in try io.list(options.directory) {
            let isTemp = name.hasPrefix(options.segmentPrefix) && name.hasSuffix(".tmp")
            if isTemp || SegmentName.parse(name, prefix: options.segmentPrefix) != nil {
                let path = joinPath(options.directory, name)
                let type = try io.fileType(path)
                guard type == .regular else { throw WALError.notASegmentFile(path: path, type: type) }
            }
            if isTemp {
                try io.remove(joinPath(options.directory, name))
            } else if let lsn = SegmentName.parse(name, prefix: options.segmentPrefix) {
                segments.append(SegmentInfo(firstLSN: lsn, name: name))
            }
        }
        return segments.sorted { $0.firstLSN < $1.firstLSN }
    }

    /// Creates a segment durably: temp file, header, fdatasync, rename, directory fsync.
    static func createSegment(
        io: any FileIO, options: WALOptions, logID: LogID, firstLSN: LSN, previousFirstLSN: LSN
    ) throws -> (info: SegmentInfo, handle: IOHandle) {
        let temp = joinPath(options.directory, options.segmentPrefix + "new.tmp")
        try? io.remove(temp)
        let handle = try io.open(temp, mode: .createExclusive)
        do {
            if options.preallocate { try zeroFill(io: io, handle: handle, path: temp, from: 0, to: options.maxSegmentBytes) }
            let name = try install(io: io, options: options, handle: handle, tempPath: temp, logID: logID,
                                   firstLSN: firstLSN, previousFirstLSN: previousFirstLSN)
            return (SegmentInfo(firstLSN: firstLSN, name: name), handle)
        } catch {
            io.close(handle)
            try? io.remove(temp)
            throw error
        }
    }

    /// Turns a prepared temp file into the segment starting at `firstLSN`.
    static func install(
        io: any FileIO, options: WALOptions, handle: IOHandle, tempPath: String, logID: LogID,
        firstLSN: LSN, previousFirstLSN: LSN
    ) throws -> String {
        let header = SegmentHeader(logID: logID, firstLSN: firstLSN, previousFirstLSN: previousFirstLSN,
                                   createdMillis: currentMillis())
        try io.write(handle, header.encoded(), at: 0, path: tempPath)
        try io.syncData(handle, path: tempPath)
        let name = SegmentName.make(prefix: options.segmentPrefix, firstLSN: firstLSN)
        try io.rename(tempPath, to: joinPath(options.directory, name))
        try io.syncDirectory(options.directory)
        return name
    }

    /// Zeroes [offset, end) so nothing of a torn record is left to be misread later, then fdatasyncs.
    static func cut(io: any FileIO, path: String, at offset: Int, through end: Int) throws {
        guard end > offset else { return }
        let handle = try io.open(path, mode: .readWrite)
        defer { io.close(handle) }
        try zeroFill(io: io, handle: handle, path: path, from: offset, to: end)
        try io.syncData(handle, path: path)
    }

    /// Writes zeros over [start, end) in 1 MiB pwrites.
    static func zeroFill(io: any FileIO, handle: IOHandle, path: String, from start: Int, to end: Int) throws {
        let zeros = [UInt8](repeating: 0, count: min(max(end - start, 0), 1 << 20))
        var position = start
        while position < end {
            let n = min(zeros.count, end - position)
            try zeros.withUnsafeBytes { try io.write(handle, UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: position, path: path) }
            position += n
        }
    }

    /// Copies `path` to `path.broken` (or `.broken.N` if taken) durably.
    static func keepBrokenCopy(io: any FileIO, path: String) throws {
        let source = try io.open(path, mode: .readOnly)
        defer { io.close(source) }
        var target = path + ".broken"
        var suffix = 1
        while (try? io.open(target, mode: .readOnly)).map({ io.close($0); return true }) ?? false {
            target = path + ".broken.\(suffix)"
            suffix += 1
        }
        let destination = try io.open(target, mode: .createExclusive)
        defer { io.close(destination) }
        let size = try io.size(source, path: path)
        var offset = 0
        while offset < size {
            let chunk = try io.read(source, count: min(1 << 20, size - offset), at: offset, path: path)
            if chunk.isEmpty { break }
            try io.write(destination, chunk, at: offset, path: target)
            offset += chunk.count
        }
        try io.syncData(destination, path: target)
        try io.syncDirectory(parentDirectory(of: path))
    }

    /// Renames segments to `<name>.broken` so they are no longer part of the log.
    static func quarantine(io: any FileIO, dir: String, names: [SegmentInfo]) throws {
        for segment in names {
            let path = joinPath(dir, segment.name)
            try io.rename(path, to: path + ".broken")
        }
        try io.syncDirectory(dir)
    }
}

func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

func currentMillis() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec / 1_000_000)
}
