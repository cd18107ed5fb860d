// Damage on real files: a torn tail is a crash artifact that open cuts; anything else is
// corruption that open, readers and verifyLog report with file, offset and LSN, and that
// repair cuts while keeping a `.broken` copy.
import Foundation
import Synchronization
import Testing
@testable import WALCore
import WALSync

/// A log on real files whose records all have `payloadSize` bytes, so offsets are computable.
struct FixedLog {
    static let payloadSize = 50
    static let frameSize = RecordFrame.headerSize + payloadSize  // version 2 frames (every segment it writes is version 3)
    let dir = TempDirectory("recovery")
    var options: WALOptions

    init(preallocate: Bool = true) {
        options = smallOptions(dir.path)
        options.preallocate = preallocate
        options.logger.logLevel = .critical
    }

    static func payload(_ lsn: LSN) -> [UInt8] { WALCoreTests.payload(lsn, size: payloadSize) }

    /// How `write` ends: a clean close leaves the CLEAN marker (after which any damage is
    /// corruption); a crash after the last durable append does not.
    enum Stop { case clean, crash }

    /// Appends records 1...count durably, then closes the log or crashes.
    func write(_ count: Int, stop: Stop = .crash) async throws {
        let wal = try await WAL.open(options)
        for lsn in LSN(1)...LSN(count) { try await wal.append(Self.payload(lsn)) }
        try await wal.close()
        if stop == .crash { try? FileManager.default.removeItem(atPath: dir.path + "/CLEAN") }
    }

    /// Segment files in LSN order.
    var segments: [SegmentInfo] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.compactMap { name in SegmentName.parse(name, prefix: "wal-").map { SegmentInfo(firstLSN: $0, name: name) } }
            .sorted { $0.firstLSN < $1.firstLSN }
    }

    func path(_ segment: SegmentInfo) -> String { dir.path + "/" + segment.name }

    /// The segment holding `lsn` and the byte offset of its frame there.
    func location(of lsn: LSN) -> (segment: SegmentInfo, offset: Int) {
        let segment = segments.last { $0.firstLSN <= lsn }!
        return (segment, SegmentHeader.size + Int(lsn - segment.firstLSN) * Self.frameSize)
    }

    func read(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }

    func write(_ path: String, _ bytes: [UInt8]) { #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot write \(path)") }

    /// Flips one bit at `offset` of the file.
    func flip(_ path: String, at offset: Int) {
        var bytes = read(path)
        bytes[offset] ^= 0x20
        write(path, bytes)
    }

    func records(from lsn: LSN = 0) async throws -> [Record] {
        let wal = try await WAL.open(options)
        do {
            let records = try await readAll(wal, from: lsn)
            try await wal.close()
            return records
        } catch {
            try? await wal.close()
            throw error
        }
    }
}

func isCorruption(_ error: WALError?, file: String, offset: Int, lsn: LSN, _ comment: Comment? = nil,
                  sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    guard case .corruption(let f, let o, let l, _) = error else {
        Issue.record("expected corruption, got \(String(describing: error)). \(comment.map { "\($0)" } ?? "")",
                     sourceLocation: sourceLocation)
        return false
    }
    #expect(f == file, sourceLocation: sourceLocation)
    #expect(o == offset, sourceLocation: sourceLocation)
    #expect(l == lsn, sourceLocation: sourceLocation)
    return f == file && o == offset && l == lsn
}

func reason(_ error: WALError?) -> String {
    if case .corruption(_, _, _, let reason) = error { reason } else { "" }
}

