// Opening a data directory: find the segments, check that they form one unbroken log,
// scan the last one to find where the log ends, and cut a torn tail left by a crash (keeping
// a copy of the bytes it cuts). What counts as torn rests on facts the log records itself
// (docs/format.md, "Recovery rules"): the clean-shutdown marker, the durable LSN every v2
// record carries, and whether the damaged frame has a sector that was never written.
// Damage to data that may have been acknowledged is corruption: open fails naming file, byte
// offset and LSN, unless repair was asked for, which keeps a `.broken` copy of what it cuts.
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct RecoveredLog {
    var logID: LogID
    var generation: UInt32 = 0
    var segments: [SegmentInfo]
    /// LSN of the last record in the log (first LSN - 1 when empty).
    var lastLSN: LSN
    /// Where the next record goes in the last segment.
    var endOffset: Int
    /// How the last segment lays out its frames (v1 for a log written before version 2).
    var lastLayout: RecordFrame.Layout = .current
}

/// What the end of the last segment is: a write the crash interrupted, or damage.
enum TailVerdict: Equatable {
    /// Nothing there was ever acknowledged as durable: cut it, say why.
    case torn(String)
    /// Data that may have been acknowledged is damaged: refuse, say why.
    case corruption(String)

    /// Judges `damage` at the end of the log's last segment. `clean` says the log was stopped
    /// cleanly (the marker `CLEAN`): everything was synced, so nothing can be torn.
    static func judge(_ damage: SegmentScan.Damage, layout: RecordFrame.Layout, clean: Bool) -> TailVerdict {
        let reason = damage.reason
        if clean {
            return .corruption("\(reason); the log was stopped cleanly (every record was synced), so this is damage, not a torn write")
        }
        guard damage.tornSignature else {
            let follows = damage.validRecordFollows.map { "; a valid record (LSN \($0.lsn)) follows at byte \($0.offset)" } ?? ""
            return .corruption("\(reason): the record is complete (no unwritten sector in it), so it was damaged after it was written, not torn by a crash\(follows)")
        }
        guard let follows = damage.validRecordFollows else { return .torn(reason) }
        guard layout.hasCommitted else {
            // Version 1 records carry no durable LSN: valid data after damage may have been acknowledged.
            return .corruption("\(reason), but a valid record (LSN \(follows.lsn)) follows at byte \(follows.offset)")
        }
        let committed = damage.laterCommitted ?? 0
        if committed >= damage.expectedLSN {
            return .corruption("\(reason), but the record at LSN \(follows.lsn) (byte \(follows.offset)), written later, says everything through LSN \(committed) was durable")
        }
        return .torn("\(reason); the records after it (from LSN \(follows.lsn)) were written when only LSN \(committed) was durable, so none of these was ever acknowledged: unsynced pages reached the disk out of order")
    }
}

/// The marker a clean close leaves (`CLEAN` in the data directory): the log was synced whole,
/// through `lastLSN`. Open reads it and removes it durably before any write.
struct CleanMarker: Equatable {
    static let name = "CLEAN"
    let logID: LogID
    let lastLSN: LSN

    var encoded: [UInt8] { Array("wald clean shutdown\nlog_id \(logID)\nlast_lsn \(lastLSN)\n".utf8) }

    init(logID: LogID, lastLSN: LSN) {
        self.logID = logID
        self.lastLSN = lastLSN
    }

    /// Parses a marker; nil for anything else (then the stop is treated as a crash: the safe side).
    init?(_ bytes: [UInt8]) {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        guard lines.count == 3, lines[0] == "wald clean shutdown",
              lines[1].hasPrefix("log_id "), let id = LogID(String(lines[1].dropFirst(7))),
              lines[2].hasPrefix("last_lsn "), let last = LSN(lines[2].dropFirst(9)) else { return nil }
        logID = id
        lastLSN = last
    }

    /// The marker in `directory`, if any (unreadable counts as none).
    static func read(io: any FileIO, directory: String) -> CleanMarker? {
        let path = joinPath(directory, name)
        guard let handle = try? io.open(path, mode: .readOnly) else { return nil }
        defer { io.close(handle) }
        guard let bytes = try? io.read(handle, count: 256, at: 0, path: path) else { return nil }
        return CleanMarker(bytes)
    }

