// Shared helpers for WALCore tests: temporary directories and small option sets.
import Foundation
import Logging
import WALCore

/// A fresh directory under the system temp dir, removed by `cleanup()`.
struct TempDirectory {
    let path: String

    init(_ label: String = "walcore") {
        path = NSTemporaryDirectory() + "\(label)-\(UUID().uuidString)"
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// Options with small segments so tests rotate often.
func smallOptions(_ directory: String, io: any FileIO = PosixFileIO(), segmentBytes: Int = 4096) -> WALOptions {
    var options = WALOptions(directory: directory)
    options.io = io
    options.maxSegmentBytes = segmentBytes
    options.maxRecordBytes = 1024
    options.flushInterval = .zero
    options.logger.logLevel = .warning
    return options
}

/// `options` with a logger that drops everything, for tests that make the engine log
/// critical errors on purpose (failed fsyncs, full disks).
func quiet(_ options: WALOptions) -> WALOptions {
    var options = options
    options.logger = Logger(label: "wal-test") { _ in SwiftLogNoOpLogHandler() }
    return options
}

func payload(_ lsn: UInt64, seed: UInt64 = 0, size: Int? = nil) -> [UInt8] {
    var rng = SplitMix64(seed: lsn &* 0x9E37_79B9_7F4A_7C15 ^ seed)
    let count = size ?? Int(rng.next() % 200)
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

/// A small deterministic generator so failures reproduce from a printed seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func readAll(_ wal: WAL, from lsn: UInt64 = 0) async throws -> [Record] {
    let reader = try wal.reader(from: lsn)
    var records: [Record] = []
    while let record = try reader.next() { records.append(record) }
    return records
}