@Suite struct TornTailTests {
    @Test(arguments: [true, false])
    func tornTailIsCutOnOpen(preallocate: Bool) async throws {
        let log = FixedLog(preallocate: preallocate)
        defer { log.dir.cleanup() }
        // The last record must straddle a 512-byte sector boundary, so a crash can leave its
        // first part without the rest: segments of 4096 bytes hold 54 frames of 74 bytes.
        let perSegment = (4096 - SegmentHeader.size) / FixedLog.frameSize
        let count = (100...200).first { n in
            let start = SegmentHeader.size + (n - 1) % perSegment * FixedLog.frameSize
            return start / 512 != (start + FixedLog.frameSize - 1) / 512
        }!
        let last = LSN(count)
        try await log.write(count)
        let (segment, offset) = log.location(of: last)
        let boundary = (offset + FixedLog.frameSize) / 512 * 512
        #expect(offset < boundary)
        let path = log.path(segment)
        var bytes = log.read(path)
        if preallocate {
            for i in boundary..<(offset + FixedLog.frameSize) { bytes[i] = 0 }
        } else {
            bytes.removeLast(bytes.count - boundary)
        }
        log.write(path, bytes)
        let report = try verifyLog(directory: log.dir.path)
        #expect(report.damage == nil)
        #expect(report.tornTail?.file == path)
        #expect(report.tornTail?.offset == offset)
        #expect(report.tornTail?.lsn == last)

        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == last - 1)
        #expect(try await wal.append([7, 7]) == last)
        try await wal.close()
        let records = try await log.records()
        #expect(records.count == count)
        #expect(records.last == Record(lsn: last, payload: [7, 7]))
        #expect(records.dropLast().allSatisfy { $0.payload == FixedLog.payload($0.lsn) })
        // What was cut is kept beside the segment.
        #expect(FileManager.default.fileExists(atPath: path + ".torn.\(offset)"))
    }

    @Test func garbageAfterTheLastRecordIsCutAndZeroed() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(30)
        let (segment, offset) = log.location(of: 30)
        let path = log.path(segment)
        var bytes = log.read(path)
        let end = offset + FixedLog.frameSize
        var rng = SplitMix64(seed: 9)
        for i in end..<(end + 200) { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
        log.write(path, bytes)

        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == 30)
        try await wal.close()
        // The cut cleared the garbage, so a later crash cannot resurrect it.
        #expect(log.read(path)[end..<(end + 200)].allSatisfy { $0 == 0 })
        #expect(try await log.records().count == 30)
    }

    @Test func tornFrameHeaderAtTheEndOfAGrowingFileIsCut() async throws {
        let log = FixedLog(preallocate: false)
        defer { log.dir.cleanup() }
        try await log.write(10)
        let (segment, offset) = log.location(of: 10)
        let path = log.path(segment)
        log.write(path, Array(log.read(path).prefix(offset + 7)))  // 7 bytes of a 16-byte frame header
        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == 9)
        #expect(try await wal.append([1]) == 10)
        try await wal.close()
    }
}

@Suite struct CorruptionTests {
    @Test func checksumMismatchFollowedByValidRecordIsCorruption() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(20)
        let (segment, offset) = log.location(of: 12)
        let path = log.path(segment)
        log.flip(path, at: offset + RecordFrame.headerSize + 10)

        let error = await walError { try await WAL.open(log.options) }
        #expect(isCorruption(error, file: path, offset: offset, lsn: 12))
        #expect(reason(error).contains("checksum"))
        #expect(reason(error).contains("LSN 13"))

