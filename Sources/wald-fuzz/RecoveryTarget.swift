// Target `recovery`: the input becomes the LAST segment of a data directory in a
// `SimulatedFileIO`, and the log is opened. The first input byte picks the directory:
//   0: the rest is the whole segment file (header included), the log's only segment;
//   1: a valid header (first LSN 1) followed by the rest, the only segment;
//   2: a valid first segment holding LSNs 1...3, then a valid header (first LSN 4) + the rest;
//   3: structure-aware: the rest describes a well-formed segment (valid header and frames,
//      valid CRCs) whose first LSN, record LSNs, lengths and committed LSNs are picked from
//      the edges (0, 1, 2^32 ± 1, 2^63, 2^64 − 2, 2^64 − 1), so the arithmetic on values read
//      from a file meets its limits with every check but the values' own passing.
// Properties: verifyLog never crashes; open either fails with a typed WALError or yields a
// log whose every record reads back with dense LSNs, and whose records in the fuzzed
// segment are the input's own bytes (recovery keeps a prefix, never invents); after such an
// open, an append survives close and reopen, and verifyLog finds no damage; a log that open
// calls corrupt opens after repair. Allocation is bounded by the libFuzzer malloc limit
// (`make fuzz` sets it far below what a corrupt 4 GiB length field would ask for).
import Logging
import WALCore

enum RecoveryTarget {
    static let directory = "/fuzz"
    static let logID = LogID(bytes: Array(0x10..<0x20))!
    static let earlierRecords: [[UInt8]] = [Array("one".utf8), [], Array("three".utf8)]

    static func run(_ bytes: [UInt8]) {
        guard let mode = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        let io = SimulatedFileIO()
        try! io.createDirectory(directory)
        let lastFirstLSN: LSN
        var segment: [UInt8]
        switch mode % 4 {
        case 3:
            (lastFirstLSN, segment) = structuredSegment(rest)
        case 0:
            lastFirstLSN = 1
            segment = rest
        case 1:
            lastFirstLSN = 1
            segment = SegmentHeader(logID: logID, firstLSN: 1, previousFirstLSN: 0, createdMillis: 0).encoded() + rest
        default:
            var first = SegmentHeader(logID: logID, firstLSN: 1, previousFirstLSN: 0, createdMillis: 0).encoded()
            for (index, record) in earlierRecords.enumerated() {
                record.withUnsafeBytes { RecordFrame.append(lsn: LSN(index + 1), committed: LSN(index), payload: $0, to: &first) }
            }
            write(io, name: "wal-00000000000000000001.wal", first)
            lastFirstLSN = LSN(earlierRecords.count + 1)
            segment = SegmentHeader(logID: logID, firstLSN: lastFirstLSN, previousFirstLSN: 1, createdMillis: 0).encoded() + rest
        }
        let lastName = SegmentName.make(prefix: "wal-", firstLSN: lastFirstLSN)
        write(io, name: lastName, segment)

        // verifyLog only reads: run it on the untouched directory.
        do {
            _ = try verifyLog(directory: directory, io: io)
        } catch {
            invariant(error is WALError, "verifyLog threw an untyped error: \(error)")
        }

        let options = makeOptions(io)
        let opened = runBlocking { () -> Result<Opened, WALError> in
            do {
                let wal = try await WAL.open(options)
                let result = try await readAll(wal)
                let appended: LSN
                do {
                    appended = try await wal.append(Array("after recovery".utf8))
                } catch WALError.exhausted(let last) {
                    // A log at the end of the LSN space takes nothing more, and says so.
                    invariant(last == wal.lastLSN && last >= LSN.max - 1, "exhausted at LSN \(last)")
                    try await wal.close()
                    return .success(Opened(records: result.records, firstLSN: result.firstLSN, appended: nil,
                                           reopened: .success(result.records)))
                }
                try await wal.close()
                // Reopen in the same task: one thread handoff per input instead of two.
                let reopened: Result<[Record], WALError>
                do {
                    let again = try await WAL.open(options)
                    let records = try await readAll(again).records
                    try await again.close()
                    reopened = .success(records)
                } catch {
                    reopened = .failure(error as? WALError ?? .closed)
                }
                return .success(Opened(records: result.records, firstLSN: result.firstLSN, appended: appended,
                                       reopened: reopened))
            } catch let error as WALError {
                return .failure(error)
            } catch {
                invariant(false, "open or read threw an untyped error: \(error)")
                return .failure(.closed)
            }
        }
        switch opened {
        case .failure(let error):
            invariant(isOpenFailure(error), "open failed with an unexpected error: \(error)")
            // Whatever open refused, repair must turn into a log that opens.
            var repairing = options
            repairing.repair = true
            let repairOptions = repairing
            let repaired = runBlocking { () -> String? in
                do {
                    _ = try await WAL.repair(repairOptions)
                    let wal = try await WAL.open(options)
                    _ = try await readAll(wal)
                    try await wal.close()
                    return nil
                } catch {
                    return "\(error)"
                }
            }
            invariant(repaired == nil, "after repair the log does not open cleanly: \(repaired ?? "")")
        case .success(let log):
            checkPrefix(log, segment: segment, lastFirstLSN: lastFirstLSN, hasEarlierSegment: mode % 4 == 2)
            guard case .success(let records) = log.reopened else {
                invariant(false, "a recovered log did not reopen: \(log.reopened)")
                return
            }
            if let appended = log.appended {
                invariant(appended == log.firstLSN + LSN(log.records.count), "append after recovery got LSN \(appended)")
                invariant(records.map(\.payload) == log.records.map(\.payload) + [Array("after recovery".utf8)],
                          "reopening changed the records")
            }
            do {
                let report = try verifyLog(directory: directory, io: io)
                invariant(report.damage == nil && report.tornTail == nil, "verifyLog finds damage after recovery: \(report.damage.map { "\($0)" } ?? "torn tail")")
            } catch {
                invariant(false, "verifyLog failed after recovery: \(error)")
            }
        }
    }

