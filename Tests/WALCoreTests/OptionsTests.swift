// The bounds of WALOptions: a value out of range is refused by open and update with
// `invalidOptions` naming it, never a trap later in a timer or the slow-sync check.
import Testing
@testable import WALCore

@Suite struct OptionsTests {
    private func options(flushInterval: Duration = .milliseconds(10), slowSyncThreshold: Duration = .seconds(1)) -> WALOptions {
        var options = smallOptions("/wal", io: SimulatedFileIO())
        options.flushInterval = flushInterval
        options.slowSyncThreshold = slowSyncThreshold
        return options
    }

    @Test(arguments: [Duration.seconds(Int64.max), .seconds(31_536_001), .seconds(Int64(1) << 40)])
    func aFlushIntervalOrSlowSyncThresholdBeyondAYearIsRefusedNotATrap(duration: Duration) async throws {
        await #expect(throws: WALError.invalidOptions("flushInterval must be between 0 and a year")) {
            try await WAL.open(options(flushInterval: duration))
        }
        await #expect(throws: WALError.invalidOptions("slowSyncThreshold must be between 0 and a year")) {
            try await WAL.open(options(slowSyncThreshold: duration))
        }
    }

    @Test func aNegativeSlowSyncThresholdIsRefused() async {
        await #expect(throws: WALError.invalidOptions("slowSyncThreshold must be between 0 and a year")) {
            try await WAL.open(options(slowSyncThreshold: .seconds(-1)))
        }
    }

    @Test func aYearIsAcceptedAndAnUpdateBeyondItLeavesTheRunningOptions() async throws {
        let wal = try await WAL.open(options(flushInterval: .seconds(31_536_000), slowSyncThreshold: .seconds(31_536_000)))
        #expect(throws: WALError.invalidOptions("flushInterval must be between 0 and a year")) {
            try wal.update(options(flushInterval: .seconds(Int64.max)))
        }
        #expect(try await wal.append([1]) == 1)
        try await wal.close()
    }
}
