// wal-bench: measures the engine against its targets and against a raw pwrite+fdatasync loop
// on the same file system in the same run, and prints one markdown table.
//
//   wal-bench [--quick] [--only LETTERS] [--settle-ms MS] [--dir BASE]
//     --quick      short run;  --only abcde  run only those measurements (for profiling)
//     --settle-ms  wait after opening before the durable single-writer measurement
//     BASE defaults to /tmp. Build with -c release.
import Foundation
import WALCore

struct Row {
    var metric: String
    var value: String
    var target: String
    var verdict: String
}

func rate(_ perSecond: Double) -> String {
    perSecond >= 1e6 ? String(format: "%.2f M/s", perSecond / 1e6) : String(format: "%.1f k/s", perSecond / 1e3)
}

func gbps(_ bytesPerSecond: Double) -> String { String(format: "%.2f GB/s", bytesPerSecond / 1e9) }

func verdict(_ value: Double, atLeast target: Double) -> String {
    String(format: "%.2f× target %@", value / target, value >= target ? "✅" : "❌")
}

func progress(_ text: String) {
    FileHandle.standardError.write(Data("wal-bench: \(text)\n".utf8))
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

func runBenchmarks(_ config: BenchConfig) async throws -> [Row] {
    var rows: [Row] = []

    if config.runs("a") {
    progress("(a) buffered appends")
    let buffered = try await bufferedAppends(config, batch: 1)
    rows.append(Row(metric: "buffered 100 B appends, 1 task, 1 per call", value: rate(buffered),
                    target: "≥ 3 M/s", verdict: verdict(buffered, atLeast: 3e6)))
    let batched = try await bufferedAppends(config, batch: 16)
    rows.append(Row(metric: "buffered 100 B appends, 1 task, 16 per call", value: rate(batched),
                    target: "≥ 3 M/s", verdict: verdict(batched, atLeast: 3e6)))
    }

    var walRate = 0.0
    if config.runs("b") || config.runs("c") {
    progress("(b) durable single writer vs raw pwrite+fdatasync")
    var rawTimes: [Double] = []
    var walRuns: [DurableResult] = []
    for _ in 0..<config.durableRounds {  // Interleaved, so drift in the disk hits both alike.
        rawTimes.append(try rawReference(config, count: config.durableCount))
        walRuns.append(try await durableSingleWriter(config, count: config.durableCount))
    }
    let rawRate = Double(config.durableCount) / median(rawTimes)
    let walRun = walRuns.sorted { $0.seconds < $1.seconds }[walRuns.count / 2]
    walRate = Double(config.durableCount) / walRun.seconds
    rows.append(Row(metric: "raw pwrite 100 B + fdatasync (preallocated), \(config.durableCount)×",
                    value: rate(rawRate) + String(format: " (%.0f µs)", 1e6 / rawRate), target: "reference", verdict: "—"))
    rows.append(Row(metric: "durable 100 B appends, 1 writer", value: rate(walRate) + String(format: " (%.0f µs)", 1e6 / walRate),
                    target: "≥ 0.90 × raw", verdict: String(format: "%.2f × raw %@", walRate / rawRate, walRate / rawRate >= 0.9 ? "✅" : "❌")))
    let perAppend = walRun.seconds / Double(config.durableCount) * 1e6
    let inSync = walRun.syncSeconds / Double(config.durableCount) * 1e6
    rows.append(Row(metric: "durable 1 writer: per append, in fdatasync + elsewhere",
                    value: String(format: "%.0f + %.0f µs (%llu syncs)", inSync, perAppend - inSync, walRun.syncs),
                    target: "—", verdict: String(format: "fdatasync %.2f × raw", inSync / (1e6 / rawRate))))
    let handoff = await handoffCost(count: config.durableCount) * 1e6
    rows.append(Row(metric: "task → sync thread → task handoff around a 100 µs block, no I/O",
                    value: String(format: "%.1f µs", handoff), target: "—", verdict: "—"))
    }

    if config.runs("c") {
    progress("(c) \(config.concurrentWriters) concurrent durable writers")
    let concurrent = try await concurrentDurable(config)
    rows.append(Row(metric: "durable 100 B appends, \(config.concurrentWriters) writer tasks", value: rate(concurrent.appendsPerSecond),
                    target: "—", verdict: String(format: "%.1f × 1 writer", concurrent.appendsPerSecond / walRate)))
    rows.append(Row(metric: "records per fdatasync, \(config.concurrentWriters) writers", value: String(format: "%.1f", concurrent.recordsPerSync),
                    target: "—", verdict: "\(concurrent.syncs) syncs"))
    }

    if config.runs("d") {
    progress("(d) replay of \(config.replayBytes >> 20) MiB of 4 KiB records")
    let replayed = try await replay(config)
    rows.append(Row(metric: "replay 4 KiB records from page cache (\(replayed.bytes >> 20) MiB, zero copy)",
                    value: gbps(replayed.bytesPerSecond), target: "—", verdict: "—"))
    let peakGrowth = replayed.after.peak - replayed.before.peak
    rows.append(Row(metric: "RSS / peak RSS before → after replay",
                    value: "\(replayed.before.rss >> 10) / \(replayed.before.peak >> 10) → \(replayed.after.rss >> 10) / \(replayed.after.peak >> 10) MiB",
                    target: "flat", verdict: peakGrowth < 16 << 10 ? "peak +\(peakGrowth >> 10) MiB ✅" : "peak +\(peakGrowth >> 10) MiB ❌"))
    }

    if config.runs("e") {
    progress("(e) CRC32C")
    let crc = crcThroughput(config)
    rows.append(Row(metric: "CRC32C hardware (SSE4.2), \(config.crcBytes >> 20) MiB",
                    value: crc.hardware.map(gbps) ?? "unavailable", target: "—",
                    verdict: crc.hardware.map { String(format: "%.1f × software", $0 / crc.software) } ?? "—"))
    rows.append(Row(metric: "CRC32C software (slicing-by-8), \(config.crcBytes >> 20) MiB",
                    value: gbps(crc.software), target: "—", verdict: "—"))
    }
    return rows
}

func printTable(_ rows: [Row], _ config: BenchConfig) {
    print("wal-bench\(config.quick ? " --quick" : "") in \(config.base) (\(fileSystemType(of: config.base))), "
          + "\(ProcessInfo.processInfo.activeProcessorCount) cores\n")
    print("| metric | value | target | ratio / verdict |")
    print("|---|---|---|---|")
    for row in rows { print("| \(row.metric) | \(row.value) | \(row.target) | \(row.verdict) |") }
}

func main() async -> Int32 {
    var config = BenchConfig()
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--quick": config.quick = true
        case "--only":
            guard let letters = arguments.popFirst() else { progress("--only needs letters a-e"); return 2 }
            config.only = Set(letters)
        case "--settle-ms":
            guard let ms = arguments.popFirst().flatMap(Int.init) else { progress("--settle-ms needs a number"); return 2 }
            config.settle = .milliseconds(ms)
        case "--dir":
            guard let base = arguments.popFirst() else { progress("--dir needs a directory"); return 2 }
            config.base = base
        default:
            progress("usage: wal-bench [--quick] [--only LETTERS] [--settle-ms MS] [--dir BASE]")
            return 2
        }
    }
    #if DEBUG
    progress("warning: debug build; numbers are meaningless (swift build -c release)")
    #endif
    do {
        printTable(try await runBenchmarks(config), config)
        return 0
    } catch {
        progress("failed: \(error)")
        return 1
    }
}

exit(await main())
