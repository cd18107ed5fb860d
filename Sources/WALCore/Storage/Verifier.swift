// Offline checks of a whole data directory (`walctl verify`): every header, every record's
// CRC and LSN, and the links between segments. Unlike open, it reads every segment.

/// What `verifyLog` found.
public struct VerifyReport: Sendable {
    public struct Segment: Sendable {
        public let name: String
        public let firstLSN: LSN
        public let lastLSN: LSN
        public let records: Int
        public let bytes: Int
    }

    public var logID: LogID?
    public var segments: [Segment] = []
    /// The first damage, as the error `WAL.open` (or a reader) would report.
    public var damage: WALError?
    /// A torn tail at the end of the last segment: a normal crash artifact that open cuts.
    public var tornTail: (file: String, offset: Int, lsn: LSN)?

    public var firstLSN: LSN? { segments.first?.firstLSN }
    public var lastLSN: LSN? { segments.last?.lastLSN }
    public var records: Int { segments.reduce(0) { $0 + $1.records } }
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
    for (index, segment) in names.enumerated() {
        let path = joinPath(directory, segment.name)
        let scan: SegmentScan
        do {
            scan = try wrapIO { try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max)) }
        } catch WALError.corruption(let file, let offset, _, let reason) {
            report.damage = .corruption(file: file, offset: offset, lsn: segment.firstLSN, reason: reason)
            return report
        }
        let header = scan.header
        var problem: String?
        if header.firstLSN != segment.firstLSN {
            problem = "header says first LSN \(header.firstLSN) but the file name says \(segment.firstLSN)"
        } else if let logID = report.logID, logID != header.logID {
            problem = "segment belongs to log \(header.logID), not \(logID)"
        } else if index > 0 && header.previousFirstLSN != names[index - 1].firstLSN {
            problem = "missing segment before this one (it follows LSN \(header.previousFirstLSN))"
        }
        if let problem {
            report.damage = .corruption(file: path, offset: 0, lsn: segment.firstLSN, reason: problem)
            return report
        }
        report.logID = report.logID ?? header.logID
        report.segments.append(.init(name: segment.name, firstLSN: segment.firstLSN, lastLSN: scan.lastLSN,
                                     records: scan.recordCount, bytes: scan.fileSize))
        let isLast = index == names.count - 1
        // The same judgement as open (docs/format.md, "Recovery rules").
        let clean = marker.map { $0.logID == header.logID } ?? false
        if let damage = scan.damage {
            var verdict = TailVerdict.corruption(damage.reason)
            if isLast {
                verdict = TailVerdict.judge(damage, layout: header.layout, clean: clean)
            } else if let follows = damage.validRecordFollows {
                verdict = .corruption(damage.reason + ", but a valid record (LSN \(follows.lsn)) follows at byte \(follows.offset)")
            }
            switch verdict {
            case .torn:
                report.tornTail = (path, damage.offset, damage.expectedLSN)
            case .corruption(let reason):
                report.damage = .corruption(file: path, offset: damage.offset, lsn: damage.expectedLSN, reason: reason)
                return report
            }
        } else if isLast, clean, let marker, marker.lastLSN != scan.lastLSN {
            report.damage = .corruption(file: path, offset: scan.endOffset, lsn: scan.lastLSN + 1,
                                        reason: "the log was stopped cleanly at LSN \(marker.lastLSN) but ends at LSN \(scan.lastLSN)")
            return report
        }
        if !isLast && scan.lastLSN != names[index + 1].firstLSN - 1 {
            report.damage = .corruption(
                file: path, offset: scan.endOffset, lsn: scan.lastLSN + 1,
                reason: "segment ends at LSN \(scan.lastLSN) but the next one starts at \(names[index + 1].firstLSN)")
            return report
        }
    }
    return report
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
