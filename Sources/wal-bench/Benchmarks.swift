// The measurements themselves, each on a fresh log in its own directory. Hot loops live in
// functions (not top-level code), and every figure comes from this run.
import WALCore

struct BenchConfig {
    var base = "/tmp"
    var quick = false
    var bufferedCount: Int { quick ? 300_000 : 3_000_000 }
    var durableCount: Int { quick ? 2_000 : 3_000 }
    var durableRounds: Int { quick ? 1 : 3 }
    var concurrentWriters = 64
    var concurrentCount: Int { quick ? 32_000 : 192_000 }
    var replayBytes: Int { quick ? 256 << 20 : 1 << 30 }
    var crcBytes = 64 << 20
    /// Wait after opening before the durable measurement (lets the background preparation
    /// of the next segment finish; 0 = measure at once, as a freshly started server would).
    var settle: Duration = .zero
    /// Run only the measurements whose letters are listed (a–e); empty = all.
    var only: Set<Character> = []

    func runs(_ letter: Character) -> Bool { only.isEmpty || only.contains(letter) }
}

func benchOptions(_ directory: String) -> WALOptions {
    var options = WALOptions(directory: directory)
    options.logger.logLevel = .warning
    return options
}

/// (a) Buffered appends of 100-byte records from one task, one per call or 16 per call.
/// The time includes the final sync, so every record counted reached the disk.
func bufferedAppends(_ config: BenchConfig, batch: Int) async throws -> Double {
    let dir = BenchDirectory(base: config.base, label: "buffered")
    defer { dir.remove() }
    let wal = try await WAL.open(benchOptions(dir.path))
    let record = [UInt8](repeating: 0x42, count: 100)
    let count = config.bufferedCount / batch * batch
    let elapsed: Double
    if batch == 1 {
        elapsed = try await measure {
            for _ in 0..<count { try await wal.append(record, durability: .buffered) }
            try await wal.sync()
        }
    } else {
        let records = [[UInt8]](repeating: record, count: batch)
        elapsed = try await measure {
            for _ in 0..<(count / batch) { try await wal.append(contentsOf: records, durability: .buffered) }
            try await wal.sync()
        }
    }
    let last = wal.lastLSN
    try await wal.close()
    guard last == UInt64(count) else { throw BenchError.check("buffered: expected \(count) records, log has \(last)") }
    return Double(count) / elapsed
}

struct DurableResult {
    var seconds: Double
    /// Time the sync thread spent inside fdatasync, and how many it ran.
    var syncSeconds: Double
    var syncs: UInt64
}

/// (b) Durable appends from one writer, one record per call.
func durableSingleWriter(_ config: BenchConfig, count: Int) async throws -> DurableResult {
    let dir = BenchDirectory(base: config.base, label: "durable")
    defer { dir.remove() }
    let wal = try await WAL.open(benchOptions(dir.path))
    if config.settle > .zero { try await Task.sleep(for: config.settle) }
    let record = [UInt8](repeating: 0x42, count: 100)
    let before = wal.status.syncStats
    let elapsed = try await measure {
        for _ in 0..<count { try await wal.append(record) }
    }
    let after = wal.status.syncStats
    try await wal.close()
    return DurableResult(seconds: elapsed, syncSeconds: Double(after.syncNanos - before.syncNanos) / 1e9,
                         syncs: after.syncs - before.syncs)
}

/// (b) The raw loop, in its own directory on the same file system.
func rawReference(_ config: BenchConfig, count: Int) throws -> Double {
    let dir = BenchDirectory(base: config.base, label: "raw")
    defer { dir.remove() }
    return try rawDurableWrites(directory: dir.path, count: count, size: 100)
}

struct ConcurrentResult {
    var appendsPerSecond: Double
    var recordsPerSync: Double
    var syncs: UInt64
}

/// (c) Many writer tasks doing durable 100-byte appends at once (group commit).
func concurrentDurable(_ config: BenchConfig) async throws -> ConcurrentResult {
    let dir = BenchDirectory(base: config.base, label: "concurrent")
    defer { dir.remove() }
    let wal = try await WAL.open(benchOptions(dir.path))
    let writers = config.concurrentWriters
    let perWriter = config.concurrentCount / writers
    let before = wal.status.syncStats
    let elapsed = try await measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    let record = [UInt8](repeating: 0x42, count: 100)
                    for _ in 0..<perWriter { try await wal.append(record) }
                }
            }
            try await group.waitForAll()
        }
    }
    let after = wal.status.syncStats
    try await wal.close()
    let syncs = after.syncs - before.syncs
    let records = after.recordsSynced - before.recordsSynced
    return ConcurrentResult(appendsPerSecond: Double(writers * perWriter) / elapsed,
                            recordsPerSync: syncs == 0 ? 0 : Double(records) / Double(syncs), syncs: syncs)
}

struct ReplayResult {
    var bytesPerSecond: Double
    var bytes: Int
    var before: (rss: Int, peak: Int)
    var after: (rss: Int, peak: Int)
}

/// (d) Zero-copy replay of 4 KiB records that are in the page cache (just written).
func replay(_ config: BenchConfig) async throws -> ReplayResult {
    let dir = BenchDirectory(base: config.base, label: "replay")
    defer { dir.remove() }
    let wal = try await WAL.open(benchOptions(dir.path))
    var record = [UInt8](repeating: 0, count: 4096)
    for index in record.indices { record[index] = UInt8(truncatingIfNeeded: index &* 31) }
    let records = [[UInt8]](repeating: record, count: 64)
    let count = config.replayBytes / 4096 / 64 * 64
    for _ in 0..<(count / 64) { try await wal.append(contentsOf: records, durability: .buffered) }
    try await wal.sync()
    let before = memoryKiB()
    var bytes = 0
    var checksum: UInt64 = 0
    var delivered = 0
    let reader = try wal.reader(from: 1)
    let elapsed = try await measure {
        delivered = try reader.read { _, payload in
            bytes += payload.count
            checksum &+= UInt64(payload[payload.count - 1])  // Touch the bytes so nothing is elided.
            return true
        }
    }
    let after = memoryKiB()
    try await wal.close()
    guard delivered == count, checksum != 0 else {
        throw BenchError.check("replay: read \(delivered) of \(count) records")
    }
    return ReplayResult(bytesPerSecond: Double(bytes) / elapsed, bytes: bytes, before: before, after: after)
}

/// (e) CRC32C throughput over one buffer, best of a few passes: (hardware, software) bytes/s.
func crcThroughput(_ config: BenchConfig) -> (hardware: Double?, software: Double) {
    var generator = SystemRandomNumberGenerator()
    let buffer = (0..<(config.crcBytes / 8)).map { _ in generator.next() as UInt64 }
    return buffer.withUnsafeBytes { bytes in
        var sink: UInt32 = 0
        func best(_ passes: Int, _ body: () -> UInt32) -> Double {
            var fastest = Double.infinity
            for _ in 0..<passes {
                let start = ContinuousClock.now
                sink ^= body()
                fastest = min(fastest, seconds(ContinuousClock.now - start))
            }
            return Double(bytes.count) / fastest
        }
        let hardware = CRC32C.hardwareAvailable ? best(5) { CRC32C.checksum(bytes) } : nil
        let software = best(3) { CRC32C.softwareChecksum(bytes) }
        if sink == 0x1234_5678 { print("") }  // Keeps the checksums alive.
        return (hardware, software)
    }
}
