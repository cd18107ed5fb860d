// Which segments go (maxSegments, retentionBytes, truncate(before:)), which stay (the active
// one, held ones, ones an open reader needs), and what readers see while the log moves.
import Foundation
import Testing
@testable import WALCore

/// Opens a simulated log with 2 KiB segments and appends `count` 100-byte records durably.
func filledLog(_ count: Int, configure: (inout WALOptions) -> Void = { _ in }) async throws -> (WAL, SimulatedFileIO) {
    let io = SimulatedFileIO()
    var options = smallOptions("/wal", io: io, segmentBytes: 2048)
    configure(&options)
    let wal = try await WAL.open(options)
    for lsn in LSN(1)...LSN(count) { try await wal.append(payload(lsn, size: 100)) }
    return (wal, io)
}

func segmentFiles(_ io: SimulatedFileIO) throws -> [String] {
    try io.list("/wal").filter { SegmentName.parse($0, prefix: "wal-") != nil }.sorted()
}

@Suite struct RetentionPolicyTests {
    @Test func maxSegmentsKeepsAtMostThatMany() async throws {
        let (wal, io) = try await filledLog(1) { $0.maxSegments = 3 }
        var lsn: LSN = 2
        while wal.status.segments < 3 {
            try await wal.append(payload(lsn, size: 100))
            lsn += 1
        }
        for _ in 0..<200 {
            try await wal.append(payload(lsn, size: 100))
            lsn += 1
            #expect(wal.status.segments <= 3)
        }
        let status = wal.status
        #expect(status.firstLSN > 1)
        let records = try await readAll(wal)
        #expect(records.map(\.lsn) == Array(status.firstLSN...status.lastLSN))
        #expect(records.allSatisfy { $0.payload == payload($0.lsn, size: 100) })
        try await wal.close()
        // Dropped segments are unlinked on the housekeeping queue; close waits for it.
        #expect(try segmentFiles(io).count == 3)
    }

    @Test func retentionBytesDeletesTheOldestSegments() async throws {
        let (wal, io) = try await filledLog(1) { $0.retentionBytes = 3 * 2048; $0.preallocate = false }
        for lsn in LSN(2)...LSN(300) {
            try await wal.append(payload(lsn, size: 100))
            let status = wal.status
            // Retention runs at rotation: the closed segments plus the new one fit the budget,
            // and the active one grows by less than a segment until the next rotation.
            #expect(status.bytes <= 4 * 2048, "at LSN \(lsn)")
        }
        let status = wal.status
        #expect(status.firstLSN > 1)
        #expect(try await readAll(wal).count == Int(status.lastLSN - status.firstLSN + 1))
        try await wal.close()
        // Dropped segments are unlinked on the housekeeping queue (counted while open, a file
        // could still be there); close waits for it.
        #expect(try segmentFiles(io).count == status.segments)
    }

    @Test func truncateDeletesWholeSegmentsBelowTheLSNAndReturnsTheFirst() async throws {
        let (wal, io) = try await filledLog(200)
        let segments = try segmentFiles(io).map { SegmentName.parse($0, prefix: "wal-")! }
        #expect(segments.count >= 6)
        // At or below the first LSN: nothing happens.
        #expect(try await wal.truncate(before: 0) == 1)
        #expect(try await wal.truncate(before: 1) == 1)
        // Exactly at a segment start: the segments before it go.
        #expect(try await wal.truncate(before: segments[2]) == segments[2])
        #expect(try segmentFiles(io).count == segments.count - 2)
        // Inside a segment: that segment stays, since it holds LSNs at or above the point.
        #expect(try await wal.truncate(before: segments[3] + 2) == segments[3])
        // Going back is a no-op.
        #expect(try await wal.truncate(before: segments[1]) == segments[3])
        #expect(wal.status.firstLSN == segments[3])
        #expect(try await readAll(wal).first?.lsn == segments[3])
        try await wal.close()
    }

    @Test func truncateBeyondDurablePlusOneIsOutOfRange() async throws {
        let (wal, _) = try await filledLog(10)
        try await wal.append([1], durability: .buffered)  // LSN 11, not durable
        #expect(await walError { try await wal.truncate(before: 12) } == .outOfRange(lsn: 12, first: 1, last: 10))
        #expect(try await wal.truncate(before: 11) == 1)  // durable + 1 is allowed
        try await wal.close()
    }

