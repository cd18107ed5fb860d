// A wald cluster under automatic failover for FailoverTests and `make bench-failover`: a real
// etcd (TestEtcd) and real wald processes on fixed loopback ports (a member keeps its address
// across restarts, as its advertised identity must), started, SIGKILLed, SIGSTOPped and
// restarted like an operator would, plus a ledger of what clients were told.
import Foundation
import Synchronization
import WALClient
#if canImport(Glibc)
import Glibc
import WALSync
#endif

/// Directory holding the built executables (next to the test bundle or the benchmark).
public func buildProductsDirectory() -> URL {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
}

/// One wald of the cluster.
public final class Member: Sendable {
    public let port: Int
    public let dataDirectory: String
    public let logPath: String
    public let arguments: [String]
    private let pid = WALMutex<pid_t?>(nil)

    public var address: String { "127.0.0.1:\(port)" }
    public var endpoint: Endpoint { .tcp(host: "127.0.0.1", port: UInt16(port)) }

    public init(port: Int, directory: String, etcd: String, cluster: String, extra: [String]) {
        self.port = port
        dataDirectory = directory + "/data-\(port)"
        logPath = directory + "/wald-\(port).log"
        arguments = ["--listen", "127.0.0.1:\(port)", "--data-dir", dataDirectory, "--ha-etcd", etcd, "--ha-cluster", cluster,
                     "--advertise", "127.0.0.1:\(port)", "--log-level", "info"] + extra
    }

    /// Starts the process (it is ready to serve once it answers INFO).
    public func start() throws {
        let child = try spawn(buildProductsDirectory().appendingPathComponent("wald").path, arguments, output: logPath)
        pid.withLock { $0 = child }
    }

    public func signal(_ number: Int32) {
        pid.withLock { if let child = $0 { _ = kill(child, number) } }
    }

    /// SIGSTOP, then waits (up to 10 s) until every thread of the process is stopped: kill(2)
    /// returns before a loaded machine has stopped them all, and until then the member may
    /// still read, write and answer (the group stop reaches its threads one by one).
    public func pause() async throws {
        signal(SIGSTOP)
        guard let child = pid.withLock({ $0 }) else { return }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(child)/task")) ?? []
            let states = tasks.compactMap { task -> Character? in
                guard let stat = try? String(contentsOfFile: "/proc/\(child)/task/\(task)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return nil }
                return stat[stat.index(close, offsetBy: 2)...].first
            }
            if !states.isEmpty && states.allSatisfy({ $0 == "T" || $0 == "t" }) { return }
            try await Task.sleep(for: .milliseconds(1))
        }
        throw ClusterError("\(address) (pid \(child)) did not stop within 10 s of SIGSTOP")
    }