        let report = try verifyLog(directory: log.dir.path)
        #expect(isCorruption(report.damage, file: path, offset: offset, lsn: 12))
        #expect(report.tornTail == nil)
        // verify changes nothing, and open still refuses.
        #expect(isCorruption(await walError { try await WAL.open(log.options) }, file: path, offset: offset, lsn: 12))
    }

    @Test func repairCutsAtTheDamageAndKeepsABrokenCopy() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(20)
        let (segment, offset) = log.location(of: 12)
        let path = log.path(segment)
        log.flip(path, at: offset + RecordFrame.headerSize + 10)
        let damaged = log.read(path)

        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == 11)
        #expect(log.read(path + ".broken") == damaged)
        // The cut part is zeroed on disk, so nothing of it can come back.
        #expect(log.read(path)[offset...].allSatisfy { $0 == 0 })
        #expect(try verifyLog(directory: log.dir.path).damage == nil)

        let wal = try await WAL.open(log.options)
        let records = try await readAll(wal)
        #expect(records.map(\.lsn) == Array(1...11))
        #expect(records.allSatisfy { $0.payload == FixedLog.payload($0.lsn) })
        #expect(try await wal.append([1, 2, 3]) == 12)
        try await wal.close()
    }

    @Test func openWithRepairOptionRepairsInPlace() async throws {
        var log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(20)
        let (segment, offset) = log.location(of: 5)
        log.flip(log.path(segment), at: offset + 3)  // inside the stored CRC
        log.options.repair = true
        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == 4)
        #expect(try await wal.append([9]) == 5)
        try await wal.close()
        #expect(FileManager.default.fileExists(atPath: log.path(segment) + ".broken"))
        log.options.repair = false
        #expect(try await log.records().map(\.lsn) == [1, 2, 3, 4, 5])
    }

    @Test func repairTwiceKeepsBothBrokenCopies() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(20)
        let (segment, offset) = log.location(of: 15)
        let path = log.path(segment)
        log.flip(path, at: offset + 20)
        _ = try await WAL.repair(log.options)
        let (_, earlier) = log.location(of: 8)
        log.flip(path, at: earlier + 20)
        #expect(try await WAL.repair(log.options).lastLSN == 7)
        #expect(FileManager.default.fileExists(atPath: path + ".broken"))
        #expect(FileManager.default.fileExists(atPath: path + ".broken.1"))
    }

    @Test func repairOfAHealthyLogChangesNothing() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(150)
        let before = log.segments.map { log.read(log.path($0)) }
        let status = try await WAL.repair(log.options)
        #expect(status.firstLSN == 1 && status.lastLSN == 150)
        #expect(log.segments.map { log.read(log.path($0)) } == before)
        let names = try FileManager.default.contentsOfDirectory(atPath: log.dir.path)
        #expect(!names.contains { $0.contains(".broken") })
    }

    @Test func missingMiddleSegmentIsCorruptionNamingIt() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(300)
        let segments = log.segments
        #expect(segments.count >= 4)
        let missing = segments[2]
        try FileManager.default.removeItem(atPath: log.path(missing))

        let error = await walError { try await WAL.open(log.options) }
        #expect(isCorruption(error, file: log.path(segments[3]), offset: 0, lsn: segments[3].firstLSN))
        #expect(reason(error).contains("missing segment"))
        #expect(reason(error).contains("LSN \(missing.firstLSN)"))

        // verify sees the gap from the segment before it: its records stop short of the next file.
        let report = try verifyLog(directory: log.dir.path)
        let (_, end) = log.location(of: missing.firstLSN - 1)
        #expect(isCorruption(report.damage, file: log.path(segments[1]), offset: end + FixedLog.frameSize, lsn: missing.firstLSN))
        #expect(reason(report.damage).contains("next one starts at \(segments[3].firstLSN)"))

        // Repair keeps the log up to the gap and sets the segments after it aside.
        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == missing.firstLSN - 1)
        #expect(FileManager.default.fileExists(atPath: log.path(segments[3]) + ".broken"))
        #expect(try await log.records().count == Int(missing.firstLSN - 1))
    }

    /// A flipped bit after the last record of a sealed segment touches no record: verify still
    /// reports it, but repair zeroes those bytes and keeps every record, every later segment
    /// and the generation (it used to set the later segments aside and start a new generation).
    @Test func damageAfterTheLastRecordOfASealedSegmentCostsNoRecord() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(300)
        let segments = log.segments
        #expect(segments.count >= 4)
        let (segment, last) = log.location(of: segments[2].firstLSN - 1)
        #expect(segment == segments[1])
        let slack = last + FixedLog.frameSize + 5
        #expect(slack < log.options.maxSegmentBytes, "no room after the last record to damage")
        log.flip(log.path(segment), at: slack)

        let report = try verifyLog(directory: log.dir.path)
        #expect(isCorruption(report.damage, file: log.path(segment), offset: last + FixedLog.frameSize, lsn: segments[2].firstLSN))
        #expect(reason(report.damage).contains("no record is lost"))
        let plan = try #require(report.cut)
        #expect(plan.slackOnly && !plan.startsNewGeneration && !plan.discardsAcknowledged)
        #expect(plan.validRecordsDiscarded == 0 && plan.segmentsSetAside.isEmpty && plan.bytesCut > 0)

        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == 300 && status.generation == 0)
        #expect(log.segments.map(\.name) == segments.map(\.name), "segments were set aside")
        #expect(FileManager.default.fileExists(atPath: log.path(segment) + ".broken"))
        #expect(try verifyLog(directory: log.dir.path).damage == nil)
        #expect(try await log.records().map(\.lsn) == Array(1...300))
    }

    /// An earlier repair's `.broken` copy may be the only one of the records it cut: a later
    /// repair that sets the same segment name aside picks `.broken.1`, never replaces it.
    @Test func aRepairNeverReplacesAnEarlierRepairsBrokenCopy() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(300)
        let segments = log.segments
        #expect(segments.count >= 4)
        let earlier = Array("records an earlier repair cut".utf8)
        #expect(FileManager.default.createFile(atPath: log.path(segments[3]) + ".broken", contents: Data(earlier)))
        let original = log.read(log.path(segments[3]))
        try FileManager.default.removeItem(atPath: log.path(segments[2]))

        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == segments[2].firstLSN - 1)
        #expect(log.read(log.path(segments[3]) + ".broken") == earlier, "the earlier copy was replaced")
        #expect(log.read(log.path(segments[3]) + ".broken.1") == original, "the segment set aside is not at .broken.1")
    }

    @Test func damageInAnEarlierSegmentIsReportedByReaderAndVerify() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(300)
        let segments = log.segments
        #expect(segments.count >= 4)
        let lsn = segments[1].firstLSN + 7
        let (segment, offset) = log.location(of: lsn)
        #expect(segment == segments[1])
        log.flip(log.path(segment), at: offset + RecordFrame.headerSize + 1)

        // Open only scans the last segment, so it succeeds; the reader finds the damage.
        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == 300)
        let reader = try wal.reader(from: 0)
        var seen: [LSN] = []
        let error = await walError { while let record = try reader.next() { seen.append(record.lsn) } }
        #expect(seen == Array(1..<lsn))
        #expect(isCorruption(error, file: log.path(segment), offset: offset, lsn: lsn))
        // A reader starting after the damage in the same segment cannot skip over it either.
        let late = try wal.reader(from: lsn + 3)
        #expect(isCorruption(await walError { try late.next() }, file: log.path(segment), offset: offset, lsn: lsn))
        // One starting in a later segment reads on.
        #expect(try await readAll(wal, from: segments[2].firstLSN).count == Int(300 - segments[2].firstLSN + 1))
        try await wal.close()

        let report = try verifyLog(directory: log.dir.path)
        #expect(isCorruption(report.damage, file: log.path(segment), offset: offset, lsn: lsn))

        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == lsn - 1)
        #expect(FileManager.default.fileExists(atPath: log.path(segment) + ".broken"))
        #expect(try verifyLog(directory: log.dir.path).damage == nil)
        #expect(try await log.records().map(\.lsn) == Array(1..<lsn))
    }

    @Test func segmentOfAnotherLogIsCorruption() async throws {
        let mine = FixedLog(), theirs = FixedLog()
        defer { mine.dir.cleanup(); theirs.dir.cleanup() }
        try await mine.write(200)
        try await theirs.write(200)  // same sizes: same segment boundaries and names
        let last = mine.segments.last!
        #expect(theirs.segments.last == last)
        try FileManager.default.removeItem(atPath: mine.path(last))
        try FileManager.default.copyItem(atPath: theirs.path(last), toPath: mine.path(last))

        let error = await walError { try await WAL.open(mine.options) }
        #expect(isCorruption(error, file: mine.path(last), offset: 0, lsn: last.firstLSN))
        #expect(reason(error).contains("belongs to log"))
        let report = try verifyLog(directory: mine.dir.path)
        #expect(isCorruption(report.damage, file: mine.path(last), offset: 0, lsn: last.firstLSN))
    }

    @Test func damagedSegmentHeaderIsCorruption() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(200)
        let segment = log.segments[1]
        log.flip(log.path(segment), at: 40)  // previousFirstLSN, under the header CRC
        let error = await walError { try await WAL.open(log.options) }
        #expect(isCorruption(error, file: log.path(segment), offset: 0, lsn: segment.firstLSN))
        #expect(reason(error).contains("header checksum"))
    }

    /// The first segment's header damaged: the plan says what repair really does (every
    /// segment set aside, a new empty log), not "goes on in the next generation".
    @Test func aDamagedFirstHeaderIsRepairedIntoANewEmptyLogAndThePlanSaysSo() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(200)
        let before = try verifyLog(directory: log.dir.path)
        log.flip(log.path(log.segments[0]), at: 40)
        let plan = try #require(try verifyLog(directory: log.dir.path).cut)
        #expect(plan.emptiesLog && plan.segmentsSetAside.count == before.segments.count)
        let status = try await WAL.repair(log.options)
        #expect(status.lastLSN == 0 && status.logID != before.logID)
        let other = try await WAL.repair(log.options)  // nothing left to repair
        #expect(other.logID == status.logID)
    }

    @Test func readerReportsAHeaderDamagedWhileOpenWithTheSegmentsLSN() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(200)
        let wal = try await WAL.open(log.options)
        let segment = log.segments[1]
        log.flip(log.path(segment), at: 2)  // magic
        let reader = try wal.reader(from: segment.firstLSN)
        let error = await walError { try reader.next() }
        #expect(isCorruption(error, file: log.path(segment), offset: 0, lsn: segment.firstLSN))
        #expect(reason(error).contains("magic"))
        try await wal.close()
    }

    @Test func segmentThatEndsEarlyIsReportedByVerify() async throws {
        let log = FixedLog(preallocate: false)
        defer { log.dir.cleanup() }
        try await log.write(200)
        let segment = log.segments[0]
        let next = log.segments[1].firstLSN
        let (_, offset) = log.location(of: next - 1)
        log.write(log.path(segment), Array(log.read(log.path(segment)).prefix(offset)))  // lose the last record
        let report = try verifyLog(directory: log.dir.path)
        guard case .corruption(let file, _, let lsn, _) = report.damage else {
            Issue.record("no damage reported: \(String(describing: report.damage))")
            return
        }
        #expect(file == log.path(segment))
        #expect(lsn == next - 1)
    }
}