    @Test func activeSegmentIsNeverDeleted() async throws {
        let (wal, io) = try await filledLog(200)
        let last = wal.lastLSN
        let first = try await wal.truncate(before: last + 1)
        let files = try segmentFiles(io)
        #expect(files == [SegmentName.make(prefix: "wal-", firstLSN: first)])
        #expect(wal.status.segments == 1)
        #expect(try await readAll(wal).map(\.lsn) == Array(first...last))
        #expect(try await wal.append([1]) == last + 1)
        try await wal.close()
    }

    @Test func truncationSurvivesReopen() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io, segmentBytes: 2048)
        var wal = try await WAL.open(options)
        for lsn in LSN(1)...200 { try await wal.append(payload(lsn, size: 100)) }
        let first = try await wal.truncate(before: 150)
        try await wal.close()
        wal = try await WAL.open(options)
        #expect(wal.status.firstLSN == first)
        #expect(try await readAll(wal).map(\.lsn) == Array(first...200))
        try await wal.close()
    }

    @Test func holdKeepsSegmentsUntilReleased() async throws {
        let (wal, _) = try await filledLog(200)
        let hold = wal.hold(from: 50)
        let held = try await wal.truncate(before: 201)
        #expect(held <= 50)
        #expect(held > 1)  // segments wholly below the hold still go
        #expect(try wal.reader(from: 50).next()?.lsn == 50)
        hold.move(to: 120)
        let moved = try await wal.truncate(before: 201)
        #expect(moved > held && moved <= 120)
        hold.release()
        let released = try await wal.truncate(before: 201)
        #expect(released > 120)
        try await wal.close()
    }

    @Test func holdKeepsSegmentsFromMaxSegmentsRetention() async throws {
        let (wal, _) = try await filledLog(1) { $0.maxSegments = 2 }
        let hold = wal.hold(from: 1)
        for lsn in LSN(2)...LSN(200) { try await wal.append(payload(lsn, size: 100)) }
        #expect(wal.status.firstLSN == 1)
        #expect(wal.status.segments > 2)
        hold.release()
        try await wal.append([0])  // retention runs at the next rotation or update
        try wal.update(wal.options)
        #expect(wal.status.segments == 2)
        try await wal.close()
    }

    @Test func openReaderKeepsItsSegments() async throws {
        let (wal, _) = try await filledLog(200)
        var reader: LogReader? = try wal.reader(from: 3)
        #expect(try await wal.truncate(before: 201) == 1)
        var lsns: [LSN] = []
        while let record = try reader!.next() { lsns.append(record.lsn) }
        #expect(lsns == Array(3...200))
        // A reader at the end holds only its current (the last) segment.
        let last = try await wal.truncate(before: 201)
        #expect(last > 3)
        reader = nil
        try await wal.close()
    }

    @Test func slowReaderKeepsSegmentsFromMaxSegmentsRetention() async throws {
        let (wal, io) = try await filledLog(1) { $0.maxSegments = 2 }
        let reader = try wal.reader(from: 1)
        #expect(try reader.next()?.lsn == 1)
        for lsn in LSN(2)...LSN(300) { try await wal.append(payload(lsn, size: 100)) }
        #expect(wal.status.firstLSN == 1)  // the reader is still in the first segment
        var lsns: [LSN] = [1]
        while let record = try reader.next() {
            #expect(record.payload == payload(record.lsn, size: 100))
            lsns.append(record.lsn)
        }
        #expect(lsns == Array(1...300))
        // Caught up, the reader holds only the active segment: the next rotation trims to 2.
        while try segmentFiles(io).count > 2 { try await wal.append(payload(0, size: 100)) }
        #expect(wal.status.segments == 2)
        try await wal.close()
    }

    @Test func readingATruncatedAwayLSNIsOutOfRangeNamingTheFirst() async throws {
        let (wal, _) = try await filledLog(200)
        let first = try await wal.truncate(before: 150)
        #expect(first > 1)
        #expect(await walError { try wal.reader(from: 1) } == .outOfRange(lsn: 1, first: first, last: 200))
        #expect(await walError { try wal.reader(from: first - 1) } == .outOfRange(lsn: first - 1, first: first, last: 200))
        #expect(await walError { try wal.reader(from: 202) } == .outOfRange(lsn: 202, first: first, last: 200))
        #expect(try wal.reader(from: 0).next()?.lsn == first)  // 0 = the first available
        #expect(try wal.reader(from: 201).next() == nil)  // last + 1 is where a tail starts
        try await wal.close()
    }
}

