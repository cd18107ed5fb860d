// `make bench-failover`: a real etcd and three walds under 16 writers; the leader is SIGKILLed
// KILLS times (default 20) and started again each time. Measured per kill: the time from the
// kill to the first acknowledged append from another member (the new leader). At the end, every
// acknowledged record is looked up in the converged log: with min_sync_replicas = 1 none may
// be missing; the same run with asynchronous replication (min_sync_replicas = 0, buffered
// appends) says how many were lost. Usage: wal-bench-failover [KILLS] [TTL like 3s].
import Foundation
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

struct Mode {
    let name: String
    let extra: [String]
    let buffered: Bool
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let index = min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

func run(_ mode: Mode, kills: Int, ttl: String) async throws -> String {
    let cluster = try await TestCluster(extra: mode.extra, leaseTTL: ttl)
    defer { cluster.destroy() }
    let ledger = Ledger()
    var leader = try await cluster.waitForLeader()
    let load = appendLoad(cluster: cluster, clients: 16, ledger: ledger, buffered: mode.buffered)
    var failovers: [Double] = []
    for round in 1...kills {
        // Load under this leader for a moment, then kill it.
        try await Task.sleep(for: .milliseconds(700))
        let killed = ContinuousClock.now
        leader.kill9()
        let next = try await cluster.waitForLeader(excluding: leader, timeout: .seconds(60))
        let deadline = ContinuousClock.now + .seconds(60)
        var first: ContinuousClock.Instant?
        while first == nil && ContinuousClock.now < deadline {
            first = ledger.firstAcknowledgement(after: killed, excluding: leader.address)
            if first == nil { try await Task.sleep(for: .milliseconds(5)) }
        }
        guard let first else { throw ClusterError("round \(round): no acknowledgement after the kill\n\(cluster.logs())") }
        failovers.append(seconds(first - killed))
        FileHandle.standardError.write(Data("\(mode.name): kill \(round): \(String(format: "%.3f", seconds(first - killed))) s\n".utf8))
        try leader.start()
        leader = next
    }
    try await Task.sleep(for: .seconds(1))
    ledger.stop()
    for task in load { await task.value }
    let last = try await cluster.waitForConvergence(timeout: .seconds(120))
    let records = try await cluster.records(of: leader, through: last)
    let onDisk = Dictionary(uniqueKeysWithValues: records.map { ($0.lsn, $0.payload) })
    let acked = ledger.acked
    let lost = ledger.lost(against: onDisk)
    let sorted = failovers.sorted()
    return "| \(mode.name) | \(kills) | \(String(format: "%.2f", percentile(sorted, 0.5))) | "
        + "\(String(format: "%.2f", percentile(sorted, 0.99))) | \(String(format: "%.2f", sorted.last ?? .nan)) | "
        + "\(acked.count + ledger.conflicts.count) | \(ledger.failures) | \(lost) | \(ledger.conflicts.count) |"
}

let arguments = CommandLine.arguments.dropFirst()
let kills = arguments.first.flatMap(Int.init) ?? 20
let ttl = arguments.dropFirst().first ?? "3s"
let modes = [
    Mode(name: "durable, min_sync_replicas 1", extra: ["--min-sync-replicas", "1"], buffered: false),
    Mode(name: "buffered, async (min_sync_replicas 0)", extra: ["--min-sync-replicas", "0"], buffered: true),
]
var rows: [String] = []
do {
    for mode in modes { rows.append(try await run(mode, kills: kills, ttl: ttl)) }
} catch {
    FileHandle.standardError.write(Data("wal-bench-failover: \(error)\n".utf8))
    exit(1)
}
print("failover: 3 walds + etcd, 16 writers, lease TTL \(ttl) (target: p99 < 2 x TTL + 1 s; 0 lost with min_sync_replicas 1); "
      + "(with fewer than 100 kills p99 is the max)")
print("| mode | kills | kill → first ack p50 (s) | p99 (s) | max (s) | acknowledged | failed calls | acknowledged but lost | LSNs acked twice |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in rows { print(row) }
