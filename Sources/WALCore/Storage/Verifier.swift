// Offline looks at a whole data directory that change nothing in it (no lock, no temp-file
// removal, no cut): `verifyLog` checks every header, record CRC and LSN of every segment to its
// end and reports every damage, not only the first; `RepairPlan` says what `walctl repair`
// would cut; `OfflineLog` reads the records (`walctl dump`).

/// What `verifyLog` found.
public struct VerifyReport: Sendable {
    public struct Segment: Sendable {
        public let name: String
        public let firstLSN: LSN
        /// The last valid LSN found in the segment (firstLSN − 1 when none).
        public let lastLSN: LSN
        /// Valid records found (after damage too: the scan goes on at the next valid frame).
        public let records: Int
        /// The file's size: what it takes on disk, preallocated space included.
        public let bytes: Int
        /// The header could not be read: nothing in the segment was checked.
        public let unreadable: Bool
    }

    public var logID: LogID?
    public var generation: UInt32 = 0
    public var segments: [Segment] = []
    /// Every damage, in log order, as `WAL.open` (or a reader) would report it.
    public var damages: [WALError] = []
    /// A torn tail at the end of the last segment: a normal crash artifact that open cuts.
    public var tornTail: (file: String, offset: Int, lsn: LSN)?
    /// What cutting the log at its first damage (or torn tail) removes; nil for an intact log.
    public var cut: RepairPlan?

    /// The first damage.
    public var damage: WALError? { damages.first }
    public var firstLSN: LSN? { segments.first?.firstLSN }
    public var lastLSN: LSN? { segments.last?.lastLSN }
    public var records: Int { segments.reduce(0) { $0 + $1.records } }
    public var bytes: Int { segments.reduce(0) { $0 + $1.bytes } }
}

/// What a repair does to a log: cut it at its first damage (or torn tail), keeping `.broken`
/// copies (docs/format.md, "Recovery rules" 5).
public struct RepairPlan: Sendable {
    /// Where the cut is: the file, byte offset and first LSN that is no longer in the log.
    public let file: String
    public let offset: Int
    public let lsn: LSN
    public let reason: String
    /// Only a torn tail: nothing in it was acknowledged; open cuts it by itself.
    public let tornTailOnly: Bool
    /// Valid records after the cut that go (beside the damaged one at `lsn`), and the highest
    /// LSN among them. `countIsLowerBound`: a segment set aside could not be read.
    public let validRecordsDiscarded: Int
    public let lastDiscardedLSN: LSN?
    public let countIsLowerBound: Bool
    /// Non-zero bytes cut from `file`.
    public let bytesCut: Int
    /// Later segments renamed to `<name>.broken`, and their bytes.
    public let segmentsSetAside: [String]
    public let bytesSetAside: Int
    /// The highest LSN removed that looks acknowledged as durable: it is in a segment that was
    /// sealed (synced before the next one began), the log was stopped cleanly, or a later
    /// record's `committed` LSN covers it. nil when nothing removed looks acknowledged.
    public let acknowledgedThrough: LSN?

    /// Damage only after the last record of a sealed segment (every LSN of it is intact, and
    /// the next segment starts where it should): repair zeroes those bytes and cuts nothing.
    public let slackOnly: Bool
    /// Such damage in earlier segments, zeroed on the way to the cut: file, offset, bytes.
    public let slackZeroed: [(file: String, offset: Int, bytes: Int)]
    /// The first segment's header is damaged: every segment is set aside, and the directory
    /// then gets a new, empty log (a new log id, LSN 1, generation 0), as open makes one.
    public var emptiesLog = false

    /// The cut removes records a client may have been told are durable.
    public var discardsAcknowledged: Bool { acknowledgedThrough != nil }
    /// LSNs from `lsn` on will be handed out again: a repair starts a new generation.
    public var startsNewGeneration: Bool { !tornTailOnly && !slackOnly }
}