/// The rule that tells a torn tail from damage (docs/format.md, "Recovery rules"), on facts
/// the log records: the clean-shutdown marker, the durable LSN in every version 2 frame, and
/// whether a damaged frame has a sector that was never written.
@Suite struct RecoveryRuleTests {
    /// After a clean close everything was synced: damage at the end is corruption, not a cut.
    @Test func damageAtTheEndAfterACleanCloseIsCorruption() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(5, stop: .clean)
        #expect(FileManager.default.fileExists(atPath: log.dir.path + "/CLEAN"))
        let (segment, offset) = log.location(of: 5)
        log.flip(log.path(segment), at: offset + RecordFrame.headerSize + 1)
        let error = await walError { try await WAL.open(log.options) }
        #expect(isCorruption(error, file: log.path(segment), offset: offset, lsn: 5))
        #expect(reason(error).contains("stopped cleanly"))
        #expect(isCorruption(try verifyLog(directory: log.dir.path).damage, file: log.path(segment), offset: offset, lsn: 5))
    }

    /// Opening removes the marker durably: a crash of the reopened log must not look clean.
    @Test func openingRemovesTheCleanMarker() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(3, stop: .clean)
        let wal = try await WAL.open(log.options)
        #expect(!FileManager.default.fileExists(atPath: log.dir.path + "/CLEAN"))
        try await wal.close()
        #expect(FileManager.default.fileExists(atPath: log.dir.path + "/CLEAN"))
    }

    /// A complete frame that fails its checksum was written whole and damaged since: even after
    /// a crash, and even as the last record, it is not cut as a torn tail.
    @Test func aCompleteDamagedLastRecordAfterACrashIsCorruption() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(7, stop: .crash)
        let (segment, offset) = log.location(of: 7)
        log.flip(log.path(segment), at: offset + RecordFrame.headerSize + 30)
        let error = await walError { try await WAL.open(log.options) }
        #expect(isCorruption(error, file: log.path(segment), offset: offset, lsn: 7))
        #expect(reason(error).contains("complete"))
    }

    /// A flipped bit in the last record's length field makes its frame reach into the zeros
    /// after it, which looks torn; one bit flipped back explains it, so it is corruption.
    @Test func aRottedLengthFieldIsNotMistakenForATornWrite() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(6, stop: .crash)
        let (segment, offset) = log.location(of: 6)
        var bytes = log.read(log.path(segment))
        bytes[offset + 4 + 2] ^= 0x01  // length += 65536: far into the zero-filled tail
        log.write(log.path(segment), bytes)
        #expect(isCorruption(await walError { try await WAL.open(log.options) }, file: log.path(segment), offset: offset, lsn: 6))
    }

    /// Valid records after the damage that say it was durable when they were written: the
    /// damaged records were acknowledged, so this is corruption even though a zeroed sector
    /// makes it look like a torn write.
    @Test func recordsAfterTheDamageThatSayItWasDurableMakeItCorruption() async throws {
        let log = FixedLog()
        defer { log.dir.cleanup() }
        try await log.write(50, stop: .crash)  // each durable: every record carries its predecessor's LSN
        let (segment, offset) = log.location(of: 12)
        let path = log.path(segment)
        var bytes = log.read(path)
        let sector = (offset / 512 + 1) * 512
        for i in sector..<(sector + 512) { bytes[i] = 0 }
        log.write(path, bytes)
        let error = await walError { try await WAL.open(log.options) }
        guard case .corruption(_, _, let lsn, let why) = error else {
            Issue.record("opened although acknowledged records are damaged: \(String(describing: error))")
            return
        }
        #expect(lsn > 12 && why.contains("says everything through LSN"), "\(why)")
    }

    /// Pages of unsynced records reached the disk out of order: the later ones were written
    /// when LSN 10 was the durable one, so the hole and everything after it is cut, by itself.
    @Test func aHoleInUnsyncedRecordsIsCutWithTheRecordsAfterIt() async throws {
        let dir = TempDirectory("hole")
        defer { dir.cleanup() }
        var options = smallOptions(dir.path, segmentBytes: 1 << 20)
        options.maxRecordBytes = 4096
        options.maxBufferBytes = 1  // every buffered append is written at once, never synced
        let wal = try await WAL.open(options)
        for i in 0..<10 { try await wal.append(bytes(300, UInt8(i))) }
        for i in 10..<40 { try await wal.append(bytes(300, UInt8(i)), durability: .buffered) }
        // What kill -9 leaves is what was written: copy it while the log is open.
        let crashed = TempDirectory("hole-crashed")
        defer { crashed.cleanup() }
        let segment = try FileManager.default.contentsOfDirectory(atPath: dir.path).first { $0.hasSuffix(".wal") }!
        var image = Array(FileManager.default.contents(atPath: dir.path + "/" + segment)!)
        try await wal.close()
        let endOf10 = SegmentHeader.size + 10 * (RecordFrame.headerSize + 300)
        for i in endOf10..<((endOf10 / 4096 + 1) * 4096) { image[i] = 0 }
        try FileManager.default.createDirectory(atPath: crashed.path, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: crashed.path + "/" + segment, contents: Data(image)))
        var reopened = options
        reopened.directory = crashed.path
        let recovered = try await WAL.open(reopened)
        #expect(recovered.lastLSN == 10)
        #expect(try await readAll(recovered).map(\.payload) == (0..<10).map { bytes(300, UInt8($0)) })
        try await recovered.close()
        let copies = try FileManager.default.contentsOfDirectory(atPath: crashed.path).filter { $0.contains(".torn.") }
        #expect(copies.count == 1)
    }

    /// A log written before version 2 (16-byte frames, header version 1) opens and reads;
    /// appends go on in its format until the segment is full, and the next segment is written
    /// in the current version (3: version 2's frames, with the generation in the header).
    @Test func aVersionOneLogOpensAndItsNextSegmentIsTheCurrentVersion() async throws {
        let io = SimulatedFileIO()
        try io.createDirectory("/v1")
        var old = SegmentHeader(logID: LogID.random(), firstLSN: 1, previousFirstLSN: 0, createdMillis: 0, version: 1)
        var segment = old.encoded()
        for lsn in LSN(1)...3 {
            Array("old \(lsn)".utf8).withUnsafeBytes {
                RecordFrame.append(lsn: lsn, committed: 0, payload: $0, to: &segment, layout: .v1)
            }
        }
        let path = "/v1/wal-00000000000000000001.wal"
        let handle = try io.open(path, mode: .createExclusive)
        try io.write(handle, segment, at: 0, path: path)
        try io.syncData(handle, path: path)
        io.close(handle)
        try io.syncDirectory("/v1")
        var options = smallOptions("/v1", io: io, segmentBytes: 2048)
        options.preallocate = false
        var wal = try await WAL.open(options)
        #expect(try await readAll(wal).map(\.payload) == (1...3).map { Array("old \($0)".utf8) })
        #expect(try await wal.append(Array("v1 tail".utf8)) == 4)
        while wal.status.segments == 1 { try await wal.append(bytes(500, 7)) }
        try await wal.close()
        wal = try await WAL.open(options)
        let records = try await readAll(wal)
        #expect(records.prefix(4).map(\.payload) == (1...3).map { Array("old \($0)".utf8) } + [Array("v1 tail".utf8)])
        try await wal.close()
        let files = try io.list("/v1").filter { $0.hasSuffix(".wal") }.sorted()
        #expect(files.count == 2)
        let newest = io.contents(of: "/v1/" + files[1])!
        old = try SegmentHeader.decode(Array(newest.prefix(64)))
        #expect(old.version == SegmentHeader.currentVersion && old.layout == .v2)
        #expect(try SegmentHeader.decode(Array(io.contents(of: path)!.prefix(64))).version == 1)
        #expect(try verifyLog(directory: "/v1", io: io).damage == nil)
    }

    /// The last LSN a log can hand out is 2^64 − 2: appends beyond fail with `.exhausted`
    /// (they used to trap on the overflow of the next LSN), and the log stays usable.
    @Test func aLogAtTheEndOfTheLSNSpaceRefusesAppendsWithoutTrapping() async throws {
        let io = SimulatedFileIO()
        try io.createDirectory("/edge")
        let first = LSN.max - 2
        let header = SegmentHeader(logID: LogID.random(), firstLSN: first, previousFirstLSN: 0, createdMillis: 0)
        let path = "/edge/" + SegmentName.make(prefix: "wal-", firstLSN: first)
        let handle = try io.open(path, mode: .createExclusive)
        try io.write(handle, header.encoded(), at: 0, path: path)
        try io.syncData(handle, path: path)
        io.close(handle)
        try io.syncDirectory("/edge")
        var options = smallOptions("/edge", io: io)
        options.preallocate = false
        let wal = try await WAL.open(options)
        #expect(try await wal.append([1]) == LSN.max - 2)
        #expect(try await wal.append([2]) == LSN.max - 1)
        #expect(await walError { try await wal.append([3]) } == .exhausted(lastLSN: LSN.max - 1))
        #expect(await walError { try await wal.append(contentsOf: [[4], [5]], durability: .buffered) } == .exhausted(lastLSN: LSN.max - 1))
        #expect(try await readAll(wal).map(\.lsn) == [LSN.max - 2, LSN.max - 1])
        try await wal.close()
        let reopened = try await WAL.open(options)
        #expect(reopened.lastLSN == LSN.max - 1)
        try await reopened.close()
    }
}