    /// Writes the marker durably: temp file, fdatasync, rename, directory fsync.
    func write(io: any FileIO, directory: String) throws {
        let temp = joinPath(directory, Self.name + ".tmp")
        try? io.remove(temp)
        let handle = try io.open(temp, mode: .createExclusive)
        defer { io.close(handle) }
        try io.write(handle, encoded, at: 0, path: temp)
        try io.syncData(handle, path: temp)
        try io.rename(temp, to: joinPath(directory, Self.name))
        try io.syncDirectory(directory)
    }

    /// Removes the marker durably (before the log takes writes: a later crash must not look clean).
    static func remove(io: any FileIO, directory: String) throws {
        let path = joinPath(directory, name)
        guard let handle = try? io.open(path, mode: .readOnly) else { return }
        io.close(handle)
        try io.remove(path)
        try io.syncDirectory(directory)
    }
}

enum Recovery {
    static func recover(_ options: WALOptions, logger: Logger) throws -> RecoveredLog {
        var recovered = try recoverSegments(options, logger: logger)
        // From here on a crash is a crash: the marker goes before the first write (and before
        // a suffix is cut, which a clean marker naming the old last LSN would call damage).
        try CleanMarker.remove(io: options.io, directory: options.directory)
        if let keep = options.keepThrough, keep < recovered.lastLSN {
            try cutSuffix(&recovered, after: keep, options: options, logger: logger)
        }
        return recovered
    }