/// Checks every segment of the log in `directory` without modifying anything (no lock is taken).
/// Damage is reported in the result; it throws `WALError.io` when the directory cannot be
/// listed and `WALError.notASegmentFile` for a directory or FIFO named like a segment.
public func verifyLog(directory: String, segmentPrefix: String = "wal-", io: any FileIO = PosixFileIO()) throws -> VerifyReport {
    var options = WALOptions(directory: directory)
    options.segmentPrefix = segmentPrefix
    var report = VerifyReport()
    let marker = CleanMarker.read(io: io, directory: directory)
    // The same listing as open's: a directory or FIFO named like a segment is refused by name
    // (reading a FIFO would block for ever).
    let names = try wrapIO { try Recovery.segmentNames(io: io, options: options, removingTemporaries: false) }
    let headers = try wrapIO { try Recovery.checkHeaders(io: io, directory: directory, names: names, stopAtFirst: false) }
    report.logID = headers.logID
    report.generation = headers.generation
    var sites: [DamageSite] = []
    for (index, segment) in names.enumerated() {
        let path = joinPath(directory, segment.name)
        let isLast = index == names.count - 1
        for problem in headers.problems where problem.index == index {
            sites.append(DamageSite(segment: index, error: problem.error, dirtyEnd: nil, acknowledged: true, torn: false))
        }
        guard let header = headers.headers[index] else {
            let size = (try? fileSize(io: io, path: path)) ?? 0
            // A name may say LSN 0 (a damaged or forged file): nothing below it to count down to.
            report.segments.append(.init(name: segment.name, firstLSN: segment.firstLSN, lastLSN: max(segment.firstLSN, 1) - 1,
                                         records: 0, bytes: size, unreadable: true))
            continue
        }
        // The same judgement as open (docs/format.md, "Recovery rules"), then on past the damage.
        let clean = marker.map { $0.logID == header.logID } ?? false
        var records = 0
        var lastValid = header.firstLSN - 1  // at least 1: a header naming LSN 0 does not decode
        var start: (offset: Int, lsn: LSN)?
        var size = 0
        var endedInDamage = false
        var endOffset = SegmentHeader.size
        while true {
            let scan = try wrapIO { try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max), from: start) }
            size = scan.fileSize
            records += scan.recordCount
            if scan.recordCount > 0 { lastValid = scan.lastLSN }
            endOffset = scan.endOffset
            guard let damage = scan.damage else { break }
            endedInDamage = true
            let firstInSegment = start == nil
            if isLast && firstInSegment {
                switch TailVerdict.judge(damage, layout: header.layout, clean: clean) {
                case .torn:
                    report.tornTail = (path, damage.offset, damage.expectedLSN)
                    sites.append(DamageSite(segment: index, error: .corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN,
                                                                               reason: damage.reason),
                                            dirtyEnd: damage.dirtyEnd, acknowledged: false, torn: true))
                case .corruption(let reason):
                    let covered = clean || (damage.laterCommitted ?? 0) >= damage.expectedLSN
                        || (!header.layout.hasCommitted && damage.validRecordFollows != nil)
                    sites.append(DamageSite(segment: index, error: .corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN,
                                                                               reason: reason),
                                            dirtyEnd: damage.dirtyEnd, acknowledged: covered, torn: false))
                }
                if report.tornTail != nil { break }
            } else if Recovery.isSlack(damage, segmentIndex: index, names: names, headers: headers.headers) {
                // Every record of the sealed segment is there: the damage is in the space after
                // them, which no reader reads. Repair zeroes it and keeps everything else.
                sites.append(DamageSite(segment: index, error: .corruption(
                    file: path, offset: damage.offset, lsn: damage.expectedLSN,
                    reason: damage.reason + "; it lies after the segment's last record (LSN \(damage.expectedLSN - 1)), so no record is lost"),
                    dirtyEnd: damage.dirtyEnd, acknowledged: false, torn: false, slack: true))
                break  // what follows in the file (if anything) was superseded by a newer generation
            } else {
                var reason = damage.reason
                if let follows = damage.validRecordFollows, firstInSegment {
                    reason += ", but a valid record (LSN \(follows.lsn)) follows at byte \(follows.offset)"
                }
                sites.append(DamageSite(segment: index, error: .corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN,
                                                                           reason: reason),
                                        dirtyEnd: damage.dirtyEnd, acknowledged: !isLast || clean, torn: false))
            }
            guard let follows = damage.validRecordFollows else { break }
            start = follows
        }
        report.segments.append(.init(name: segment.name, firstLSN: segment.firstLSN, lastLSN: lastValid,
                                     records: records, bytes: size, unreadable: false))
        if isLast, !endedInDamage, clean, let marker, marker.lastLSN != lastValid {
            sites.append(DamageSite(segment: index, error: .corruption(
                file: path, offset: endOffset, lsn: lastValid + 1,
                reason: "the log was stopped cleanly at LSN \(marker.lastLSN) but ends at LSN \(lastValid)"),
                dirtyEnd: nil, acknowledged: marker.lastLSN > lastValid, torn: false))
        }
        if !isLast, !endedInDamage, lastValid != names[index + 1].firstLSN - 1 {
            sites.append(DamageSite(segment: index, error: .corruption(
                file: path, offset: endOffset, lsn: lastValid + 1,
                reason: "segment ends at LSN \(lastValid) but the next one starts at \(names[index + 1].firstLSN)"),
                dirtyEnd: nil, acknowledged: true, torn: false))
        }
    }
    report.damages = sites.filter { !$0.torn }.map(\.error)
    // The cut is at the first damage that loses records; slack damage before it is zeroed on the way.
    if let first = sites.first(where: { !$0.slack }) ?? sites.last {
        let slack = sites.filter { $0.slack && $0.segment < first.segment }
        report.cut = RepairPlan(cuttingAt: first, report: report, slackBefore: slack)
    }
    return report
}