/// Entries named like segments that are no regular files: open names them and changes nothing.
@Suite struct SegmentLookalikeRecoveryTests {
    @Test func aDirectoryNamedLikeASegmentStopsOpenWithItsPathOnASimulatedDisk() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io)
        let wal = try await WAL.open(options)
        try await wal.append([1])
        try await wal.close()
        try io.createDirectory("/wal/wal-00000000000000000002.wal")
        let before = try io.list("/wal").sorted()
        await #expect(throws: WALError.notASegmentFile(path: "/wal/wal-00000000000000000002.wal", type: .directory)) {
            try await WAL.open(options)
        }
        var repairing = options
        repairing.repair = true
        await #expect(throws: WALError.notASegmentFile(path: "/wal/wal-00000000000000000002.wal", type: .directory)) {
            try await WAL.open(repairing)
        }
        #expect(try io.list("/wal").sorted() == before)
    }

    @Test func aDirectoryNamedLikeATempSegmentIsNotRemovedButNamed() async throws {
        let dir = TempDirectory("lookalike")
        defer { dir.cleanup() }
        let options = smallOptions(dir.path)
        try await WAL.open(options).close()
        let path = dir.path + "/wal-prepared.tmp"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        await #expect(throws: WALError.notASegmentFile(path: path, type: .directory)) { try await WAL.open(options) }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    /// verifyLog lists segments the way open does: the look-alike is named (a FIFO would block
    /// a read for ever), and a leftover temp file is left where it is (verify only reads).
    @Test func verifyLogNamesALookalikeAndRemovesNothing() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io)
        let wal = try await WAL.open(options)
        try await wal.append([1])
        try await wal.close()
        let temp = try io.open("/wal/wal-prepared.tmp", mode: .createExclusive)
        io.close(temp)
        #expect(try verifyLog(directory: "/wal", io: io).damage == nil)
        #expect(try io.list("/wal").contains("wal-prepared.tmp"))
        try io.createDirectory("/wal/wal-00000000000000000002.wal")
        #expect(throws: WALError.notASegmentFile(path: "/wal/wal-00000000000000000002.wal", type: .directory)) {
            try verifyLog(directory: "/wal", io: io)
        }
    }

    @Test func theMessageSaysWhatTheEntryIsAndThatNothingChanged() {
        let error = WALError.notASegmentFile(path: "/data/wal-00000000000000000500.wal", type: .directory)
        #expect(error.description.hasPrefix("/data/wal-00000000000000000500.wal is a directory, not a segment file;"))
        #expect(!error.description.contains("repair"))
    }
}

