// The engine's everyday behaviour on real files: LSNs, durability, rotation, reopening.
import Foundation
import Testing
@testable import WALCore

@Suite struct WALBasicsTests {
    @Test func firstRecordIsLSNOneAndLSNsAreDense() async throws {
        let dir = TempDirectory()
        defer { dir.cleanup() }
        let wal = try await WAL.open(smallOptions(dir.path))
        #expect(try await wal.append([1, 2, 3]) == 1)
        #expect(try await wal.append(contentsOf: [[4], [5], [6]]) == 2)
        #expect(try await wal.append([7], durability: .buffered) == 5)
        #expect(try await wal.sync() == 5)
        let records = try await readAll(wal)
        #expect(records.map(\.lsn) == [1, 2, 3, 4, 5])
        #expect(records.map(\.payload) == [[1, 2, 3], [4], [5], [6], [7]])
        try await wal.close()
    }

    @Test func recordsSurviveReopenAcrossRotations() async throws {
        let dir = TempDirectory()
        defer { dir.cleanup() }
        var wal = try await WAL.open(smallOptions(dir.path))
        for lsn in UInt64(1)...300 {
            #expect(try await wal.append(payload(lsn)) == lsn)
        }
        let segments = wal.status.segments
        #expect(segments > 5)
        try await wal.close()
        wal = try await WAL.open(smallOptions(dir.path))
        #expect(wal.lastLSN == 300)
        let records = try await readAll(wal, from: 123)
        #expect(records.count == 178)
        for record in records { #expect(record.payload == payload(record.lsn)) }
        #expect(try await wal.append([9]) == 301)
        try await wal.close()
    }
}