    /// SIGKILL and reap.
    public func kill9() {
        let child = pid.withLock { p -> pid_t? in defer { p = nil }; return p }
        guard let child else { return }
        _ = kill(child, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(child, &status, 0)
    }

    public var isRunning: Bool { pid.withLock { $0 != nil } }

    /// INFO from this member, or nil when it does not answer within a second.
    public func info() async -> ServerInfo? {
        guard let client = try? await WALClient.connect(endpoint, timeout: .seconds(1)) else { return nil }
        defer { client.close() }
        return try? await client.info()
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// etcd and three (or more) members.
public final class TestCluster: Sendable {
    public let etcd: TestEtcd
    public let members: [Member]
    public let directory: String
    public let name = "t"

    public init(size: Int = 3, extra: [String] = ["--min-sync-replicas", "1"], leaseTTL: String = "2s") async throws {
        etcd = try await TestEtcd.start()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("wald-failover-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ports = try TestEtcd.freePorts(size)
        let (directory, url) = (self.directory, etcd.clientURL)
        members = ports.map { Member(port: $0, directory: directory, etcd: url, cluster: "t", extra: ["--ha-lease-ttl", leaseTTL] + extra) }
        for member in members { try member.start() }
    }

    public func destroy() {
        for member in members { member.kill9() }
        etcd.destroy()
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var endpoints: [Endpoint] { members.map(\.endpoint) }

    /// The member that says it is the primary and that the others follow, within `timeout`.
    public func waitForLeader(excluding old: Member? = nil, timeout: Duration = .seconds(30)) async throws -> Member {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for member in members where member !== old && member.isRunning {
                if let info = await member.info(), info.role == "primary", info.leader == member.address {
                    return member
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterError("no leader within \(timeout)\n" + logs())
    }

    /// Waits until every running member reports `lastLSN` at least `lsn` and the same last LSN.
    public func waitForConvergence(timeout: Duration = .seconds(60)) async throws -> UInt64 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var lasts: [UInt64] = []
            for member in members where member.isRunning {
                if let info = await member.info(), info.durableLSN == info.lastLSN { lasts.append(info.lastLSN) }
            }
            if lasts.count == members.filter(\.isRunning).count, let first = lasts.first, lasts.allSatisfy({ $0 == first }) {
                return first
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterError("members did not converge within \(timeout)\n" + logs())
    }

    /// Every record of a member, read with REPLAY.
    public func records(of member: Member, through last: UInt64) async throws -> [ReplayedRecord] {
        guard last > 0 else { return [] }
        let client = try await WALClient.connect(member.endpoint, timeout: .seconds(10))
        defer { client.close() }
        var records: [ReplayedRecord] = []
        for try await record in client.replay(from: 1, count: last) { records.append(record) }
        return records
    }

    /// The tail of every member's log and etcd's, for a failure message.
    public func logs() -> String {
        members.map { "== wald \($0.address)\n" + String($0.log.suffix(3000)) }.joined(separator: "\n")
    }
}

public struct ClusterError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What clients were told: LSN → payload of every acknowledged append.
public final class Ledger: Sendable {
    private let state = WALMutex<(acked: [UInt64: [UInt8]], conflicts: [String], failures: Int, replaced: [(UInt64, [UInt8])])>(
        ([:], [], 0, []))

    /// When each acknowledgement arrived and from which member (for failover timings).
    private let arrivals = WALMutex<[(at: ContinuousClock.Instant, from: String)]>([])

    /// The first acknowledgement at or after `instant` from a member other than `excluded`.
    public func firstAcknowledgement(after instant: ContinuousClock.Instant, excluding excluded: String) -> ContinuousClock.Instant? {
        arrivals.withLock { list in list.first { $0.at >= instant && $0.from != excluded }?.at }
    }

    public func acknowledged(_ lsn: UInt64, _ payload: [UInt8], from member: String = "") {
        arrivals.withLock { $0.append((.now, member)) }
        state.withLock { s in
            if let earlier = s.acked[lsn], earlier != payload {
                s.conflicts.append("LSN \(lsn) acknowledged for two payloads")
                s.replaced.append((lsn, earlier))
            }
            s.acked[lsn] = payload
        }
    }

    public func failed() { state.withLock { $0.failures += 1 } }

    public init() {}

    private let stopFlag = WALMutex(false)
    /// Tells the load to stop.
    public func stop() { stopFlag.withLock { $0 = true } }
    public var stopped: Bool { stopFlag.withLock { $0 } }

    public var acked: [UInt64: [UInt8]] { state.withLock { $0.acked } }

    /// Acknowledgements that `log` (LSN → payload, what a member holds) does not hold: every one
    /// whose LSN names another payload or none, counting both of an LSN acknowledged twice.
    public func lost(against log: [UInt64: [UInt8]]) -> Int {
        state.withLock { s in
            s.acked.filter { log[$0.key] != $0.value }.count + s.replaced.filter { log[$0.0] != $0.1 }.count
        }
    }
    public var conflicts: [String] { state.withLock { $0.conflicts } }
    public var failures: Int { state.withLock { $0.failures } }
}

/// `clients` tasks appending durable records through WALClusterClient until `ledger.stop()`.
public func appendLoad(cluster: TestCluster, clients: Int, ledger: Ledger, buffered: Bool = false) -> [Task<Void, Never>] {
    (0..<clients).map { index in
        Task {
            let client = WALClusterClient(endpoints: cluster.endpoints, timeout: .seconds(5), failoverTimeout: .seconds(20))
            defer { client.close() }
            var sequence = 0
            while !ledger.stopped {
                sequence += 1
                let payload = Array("client \(index) record \(sequence) ".utf8) + Array(repeating: UInt8(index), count: 40)
                do {
                    let lsn = try await client.append(payload, buffered: buffered)
                    ledger.acknowledged(lsn, payload, from: client.current.map { "\($0)" } ?? "")
                } catch {
                    ledger.failed()
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
    }
}