@Suite struct RepairGenerationTests {
    /// A repair stopped by a power cut at any fdatasync (and after it ends) leaves either the
    /// damage (open refuses; repair again) or the log cut and in the next generation: never a
    /// cut log of the old generation, whose reused LSNs nobody could tell apart.
    @Test func aRepairCutShortAtAnyStepLeavesTheDamageOrTheNewGeneration() async throws {
        for damagedLSN in [3, 16] {  // an old (sealed) segment, then the last one
            let running = SimulatedFileIO()
            try running.createDirectory("/g")
            var options = smallOptions("/g", io: running, segmentBytes: 1024)
            options.preallocate = false
            let wal = try await WAL.open(options)
            for i in 1...20 { try await wal.append(bytes(100, UInt8(i))) }  // 7 to a segment, all durable
            // A crash, not a clean close: no CLEAN marker vouches for the end of the log.
            var crash = SplitMix64(seed: 7)
            let io = running.powerCut(using: &crash)
            try await wal.close()
            options.io = io
            let first = (damagedLSN - 1) / 7 * 7 + 1
            io.flipBit("/g/" + SegmentName.make(prefix: "wal-", firstLSN: LSN(first)),
                       at: 64 + (damagedLSN - first) * 124 + 24 + 5, bit: 1)

            let survivors = WALMutex<[SimulatedFileIO]>([])
            io.setSyncHook {
                survivors.withLock { list in
                    var rng = SplitMix64(seed: UInt64(list.count + 1))
                    list.append(io.powerCut(using: &rng))
                }
            }
            let repaired = try await WAL.repair(options)
            io.setSyncHook(nil)
            #expect(repaired.generation == 1 && repaired.lastLSN == LSN(damagedLSN - 1))
            var rng = SplitMix64(seed: 99)
            var openedCut = 0
            for survivor in survivors.withLock({ $0 }) + [io.powerCut(using: &rng)] {
                var reopen = options
                reopen.io = survivor
                do {
                    let log = try await WAL.open(reopen)
                    let status = log.status
                    try await log.close()
                    #expect(status.lastLSN == 20 || status.generation == 1,
                            "LSN \(damagedLSN): a cut log (last LSN \(status.lastLSN)) of generation \(status.generation)")
                    if status.generation == 1 { openedCut += 1 }
                } catch WALError.corruption {
                    // The damage is still there: open refuses, and a repair would run again.
                }
                // Repairing again, from wherever the cut stopped it, ends in the same log: the
                // records before the damage, in a generation above 0, nothing else cut.
                let again = try await WAL.repair(reopen)
                #expect(again.lastLSN == LSN(damagedLSN - 1) && again.generation >= 1,
                        "LSN \(damagedLSN): repaired again to last LSN \(again.lastLSN), generation \(again.generation)")
                #expect(try verifyLog(directory: "/g", io: survivor).damage == nil, "LSN \(damagedLSN): damage left after a second repair")
            }
            #expect(openedCut >= 1, "no survivor shows the finished repair")
        }
    }
}

