// Rotation boundaries: batches are never split across segments, and a batch larger than a
// whole segment gets a segment of its own that recovery and readers handle like any other.
import Testing
@testable import WALCore

@Suite struct RotationTests {
    @Test(arguments: [true, false])
    func batchLargerThanASegmentGetsItsOwnSegment(preallocate: Bool) async throws {
        let io = SimulatedFileIO()
        var options = smallOptions("/wal", io: io, segmentBytes: 2048)
        options.preallocate = preallocate
        options.maxRecordBytes = 4096
        var wal = try await WAL.open(options)
        try await wal.append([1])
        let big = [bytes(3000, 2), bytes(1500, 3)]
        #expect(try await wal.append(contentsOf: big) == 2)
        #expect(wal.status.segments == 2)  // rotated before the batch, not inside it
        #expect(try await wal.append([4]) == 4)
        #expect(wal.status.segments == 3)
        try await wal.close()
        wal = try await WAL.open(options)
        #expect(try await readAll(wal).map(\.payload) == [[1]] + big + [[4]])
        try await wal.close()
    }

    @Test func batchesAreNeverSplitAcrossSegments() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io, segmentBytes: 2048)
        let wal = try await WAL.open(options)
        var rng = SplitMix64(seed: 5)
        var batches: [(first: LSN, count: Int)] = []
        for _ in 0..<150 {
            let batch = randomBatch(&rng)
            batches.append((try await wal.append(contentsOf: batch, durability: .buffered), batch.count))
        }
        try await wal.sync()
        let starts = try segmentFiles(io).map { SegmentName.parse($0, prefix: "wal-")! }
        #expect(starts.count > 10)
        for start in starts.dropFirst() {
            // Every segment starts at the first LSN of some batch.
            #expect(batches.contains { $0.first == start }, "segment at \(start) starts inside a batch")
        }
        try await wal.close()
    }
}
