// Damage on real files: a torn tail is a crash artifact that open cuts; anything else is
// corruption that open, readers and verifyLog report with file, offset and LSN, and that
// repair cuts while keeping a `.broken` copy.
import Foundation
import Testing
@testable import WALCore

/// A log on real files whose records all have `payloadSize` bytes, so offsets are computable.
struct FixedLog {
    static let payloadSize = 50
    static let frameSize = RecordFrame.headerSize + payloadSize
    let dir = TempDirectory("recovery")
    var options: WALOptions

    init(preallocate: Bool = true) {
        options = smallOptions(dir.path)
        options.preallocate = preallocate
        options.logger.logLevel = .critical
    }

    static func payload(_ lsn: LSN) -> [UInt8] { WALCoreTests.payload(lsn, size: payloadSize) }

    /// Appends records 1...count durably and closes the log.
    func write(_ count: Int) async throws {
        let wal = try await WAL.open(options)
        for lsn in LSN(1)...LSN(count) { try await wal.append(Self.payload(lsn)) }
        try await wal.close()
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

    func write(_ path: String, _ bytes: [UInt8]) { FileManager.default.createFile(atPath: path, contents: Data(bytes)) }

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
        try await log.write(100)
        let (segment, offset) = log.location(of: 100)
        let path = log.path(segment)
        // The last record's frame loses its last 20 bytes, as a crash mid-write leaves it.
        var bytes = log.read(path)
        if preallocate {
            for i in (offset + FixedLog.frameSize - 20)..<(offset + FixedLog.frameSize) { bytes[i] = 0 }
        } else {
            bytes.removeLast(bytes.count - (offset + FixedLog.frameSize - 20))
        }
        log.write(path, bytes)
        let report = try verifyLog(directory: log.dir.path)
        #expect(report.damage == nil)
        #expect(report.tornTail?.file == path)
        #expect(report.tornTail?.offset == offset)
        #expect(report.tornTail?.lsn == 100)

        let wal = try await WAL.open(log.options)
        #expect(wal.lastLSN == 99)
        #expect(try await wal.append([7, 7]) == 100)
        try await wal.close()
        let records = try await log.records()
        #expect(records.count == 100)
        #expect(records.last == Record(lsn: 100, payload: [7, 7]))
        #expect(records.dropLast().allSatisfy { $0.payload == FixedLog.payload($0.lsn) })
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

    @Test func theMessageSaysWhatTheEntryIsAndThatNothingChanged() {
        let error = WALError.notASegmentFile(path: "/data/wal-00000000000000000500.wal", type: .directory)
        #expect(error.description.hasPrefix("/data/wal-00000000000000000500.wal is a directory, not a segment file;"))
        #expect(!error.description.contains("repair"))
    }
}