/// `keepThrough`: a former primary rejoining a newer leader cuts the suffix the leader lacks.
@Suite struct SuffixCutTests {
    /// Cuts inside a segment, on a segment's first record, and inside the first segment; each
    /// time the records through the cut point stay, later ones are gone (kept in `.broken`
    /// files), the generation stays and the next append gets the next LSN.
    @Test(arguments: [LSN(30), LSN(0), LSN(5)])
    func openWithKeepThroughCutsTheSuffixAndKeepsCopies(keepChoice: LSN) async throws {
        let log = FixedLog()
        try await log.write(200, stop: .crash)
        let segments = log.segments
        try #require(segments.count >= 3)
        // 0 picks the first record of the second-to-last segment (the cut on a segment boundary).
        let keep = keepChoice == 0 ? segments[segments.count - 2].firstLSN - 1 : keepChoice
        var options = log.options
        options.keepThrough = keep
        let wal = try await WAL.open(options)
        let generation = wal.generation
        #expect(wal.lastLSN == keep)
        #expect(generation == 0)
        let records = try await readAll(wal)
        #expect(records.map(\.lsn) == Array(1...keep))
        #expect(records.allSatisfy { $0.payload == FixedLog.payload($0.lsn) })
        #expect(try await wal.append(FixedLog.payload(999)) == keep + 1)
        try await wal.close()
        let names = try FileManager.default.contentsOfDirectory(atPath: log.dir.path)
        #expect(names.contains { $0.contains(".broken") })
        // The copies hold the cut records: the last one's payload is in one of them.
        let last = FixedLog.payload(200)
        let copies = names.filter { $0.contains(".broken") }.map { log.read(log.dir.path + "/" + $0) }
        #expect(copies.contains { copy in copy.count >= last.count && (0...(copy.count - last.count)).contains { Array(copy[$0..<($0 + last.count)]) == last } })
        // Opening again keeping through the appended record changes nothing more.
        options.keepThrough = keep + 1
        let again = try await WAL.open(options)
        #expect(again.lastLSN == keep + 1)
        try await again.close()
    }