@Suite struct ReaderTests {
    @Test func readerSeesOnlyDurableRecords() async throws {
        let (wal, _) = try await filledLog(3)
        try await wal.append(contentsOf: [[4], [5]], durability: .buffered)
        let reader = try wal.reader(from: 1)
        var lsns: [LSN] = []
        while let record = try reader.next() { lsns.append(record.lsn) }
        #expect(lsns == [1, 2, 3])
        #expect(try reader.next() == nil)
        try await wal.sync()
        #expect(try reader.next() == Record(lsn: 4, payload: [4]))
        #expect(try reader.next() == Record(lsn: 5, payload: [5]))
        #expect(try reader.next() == nil)
        try await wal.close()
    }

    @Test(arguments: [true, false])
    func readerStartedMidSegment(preallocate: Bool) async throws {
        let (wal, io) = try await filledLog(100) { $0.preallocate = preallocate }
        let starts = try segmentFiles(io).map { SegmentName.parse($0, prefix: "wal-")! }
        for start in [2, starts[1] + 5, starts[2] - 1, starts.last!, 100] {
            let records = try await readAll(wal, from: start)
            #expect(records.map(\.lsn) == Array(start...100), "from \(start)")
            #expect(records.allSatisfy { $0.payload == payload($0.lsn, size: 100) })
        }
        try await wal.close()
    }

    @Test func readBatchStopsWhenTheBodySaysSo() async throws {
        let (wal, _) = try await filledLog(20)
        let reader = try wal.reader(from: 1)
        var seen: [LSN] = []
        #expect(try reader.read(maxCount: 5) { lsn, _ in seen.append(lsn); return true } == 5)
        #expect(try reader.read { lsn, _ in seen.append(lsn); return lsn < 8 } == 3)
        #expect(reader.nextLSN == 9)
        #expect(try reader.read { lsn, bytes in seen.append(lsn); return Array(bytes) == payload(lsn, size: 100) } == 12)
        #expect(seen == Array(1...20))
        try await wal.close()
    }

    /// A live tail: one task appends (mixing durable, buffered + sync, and batches) across many
    /// rotations while a reader follows with waitForDurable and must see every record once, in order.
    @Test(arguments: [true, false])
    func readerFollowsAcrossRotationWhileAppendsContinue(preallocate: Bool) async throws {
        let io = SimulatedFileIO()
        var options = smallOptions("/wal", io: io, segmentBytes: 2048)
        options.preallocate = preallocate
        let wal = try await WAL.open(options)
        let total: LSN = 600
        let reader = try wal.reader(from: 1)
        async let appended: Void = {
            var rng = SplitMix64(seed: 77)
            var lsn: LSN = 1
            while lsn <= total {
                let count = min(LSN.random(in: 1...4, using: &rng), total - lsn + 1)
                let batch = (lsn..<(lsn + count)).map { payload($0) }
                if Bool.random(using: &rng) {
                    try await wal.append(contentsOf: batch)
                } else {
                    try await wal.append(contentsOf: batch, durability: .buffered)
                    try await wal.sync()
                }
                lsn += count
            }
        }()
        var seen: [Record] = []
        while seen.count < total {
            _ = try await wal.waitForDurable(beyond: reader.nextLSN - 1)
            while let record = try reader.next() { seen.append(record) }
        }
        try await appended
        #expect(seen.map(\.lsn) == Array(1...total))
        #expect(seen.allSatisfy { $0.payload == payload($0.lsn) })
        #expect(wal.status.segments > 10)
        try await wal.close()
    }

    @Test func readerOnARealFileFollowsAppends() async throws {
        let dir = TempDirectory()
        defer { dir.cleanup() }
        let wal = try await WAL.open(smallOptions(dir.path, segmentBytes: 2048))
        let reader = try wal.reader(from: 1)
        for lsn in LSN(1)...60 {
            try await wal.append(payload(lsn))
            #expect(try reader.next() == Record(lsn: lsn, payload: payload(lsn)))
            #expect(try reader.next() == nil)
        }
        try await wal.close()
    }

    @Test func waitForDurableWakesAfterADurableAppend() async throws {
        let (wal, _) = try await filledLog(2)
        async let woken = wal.waitForDurable(beyond: 2)
        try await wal.append([3], durability: .buffered)
        try await wal.append([4])
        #expect(try await woken >= 3)
        #expect(try await wal.waitForDurable(beyond: 3) == 4)  // already durable: returns at once
        try await wal.close()
    }