    /// Cuts every record after `keep` (`WALOptions.keepThrough`), keeping `.broken` copies:
    /// 1. the segment holding the cut is copied (or, when the cut falls on its first record,
    /// it and every later segment are renamed aside and an empty segment of the same
    /// generation takes its place); 2. later segments are renamed aside; 3. the cut bytes are
    /// zeroed and fdatasynced. A crash between steps leaves records after `keep` that the next
    /// open with the same `keepThrough` cuts again.
    private static func cutSuffix(_ recovered: inout RecoveredLog, after keep: LSN, options: WALOptions, logger: Logger) throws {
        let io = options.io
        let dir = options.directory
        let names = recovered.segments
        let next = keep + 1  // keep < lastLSN < LSN.max
        guard let index = names.lastIndex(where: { $0.firstLSN <= next }) else {
            throw WALError.outOfRange(lsn: keep, first: names.first?.firstLSN ?? 1, last: recovered.lastLSN)
        }
        let path = joinPath(dir, names[index].name)
        let cutLSNs = "\(next)...\(recovered.lastLSN)"
        if names[index].firstLSN == next {
            let previousFirstLSN: LSN
            if index > 0 {
                previousFirstLSN = names[index - 1].firstLSN
            } else {
                let handle = try io.open(path, mode: .readOnly)
                defer { io.close(handle) }
                previousFirstLSN = try SegmentScanner.readHeader(io: io, handle: handle, path: path).previousFirstLSN
            }
            try quarantine(io: io, dir: dir, names: Array(names[index...]))
            recovered.segments.removeSubrange(index...)
            let created = try createSegment(io: io, options: options, logID: recovered.logID, generation: recovered.generation,
                                            firstLSN: next, previousFirstLSN: previousFirstLSN)
            io.close(created.handle)
            recovered.segments.append(created.info)
            recovered.endOffset = SegmentHeader.size
            recovered.lastLayout = .current
        } else {
            let whole = try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max))
            let kept = try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max), through: keep)
            guard kept.lastLSN == keep else {
                throw WALError.corruption(file: path, offset: kept.endOffset, lsn: kept.lastLSN + 1,
                                          reason: "the record after LSN \(kept.lastLSN) is not readable, so the log cannot be cut after LSN \(keep)")
            }
            try keepBrokenCopy(io: io, path: path)
            try quarantine(io: io, dir: dir, names: Array(names[(index + 1)...]))
            recovered.segments.removeSubrange((index + 1)...)
            try cut(io: io, path: path, at: kept.endOffset, through: whole.damage?.dirtyEnd ?? whole.endOffset)
            recovered.endOffset = kept.endOffset
            recovered.lastLayout = kept.header.layout
        }
        logger.warning("cut the records after LSN \(keep): this log is rejoining a leader that never received them", metadata: [
            "cut_lsns": "\(cutLSNs)", "segment": "\(names[index].name)",
            "copies": "the cut segment is kept as \(names[index].name).broken (or .broken.N); later segments were renamed so",
        ])
        recovered.lastLSN = keep
    }

    private static func recoverSegments(_ options: WALOptions, logger: Logger) throws -> RecoveredLog {
        let io = options.io
        let dir = options.directory
        let marker = CleanMarker.read(io: io, directory: dir)
        // A repair that cuts what may have been acknowledged starts a new generation.
        var cutDamage = false
        while true {
            var names = try segmentNames(io: io, options: options)
            if names.isEmpty {
                let logID = LogID.random()
                let segment = try createSegment(io: io, options: options, logID: logID, generation: 0, firstLSN: 1, previousFirstLSN: 0)
                io.close(segment.handle)
                logger.notice("created a new log: the data directory held no segment", metadata: [
                    "log_id": "\(logID)", "directory": "\(dir)",
                ])
                return RecoveredLog(logID: logID, segments: [segment.info], lastLSN: 0, endOffset: SegmentHeader.size)
            }
            // Headers: identity, names, generations and the chain of previous-segment links.
            let headers = try checkHeaders(io: io, directory: dir, names: names, stopAtFirst: true)
            if let (index, error) = headers.problems.first {
                guard options.repair else { throw error }
                logger.warning("repair: setting aside damaged segments", metadata: ["error": "\(error)"])
                try quarantine(io: io, dir: dir, names: Array(names[index...]))
                cutDamage = true
                continue
            }
            let logID = headers.logID!
            // Repair checks every segment; a plain open only the last one.
            let firstToScan = options.repair ? 0 : names.count - 1
            for index in firstToScan..<names.count {
                let path = joinPath(dir, names[index].name)
                let scan = try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max))
                let isLast = index == names.count - 1
                if !isLast {
                    let expectedLast = names[index + 1].firstLSN - 1
                    if scan.damage == nil && scan.lastLSN == expectedLast { continue }
                    if let damage = scan.damage, scan.lastLSN == expectedLast,
                       isSlack(damage, segmentIndex: index, names: names, headers: headers.headers) {
                        // Nothing to cut: copy the file, zero the damaged bytes, keep going.
                        logger.warning("repair: zeroing damaged bytes after the last record of a sealed segment; no record is lost", metadata: [
                            "file": "\(path)", "offset": "\(damage.offset)", "bytes": "\(damage.dirtyEnd - damage.offset)",
                            "last_lsn": "\(scan.lastLSN)", "reason": "\(damage.reason)",
                        ])
                        try keepBrokenCopy(io: io, path: path)
                        try cut(io: io, path: path, at: damage.offset, through: damage.dirtyEnd)
                        continue
                    }
                    // Repair only: cut here and set the rest aside.
                    logger.warning("repair: cutting the log", metadata: [
                        "file": "\(path)", "last_lsn": "\(scan.lastLSN)",
                        "reason": "\(scan.damage?.reason ?? "segment ends before the next one starts")",
                    ])
                    // In this order, so that a crash at any step leaves the damage (repair again),
                    // or the new generation: never a log of the old one that just ends early.
                    // 1. a copy; 2. the new generation's segment at the cut (later segments of the
                    // old one now break the chain: open refuses, repair sets them aside); 3. the
                    // later segments set aside; 4. the damaged bytes zeroed (left behind, they are
                    // before a newer generation's segment: slack to a later repair). When the new
                    // segment would take a later one's name, that one is set aside first.
                    try keepBrokenCopy(io: io, path: path)
                    let later = Array(names[(index + 1)...])
                    let collides = later.contains { $0.firstLSN == scan.lastLSN + 1 }
                    if collides { try quarantine(io: io, dir: dir, names: later) }
                    names.removeSubrange((index + 1)...)
                    var recovered = RecoveredLog(logID: logID, generation: headers.generation, segments: names,
                                                 lastLSN: scan.lastLSN, endOffset: scan.endOffset, lastLayout: scan.header.layout)
                    let cutNeeded = try startGeneration(&recovered, io: io, options: options, logger: logger)
                    if !collides { try quarantine(io: io, dir: dir, names: later) }
                    if cutNeeded {
                        try cut(io: io, path: path, at: scan.endOffset, through: scan.damage?.dirtyEnd ?? scan.fileSize)
                    }
                    return recovered
                }
                let clean = marker.map { $0.logID == logID } ?? false
                var recovered = RecoveredLog(logID: logID, generation: headers.generation, segments: names, lastLSN: scan.lastLSN,
                                             endOffset: scan.endOffset, lastLayout: scan.header.layout)
                if let damage = scan.damage {
                    switch TailVerdict.judge(damage, layout: scan.header.layout, clean: clean) {
                    case .corruption(let reason):
                        let error = WALError.corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN, reason: reason)
                        guard options.repair else { throw error }
                        logger.warning("repair: cutting the log", metadata: ["error": "\(error)"])
                        try keepBrokenCopy(io: io, path: path)
                        // The new generation first (as above); the damaged bytes go after.
                        if try startGeneration(&recovered, io: io, options: options, logger: logger) {
                            try cut(io: io, path: path, at: damage.offset, through: damage.dirtyEnd)
                        }
                        return recovered
                    case .torn(let reason):
                        let copy = try keepCutBytes(io: io, path: path, from: damage.offset, to: damage.dirtyEnd)
                        logger.warning("cutting a torn tail left by a crash: nothing in it was acknowledged as durable", metadata: [
                            "file": "\(path)", "offset": "\(damage.offset)", "first_cut_lsn": "\(damage.expectedLSN)",
                            "last_lsn": "\(scan.lastLSN)", "bytes": "\(damage.dirtyEnd - damage.offset)",
                            "copy": "\(copy ?? "none")", "reason": "\(reason)",
                        ])
                        try cut(io: io, path: path, at: damage.offset, through: damage.dirtyEnd)
                    }
                } else if clean, let marker, marker.lastLSN != scan.lastLSN {
                    guard options.repair else {
                        throw WALError.corruption(
                            file: path, offset: scan.endOffset, lsn: scan.lastLSN + 1,
                            reason: "the log was stopped cleanly at LSN \(marker.lastLSN) but ends at LSN \(scan.lastLSN)")
                    }
                    cutDamage = cutDamage || marker.lastLSN > scan.lastLSN
                }
                if cutDamage { _ = try startGeneration(&recovered, io: io, options: options, logger: logger) }
                return recovered
            }
            preconditionFailure("the last segment is always scanned")
        }
    }

    /// After a repair cut records that may have been acknowledged, the log goes on in a new
    /// segment of the next generation: the LSNs it hands out again are told apart from the cut
    /// ones (INFO shows the generation; a follower of the old generation refuses to go on). An
    /// emptied last segment is replaced (it was copied to `.broken` first).
    /// Returns false when it replaced the last segment (nothing of it is left to cut).
    @discardableResult
    private static func startGeneration(_ recovered: inout RecoveredLog, io: any FileIO, options: WALOptions, logger: Logger) throws -> Bool {
        let generation = recovered.generation &+ 1
        var last = recovered.segments.removeLast()
        var previousFirstLSN = last.firstLSN
        let replaces = recovered.lastLSN < last.firstLSN
        if replaces {
            // No record is left in it: the new segment takes its name (rename replaces it).
            let path = joinPath(options.directory, last.name)
            let handle = try io.open(path, mode: .readOnly)
            defer { io.close(handle) }
            previousFirstLSN = try SegmentScanner.readHeader(io: io, handle: handle, path: path).previousFirstLSN
        } else {
            recovered.segments.append(last)
        }
        // Zero-filled like every segment (when `preallocate` is on): torn-write detection
        // reads a zero tail as never written.
        let created = try createSegment(io: io, options: options, logID: recovered.logID, generation: generation,
                                        firstLSN: recovered.lastLSN + 1, previousFirstLSN: previousFirstLSN)
        io.close(created.handle)
        last = created.info
        recovered.segments.append(last)
        recovered.generation = generation
        recovered.endOffset = SegmentHeader.size
        recovered.lastLayout = .current
        logger.warning("repair: the log goes on in a new generation; LSNs from here on may repeat ones that were cut", metadata: [
            "generation": "\(generation)", "next_lsn": "\(recovered.lastLSN + 1)", "segment": "\(last.name)",
        ])
        return !replaces
    }

    /// What the headers of a log's segments say, checked as open checks them (docs/format.md,
    /// "Recovery rules" 3): every `problems` entry is corruption at that segment. With
    /// `stopAtFirst` the check ends at the first problem (open); verify wants them all.
    struct HeaderCheck {
        var logID: LogID?
        /// The last segment's generation (the log's).
        var generation: UInt32 = 0
        var headers: [SegmentHeader?] = []
        var problems: [(index: Int, error: WALError)] = []
    }

    static func checkHeaders(io: any FileIO, directory: String, names: [SegmentInfo], stopAtFirst: Bool) throws -> HeaderCheck {
        var check = HeaderCheck()
        for (index, segment) in names.enumerated() {
            let path = joinPath(directory, segment.name)
            let header: SegmentHeader
            do {
                let handle = try io.open(path, mode: .readOnly)
                defer { io.close(handle) }
                header = try SegmentScanner.readHeader(io: io, handle: handle, path: path)
            } catch WALError.corruption(let file, let offset, _, let reason) {
                check.headers.append(nil)
                check.problems.append((index, .corruption(file: file, offset: offset, lsn: segment.firstLSN, reason: reason)))
                if stopAtFirst { return check }
                continue
            }
            check.headers.append(header)
            let previous = index > 0 ? check.headers[index - 1] : nil
            let problem: String? =
                if header.firstLSN != segment.firstLSN {
                    "header says first LSN \(header.firstLSN) but the file name says \(segment.firstLSN)"
                } else if let logID = check.logID, header.logID != logID {
                    "segment belongs to log \(header.logID), not \(logID)"
                } else if index > 0 && header.previousFirstLSN != names[index - 1].firstLSN {
                    "missing segment: this segment follows the one starting at LSN \(header.previousFirstLSN), "
                        + "but the previous file starts at LSN \(names[index - 1].firstLSN)"
                } else if let previous, header.generation < previous.generation {
                    "segment is of generation \(header.generation), older than the segment before it (\(previous.generation))"
                } else { nil }
            if let problem {
                check.problems.append((index, .corruption(file: path, offset: 0, lsn: segment.firstLSN, reason: problem)))
                if stopAtFirst { return check }
            }
            check.logID = check.logID ?? header.logID
            check.generation = max(check.generation, header.generation)
        }
        return check
    }

    /// Files that are part of a wald data directory without being segments: an empty directory
    /// may hold them and still get a new log.
    static func isLogBookkeeping(_ name: String, prefix: String) -> Bool {
        // lost+found: a data directory that is a file system's root (a dedicated volume).
        // ha-term: the daemon's automatic failover records the term its log belongs to there.
        name == "LOCK" || name == "lost+found" || name == CleanMarker.name || name == CleanMarker.name + ".tmp"
            || name == "ha-term" || name == "ha-term.tmp"
            || (name.hasPrefix(prefix) && name.hasSuffix(".tmp"))
    }

    /// A new log is created only in an empty directory: one holding other files but no segment
    /// (a mistyped `--data-dir` pointing at a home directory, a log whose segments were moved
    /// away leaving `.broken` copies) is refused, naming what is there. Checked before the lock
    /// file is created, so a refused directory is left exactly as it was.
    static func requireLogOrEmptyDirectory(io: any FileIO, options: WALOptions) throws {
        let names = try io.list(options.directory)
        guard !names.contains(where: { SegmentName.parse($0, prefix: options.segmentPrefix) != nil }) else { return }
        let others = names.filter { !isLogBookkeeping($0, prefix: options.segmentPrefix) }.sorted()
        guard others.isEmpty else {
            let shown = others.prefix(3).joined(separator: ", ") + (others.count > 3 ? ", …" : "")
            throw WALError.notALog(directory: options.directory, found: "\(others.count) other files (\(shown))")
        }
    }

    /// Segment files of this log's prefix in LSN order. Leftover temp files are removed (unless
    /// `removingTemporaries` is false: `verifyLog` only reads). Anything named like one that is
    /// no regular file (a directory, a FIFO) stops the open, named.
    static func segmentNames(io: any FileIO, options: WALOptions, removingTemporaries: Bool = true) throws -> [SegmentInfo] {
        var segments: [SegmentInfo] = []
        for name in try io.list(options.directory) {
            let isTemp = name.hasPrefix(options.segmentPrefix) && name.hasSuffix(".tmp")
            if isTemp || SegmentName.parse(name, prefix: options.segmentPrefix) != nil {
                let path = joinPath(options.directory, name)
                let type = try io.fileType(path)
                guard type == .regular else { throw WALError.notASegmentFile(path: path, type: type) }
            }
            if isTemp {
                if removingTemporaries { try io.remove(joinPath(options.directory, name)) }
            } else if let lsn = SegmentName.parse(name, prefix: options.segmentPrefix) {
                segments.append(SegmentInfo(firstLSN: lsn, name: name))
            }
        }
        return segments.sorted { $0.firstLSN < $1.firstLSN }
    }

    /// Creates a segment durably: temp file, header, fdatasync, rename, directory fsync.
    static func createSegment(
        io: any FileIO, options: WALOptions, logID: LogID, generation: UInt32, firstLSN: LSN, previousFirstLSN: LSN
    ) throws -> (info: SegmentInfo, handle: IOHandle) {
        let temp = joinPath(options.directory, options.segmentPrefix + "new.tmp")
        try? io.remove(temp)
        let handle = try io.open(temp, mode: .createExclusive)
        do {
            if options.preallocate { try zeroFill(io: io, handle: handle, path: temp, from: 0, to: options.maxSegmentBytes) }
            let name = try install(io: io, options: options, handle: handle, tempPath: temp, logID: logID,
                                   generation: generation, firstLSN: firstLSN, previousFirstLSN: previousFirstLSN)
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
        generation: UInt32, firstLSN: LSN, previousFirstLSN: LSN
    ) throws -> String {
        let header = SegmentHeader(logID: logID, firstLSN: firstLSN, previousFirstLSN: previousFirstLSN,
                                   createdMillis: currentMillis(), generation: generation)
        try io.write(handle, header.encoded(), at: 0, path: tempPath)
        try io.syncData(handle, path: tempPath)
        let name = SegmentName.make(prefix: options.segmentPrefix, firstLSN: firstLSN)
        try io.rename(tempPath, to: joinPath(options.directory, name))
        try io.syncDirectory(options.directory)
        return name
    }

    /// Copies the bytes [start, end) of `path` to `<path>.torn.<start>` durably before a cut, so
    /// what was cut can still be looked at. Returns the copy's path (nil when there is nothing).
    static func keepCutBytes(io: any FileIO, path: String, from start: Int, to end: Int) throws -> String? {
        guard end > start else { return nil }
        let target = path + ".torn.\(start)"
        try? io.remove(target)
        let source = try io.open(path, mode: .readOnly)
        defer { io.close(source) }
        let destination = try io.open(target, mode: .createExclusive)
        defer { io.close(destination) }
        var offset = start
        while offset < end {
            let chunk = try io.read(source, count: min(1 << 20, end - offset), at: offset, path: path)
            if chunk.isEmpty { break }
            try io.write(destination, chunk, at: offset - start, path: target)
            offset += chunk.count
        }
        try io.syncData(destination, path: target)
        try io.syncDirectory(parentDirectory(of: path))
        return target
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
        let target = freeBrokenName(io: io, path: path)
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

    /// Damage in a sealed segment (not the last) after its last record: the record it would
    /// be is the next segment's first, and either no valid record follows it in this file, or
    /// the next segment is of a newer generation (what follows was cut by a repair that a crash
    /// interrupted before it zeroed the bytes). No reader reads those bytes; a repair zeroes
    /// them and keeps every record and later segment.
    static func isSlack(_ damage: SegmentScan.Damage, segmentIndex index: Int, names: [SegmentInfo],
                        headers: [SegmentHeader?]) -> Bool {
        guard index < names.count - 1, damage.expectedLSN == names[index + 1].firstLSN else { return false }
        if damage.validRecordFollows == nil { return true }
        guard index + 1 < headers.count, let this = headers[index], let next = headers[index + 1] else { return false }
        return next.generation > this.generation
    }

    /// `<path>.broken`, or `.broken.N` with the first N no file has: an earlier repair's copy
    /// may be the only one of the records it cut, and rename(2) would replace it in silence.
    static func freeBrokenName(io: any FileIO, path: String) -> String {
        var target = path + ".broken"
        var suffix = 1
        while (try? io.open(target, mode: .readOnly)).map({ io.close($0); return true }) ?? false {
            target = path + ".broken.\(suffix)"
            suffix += 1
        }
        return target
    }

    /// Renames segments to `<name>.broken` (or `.broken.N`, never over an earlier copy) so they
    /// are no longer part of the log.
    static func quarantine(io: any FileIO, dir: String, names: [SegmentInfo]) throws {
        for segment in names {
            let path = joinPath(dir, segment.name)
            try io.rename(path, to: freeBrokenName(io: io, path: path))
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