    @Test func keepThroughBeyondTheEndChangesNothing() async throws {
        let log = FixedLog()
        try await log.write(10, stop: .clean)
        var options = log.options
        options.keepThrough = 50
        let wal = try await WAL.open(options)
        #expect(wal.lastLSN == 10)
        try await wal.close()
        let names = try FileManager.default.contentsOfDirectory(atPath: log.dir.path)
        #expect(!names.contains { $0.contains(".broken") })
    }
}

/// `ha-term`: read back what was written; garbage is corruption naming the file, and a failed
/// read changes nothing in the directory.
@Suite struct TermFileTests {
    @Test func aWrittenTermReadsBackAndGarbageIsCorruption() throws {
        let dir = TempDirectory("term")
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
        #expect(try TermFile.read(directory: dir.path) == 0)
        try TermFile.write(7, directory: dir.path)
        #expect(try TermFile.read(directory: dir.path) == 7)
        for garbage in ["", "7", "x\n", "-1\n", "18446744073709551616\n"] {
            #expect(FileManager.default.createFile(atPath: dir.path + "/ha-term", contents: Data(garbage.utf8)))
            #expect(throws: WALError.self) { try TermFile.read(directory: dir.path) }
            #expect(FileManager.default.contents(atPath: dir.path + "/ha-term") == Data(garbage.utf8))
        }
    }
}