    @Test func waitForDurableIsCancellable() async throws {
        let (wal, _) = try await filledLog(1)
        let waiter = Task { try await wal.waitForDurable(beyond: 100) }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        try await wal.close()
    }

    @Test func waitForDurableEndsWhenTheLogCloses() async throws {
        let (wal, _) = try await filledLog(1)
        let waiter = Task { try await wal.waitForDurable(beyond: 100) }
        try await wal.close()
        // Either it was registered and failed at close, or it registered after and was stopped.
        await #expect(throws: (any Error).self) { try await waiter.value }
    }

    @Test func replayDeliversEveryDurableRecord() async throws {
        let (wal, _) = try await filledLog(50)
        var lsns: [LSN] = []
        try wal.replay(from: 10) { lsn, bytes in
            #expect(bytes == payload(lsn, size: 100))
            lsns.append(lsn)
        }
        #expect(lsns == Array(10...50))
        try await wal.close()
    }
}

@Suite struct RetentionPlanTests {
    static func segments(_ firsts: [LSN]) -> [SegmentInfo] {
        firsts.map { SegmentInfo(firstLSN: $0, name: SegmentName.make(prefix: "wal-", firstLSN: $0)) }
    }
    static let four = segments([1, 11, 21, 31])
    static let sizes: [LSN: Int] = [1: 100, 11: 100, 21: 100]

    static func plan(
        _ segments: [SegmentInfo] = four, active: Int = 50, maxSegments: Int = 0, retentionBytes: Int = 0,
        truncateBefore: LSN? = nil, hold: LSN? = nil
    ) -> Int {
        Retention.segmentsToDelete(segments: segments, sizes: sizes, activeBytes: active, maxSegments: maxSegments,
                                   retentionBytes: retentionBytes, truncateBefore: truncateBefore, lowestHold: hold)
    }

    @Test func noLimitsDeleteNothing() {
        #expect(Self.plan() == 0)
    }

    @Test func aSingleSegmentIsNeverDeleted() {
        let one = Self.segments([1])
        #expect(Self.plan(one, maxSegments: 1, retentionBytes: 1, truncateBefore: 1000) == 0)
        #expect(Self.plan([], maxSegments: 1) == 0)
    }

    @Test func maxSegmentsDeletesTheExcess() {
        #expect(Self.plan(maxSegments: 4) == 0)
        #expect(Self.plan(maxSegments: 3) == 1)
        #expect(Self.plan(maxSegments: 1) == 3)
    }

    @Test func retentionBytesDeletesUntilTheRestFits() {
        // Total 350: 3 closed × 100 + 50 active.
        #expect(Self.plan(retentionBytes: 350) == 0)
        #expect(Self.plan(retentionBytes: 349) == 1)
        #expect(Self.plan(retentionBytes: 250) == 1)
        #expect(Self.plan(retentionBytes: 150) == 2)
        #expect(Self.plan(retentionBytes: 1) == 3)  // never the active one
    }

    @Test func truncateDeletesSegmentsWhollyBelowTheLSN() {
        #expect(Self.plan(truncateBefore: 1) == 0)
        #expect(Self.plan(truncateBefore: 10) == 0)
        #expect(Self.plan(truncateBefore: 11) == 1)
        #expect(Self.plan(truncateBefore: 25) == 2)
        #expect(Self.plan(truncateBefore: 31) == 3)
        #expect(Self.plan(truncateBefore: 1000) == 3)
    }

    @Test func theStrictestRuleWins() {
        #expect(Self.plan(maxSegments: 3, truncateBefore: 25) == 2)
        #expect(Self.plan(maxSegments: 1, truncateBefore: 11) == 3)
        #expect(Self.plan(retentionBytes: 250, truncateBefore: 21) == 2)
    }

    @Test func holdsLimitEveryRule() {
        #expect(Self.plan(maxSegments: 1, hold: 1) == 0)
        #expect(Self.plan(maxSegments: 1, hold: 10) == 0)
        #expect(Self.plan(maxSegments: 1, hold: 11) == 1)
        #expect(Self.plan(truncateBefore: 1000, hold: 25) == 2)
        #expect(Self.plan(retentionBytes: 1, hold: 31) == 3)
        #expect(Self.plan(retentionBytes: 1, hold: 1000) == 3)
        #expect(Self.plan(hold: 5) == 0)
    }
}