    /// Values at the edges of what u32 and u64 fields can hold.
    static let edges: [UInt64] = [0, 1, 2, 3, 0xFFFF_FFFE, 0xFFFF_FFFF, 0x1_0000_0000, 0x1_0000_0001, 1 << 63,
                                  UInt64.max - 2, UInt64.max - 1, UInt64.max]

    /// A segment built from `input`: byte 0 picks the first LSN; then each 4-byte group is a
    /// record: LSN (the expected one, or an edge), length class, committed (below, or an edge).
    static func structuredSegment(_ input: [UInt8]) -> (LSN, [UInt8]) {
        var bytes = input.makeIterator()
        func next() -> UInt8 { bytes.next() ?? 0 }
        let firstLSN = max(1, edges[Int(next()) % edges.count])
        var segment = SegmentHeader(logID: logID, firstLSN: firstLSN, previousFirstLSN: 0, createdMillis: 0).encoded()
        var expected = firstLSN
        for _ in 0..<min(input.count / 4, 64) {
            let lsnChoice = next(), lengthChoice = next(), committedChoice = next(), fill = next()
            let lsn = lsnChoice < 200 ? expected : edges[Int(lsnChoice) % edges.count]
            let length = Int(lengthChoice % 40)
            let committed = committedChoice < 200 ? (lsn == 0 ? 0 : lsn - 1) : edges[Int(committedChoice) % edges.count]
            let payload = [UInt8](repeating: fill, count: length)
            payload.withUnsafeBytes { RecordFrame.append(lsn: lsn, committed: committed, payload: $0, to: &segment) }
            if lengthChoice >= 250 {
                // A length field that lies (its CRC recomputed, so only the length is wrong).
                let start = segment.count - length - RecordFrame.headerSize
                let forged = UInt32(truncatingIfNeeded: edges[Int(fill) % edges.count])
                segment.withUnsafeMutableBytes { out in
                    out.storeBytes(of: forged.littleEndian, toByteOffset: start + 4, as: UInt32.self)
                    let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: out[(start + 4)...]))
                    out.storeBytes(of: crc.littleEndian, toByteOffset: start, as: UInt32.self)
                }
            }
            if expected < LSN.max { expected += 1 }
        }
        return (firstLSN, segment)
    }

    struct Opened: Sendable {
        let records: [Record]
        let firstLSN: LSN
        /// The LSN of the append after recovery; nil when the log is at the end of the LSN space.
        let appended: LSN?
        let reopened: Result<[Record], WALError>
    }

    /// Every record from the first LSN, checking density against the log's own positions.
    static func readAll(_ wal: WAL) async throws -> (records: [Record], firstLSN: LSN) {
        let status = wal.status
        let reader = try wal.reader(from: 0)
        var records: [Record] = []
        while let record = try reader.next() {
            invariant(record.lsn == status.firstLSN + LSN(records.count), "reader skipped from \(records.last?.lsn ?? 0) to \(record.lsn)")
            records.append(record)
        }
        invariant(LSN(records.count) == status.lastLSN + 1 - status.firstLSN,
                  "reader returned \(records.count) records for LSNs \(status.firstLSN)...\(status.lastLSN)")
        invariant(status.durableLSN == status.lastLSN, "a recovered log has non-durable records")
        return (records, status.firstLSN)
    }

    /// The records recovered from the fuzzed segment are the frames at its start, in order.
    static func checkPrefix(_ log: Opened, segment: [UInt8], lastFirstLSN: LSN, hasEarlierSegment: Bool) {
        // Mode 2 only: an intact segment with LSNs 1...3 precedes the fuzzed one. (Mode 3 picks
        // first LSNs above 1 with no segment before them.)
        if hasEarlierSegment {
            invariant(log.records.count >= earlierRecords.count, "records of the intact first segment were lost")
            invariant(Array(log.records.prefix(earlierRecords.count).map(\.payload)) == earlierRecords, "intact records changed")
        }
        guard let layout = (try? SegmentHeader.decode(segment))?.layout else {
            invariant(log.records.allSatisfy { $0.lsn < lastFirstLSN }, "records recovered from a segment whose header does not decode")
            return
        }
        var offset = SegmentHeader.size
        for record in log.records where record.lsn >= lastFirstLSN {
            let end = offset + layout.headerSize + record.payload.count
            invariant(end <= segment.count, "record \(record.lsn) extends beyond the input")
            let decoded = segment.withUnsafeBytes {
                RecordFrame.decode($0, at: offset, expectedLSN: record.lsn, maxPayload: record.payload.count, layout: layout)
            }
            guard case .record(_, let payload, let next) = decoded, next == end else {
                invariant(false, "record \(record.lsn) is not the input's frame at byte \(offset)")
                return
            }
            invariant(Array(segment[payload]) == record.payload, "record \(record.lsn) differs from the input's frame at byte \(offset)")
            offset = end
        }
    }

    static func isOpenFailure(_ error: WALError) -> Bool {
        switch error {
        case .corruption: true
        default: false
        }
    }

    static func makeOptions(_ io: SimulatedFileIO) -> WALOptions {
        var options = WALOptions(directory: directory)
        options.io = io
        options.maxSegmentBytes = 1 << 20
        // Small buffers: under ASan every MiB allocated and freed per input costs page faults.
        options.maxBufferBytes = 64 * 1024
        options.preallocate = false
        options.flushInterval = .zero
        options.logger = Logger(label: "wald-fuzz") { _ in SwiftLogNoOpLogHandler() }
        return options
    }

    static func write(_ io: SimulatedFileIO, name: String, _ bytes: [UInt8]) {
        let path = directory + "/" + name
        let handle = try! io.open(path, mode: .createExclusive)
        if !bytes.isEmpty { try! bytes.withUnsafeBytes { try io.write(handle, $0, at: 0, path: path) } }
        try! io.syncData(handle, path: path)
        io.close(handle)
        try! io.syncDirectory(directory)
    }
}