/// One damage `verifyLog` found, with what a repair plan needs to know about it.
struct DamageSite {
    let segment: Int
    let error: WALError
    /// Just past the last non-zero byte after it (nil: the whole segment, or nothing, goes).
    let dirtyEnd: Int?
    /// Whether what it holds may have been acknowledged (see `RepairPlan.acknowledgedThrough`).
    let acknowledged: Bool
    let torn: Bool
    /// In a sealed segment, after its last record (`Recovery.isSlack`): no record is lost.
    var slack = false
}

extension RepairPlan {
    init(cuttingAt site: DamageSite, report: VerifyReport, slackBefore: [DamageSite]) {
        guard case .corruption(let file, let offset, let lsn, let reason) = site.error else {
            preconditionFailure("a damage site is always corruption")
        }
        self.file = file
        self.offset = offset
        self.lsn = lsn
        self.reason = reason
        tornTailOnly = site.torn
        slackZeroed = slackBefore.compactMap { slack in
            guard case .corruption(let file, let offset, _, _) = slack.error else { return nil }
            return (file, offset, max(0, (slack.dirtyEnd ?? offset) - offset))
        }
        slackOnly = site.slack
        if site.slack {
            // Zeroing after the last record: no record, segment or generation changes.
            validRecordsDiscarded = 0
            lastDiscardedLSN = nil
            countIsLowerBound = false
            bytesCut = max(0, (site.dirtyEnd ?? offset) - offset)
            segmentsSetAside = []
            bytesSetAside = 0
            acknowledgedThrough = nil
            return
        }
        let segment = report.segments[site.segment]
        let isHeader = offset == 0
        // Valid records of the damaged segment at or after the cut, then every later segment.
        var discarded = 0
        var last: LSN?
        if segment.lastLSN >= lsn {
            let kept = Int(clamping: lsn > segment.firstLSN ? lsn - segment.firstLSN : 0)
            discarded = max(0, segment.records - kept)
            last = segment.lastLSN
        }
        let later = report.segments[(site.segment + 1)...]
        for next in later where next.records > 0 {
            discarded += next.records
            last = max(last ?? 0, next.lastLSN)
        }
        validRecordsDiscarded = discarded
        lastDiscardedLSN = last
        countIsLowerBound = (isHeader && segment.unreadable) || later.contains { $0.unreadable }
        bytesCut = isHeader ? 0 : max(0, (site.dirtyEnd ?? offset) - offset)
        let setAside = isHeader ? report.segments[site.segment...] : later
        emptiesLog = isHeader && site.segment == 0
        segmentsSetAside = setAside.map(\.name)
        bytesSetAside = setAside.reduce(0) { $0 + $1.bytes }
        acknowledgedThrough = site.acknowledged ? max(last ?? lsn, lsn) : nil
    }
}

private func fileSize(io: any FileIO, path: String) throws -> Int {
    let handle = try io.open(path, mode: .readOnly)
    defer { io.close(handle) }
    return try io.size(handle, path: path)
}

/// A log opened only to read it (`walctl dump`): nothing in the directory is written, created,
/// removed or locked, so it works next to a running wald and on a read-only copy. The log
/// ends where open would end it; a torn tail or damage there is reported in `tail`, not cut.
public final class OfflineLog {
    public let logID: LogID
    public let generation: UInt32
    public let firstLSN: LSN
    /// The last record that can be read (firstLSN − 1 when none).
    public let lastLSN: LSN
    /// What ends the readable log early: a torn tail (a crash artifact open would cut) or damage.
    public let tail: Tail?
    private let io: any FileIO
    private let directory: String
    private let catalog: SegmentCatalog
    private let end: DurableLSN

    public enum Tail: Sendable {
        case torn(file: String, offset: Int, lsn: LSN)
        case damaged(WALError)
    }

    public init(directory: String, segmentPrefix: String = "wal-", io: any FileIO = PosixFileIO()) throws {
        var options = WALOptions(directory: directory)
        options.segmentPrefix = segmentPrefix
        self.io = io
        self.directory = directory
        var names = try wrapIO { try Recovery.segmentNames(io: io, options: options, removingTemporaries: false) }
        guard !names.isEmpty else {
            throw WALError.invalidOptions("no \(segmentPrefix)<lsn>.wal segment files in \(directory)")
        }
        let headers = try wrapIO { try Recovery.checkHeaders(io: io, directory: directory, names: names, stopAtFirst: true) }
        var tail: Tail?
        if let (index, error) = headers.problems.first {
            // The segments before the damaged one can still be read.
            guard index > 0 else { throw error }
            names.removeSubrange(index...)
            tail = .damaged(error)
        }
        let last = names.last!
        let path = joinPath(directory, last.name)
        let scan = try wrapIO { try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max)) }
        if tail == nil, let damage = scan.damage {
            let clean = CleanMarker.read(io: io, directory: directory).map { $0.logID == headers.logID } ?? false
            switch TailVerdict.judge(damage, layout: scan.header.layout, clean: clean) {
            case .torn: tail = .torn(file: path, offset: damage.offset, lsn: damage.expectedLSN)
            case .corruption(let reason):
                tail = .damaged(.corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN, reason: reason))
            }
        }
        self.tail = tail
        logID = headers.logID!
        generation = headers.generation
        firstLSN = names.first!.firstLSN
        lastLSN = scan.lastLSN
        catalog = SegmentCatalog(logID: logID, generation: generation, segments: names)
        end = DurableLSN(scan.lastLSN)
    }

    /// A reader from `lsn` (0 = the first) to `lastLSN`; it checks every record's CRC and LSN
    /// and throws `.corruption` at damage in an older segment.
    public func reader(from lsn: LSN) throws -> LogReader {
        let start = lsn == 0 ? firstLSN : lsn
        guard start >= firstLSN, start <= lastLSN + 1 else {
            throw WALError.outOfRange(lsn: lsn, first: firstLSN, last: lastLSN)
        }
        return LogReader(io: io, directory: directory, catalog: catalog, durable: end, from: start)
    }
}

extension WAL {
    /// Opens the log with repair (cutting it at the first damage, keeping `.broken` copies)
    /// and closes it again. Returns the status after repair.
    public static func repair(_ options: WALOptions) async throws -> WALStatus {
        var options = options
        options.repair = true
        let wal = try await WAL.open(options)
        let status = wal.status
        try await wal.close()
        return status
    }
}
