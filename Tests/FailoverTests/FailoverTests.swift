// Automatic failover end to end (issue 15): real etcd, three real walds, real SIGKILL and
// SIGSTOP. The promises under test (docs/replication.md): with min_sync_replicas = 1 no
// acknowledged record is lost and no LSN is acknowledged for two payloads; a paused leader
// acknowledges nothing once another could have been elected; a lagging member never wins
// while a more caught-up one is alive; etcd outages fence the leader and heal.
import Foundation
import Synchronization
import Testing
import WALClient
import WALEtcd
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct FailoverTests {
    /// 16 clients append durably while the leader is SIGKILLed ten times; each time a follower
    /// takes over and the old leader is started again and rejoins. At the end every member has
    /// the same records, and every acknowledged record is among them under its LSN.
    @Test(.timeLimit(.minutes(4)))
    func killingTheLeaderTenTimesUnderLoadLosesNoAcknowledgedRecord() async throws {
        let cluster = try await TestCluster()
        defer { cluster.destroy() }
        let ledger = Ledger()
        var leader = try await cluster.waitForLeader()
        let load = appendLoad(cluster: cluster, clients: 16, ledger: ledger)
        for round in 1...10 {
            // Some acknowledgements under this leader first.
            let before = ledger.acked.count
            let deadline = ContinuousClock.now + .seconds(20)
            while ledger.acked.count < before + 50 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(ledger.acked.count >= before + 50, "round \(round): the load made no progress\n\(cluster.logs())")
            leader.kill9()
            let next = try await cluster.waitForLeader(excluding: leader)
            try leader.start()
            leader = next
        }
        let deadline = ContinuousClock.now + .seconds(20)
        let before = ledger.acked.count
        while ledger.acked.count < before + 50 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        ledger.stop()
        for task in load { await task.value }

        let last = try await cluster.waitForConvergence()
        var copies: [[ReplayedRecord]] = []
        for member in cluster.members { copies.append(try await cluster.records(of: member, through: last)) }
        for (index, copy) in copies.enumerated() {
            #expect(copy.count == Int(last), "member \(cluster.members[index].address) holds \(copy.count) of \(last) records")
            #expect(copy == copies[0], "member \(cluster.members[index].address) differs from \(cluster.members[0].address)")
        }
        let onDisk = Dictionary(uniqueKeysWithValues: copies[0].map { ($0.lsn, $0.payload) })
        let acked = ledger.acked
        let lost = acked.filter { onDisk[$0.key] != $0.value }
        #expect(lost.isEmpty, "\(lost.count) acknowledged records lost or changed, e.g. LSN \(lost.keys.sorted().prefix(5))")
        #expect(ledger.lost(against: onDisk) == 0)
        #expect(ledger.conflicts.isEmpty, "\(ledger.conflicts.prefix(3))")
        #expect(acked.count > 500)
        // Each former leader cut what it alone held, or had nothing to cut; none kept serving it.
        for member in cluster.members {
            #expect(!member.log.contains("fatal"), "\(member.address):\n\(member.log.suffix(2000))")
        }
    }

    /// A SIGSTOPped leader outlives its lease; once another member leads, the old one,
    /// resumed, answers an append that waited in its socket with a refusal, never APPENDED,
    /// and the client finds the new leader.
    @Test(.timeLimit(.minutes(2)))
    func aPausedLeaderAcknowledgesNothingAfterANewLeaderIsElected() async throws {
        let cluster = try await TestCluster()
        defer { cluster.destroy() }
        let old = try await cluster.waitForLeader()
        let direct = try await WALClient.connect(old.endpoint, timeout: .seconds(30))
        defer { direct.close() }
        try await direct.append(Array("before the pause".utf8))
        try await old.pause()
        // Sent once it is stopped: it waits in the socket until SIGCONT.
        let pending = Task { try await direct.append(Array("sent to the paused leader".utf8)) }
        let new = try await cluster.waitForLeader(excluding: old)
        // (A client trying the paused member first would wait out its timeout: a pause looks like a slow server.)
        let client = WALClusterClient(endpoints: [new.endpoint], timeout: .seconds(5))
        defer { client.close() }
        let lsn: UInt64
        do {
            lsn = try await client.append(Array("to the new leader".utf8))
        } catch {
            old.signal(SIGCONT)
            throw ClusterError("the new leader \(new.address) did not take an append: \(error)\n\(cluster.logs())")
        }
        old.signal(SIGCONT)
        do {
            let stale = try await pending.value
            Issue.record("the resumed old leader acknowledged LSN \(stale) after \(new.address) (which gave LSN \(lsn)) was elected\n\(cluster.logs())")
        } catch let error as WALClientError {
            // Refused (READ_ONLY naming the new leader, or UNAVAILABLE), or the connection closed as it rejoins.
            switch error {
            case .server(let code, _): #expect(code == .readOnly || code == .unavailable, "\(error)")
            case .connectionClosed: break
            default: Issue.record("unexpected \(error)")
            }
        }
        // The client that knew only the old member's address is sent on to the new leader.
        let follower = WALClusterClient(endpoints: [old.endpoint, new.endpoint], timeout: .seconds(5))
        defer { follower.close() }
        #expect(try await follower.append(Array("after".utf8)) == lsn + 1)
        // The old leader rejoins as a follower with the same records.
        let last = try await cluster.waitForConvergence()
        #expect(last == lsn + 1)
        #expect(await old.info()?.role == "follower")
        #expect(await old.info()?.leader == new.address)
    }

    /// etcd killed for longer than the lease TTL: the leader stops acknowledging (READ_ONLY, and
    /// INFO says why), followers keep their stream; etcd back: a leader again, appends go on.
    @Test(.timeLimit(.minutes(2)))
    func anEtcdOutageLongerThanTheTTLFencesTheLeaderAndHeals() async throws {
        let cluster = try await TestCluster()
        defer { cluster.destroy() }
        _ = try await cluster.waitForLeader()
        let client = WALClusterClient(endpoints: cluster.endpoints, timeout: .seconds(5), failoverTimeout: .seconds(30))
        defer { client.close() }
        let first = try await client.append(Array("before the outage".utf8))
        cluster.etcd.kill()
        // Longer than the 2 s TTL: no member may still be acknowledging.
        try await Task.sleep(for: .seconds(3))
        for member in cluster.members {
            let direct = try await WALClient.connect(member.endpoint, timeout: .seconds(5))
            defer { direct.close() }
            do {
                let lsn = try await direct.append(Array("during the outage".utf8))
                Issue.record("\(member.address) acknowledged LSN \(lsn) with etcd down for longer than the lease")
            } catch WALClientError.server(let code, _) {
                #expect(code == .readOnly)
            }
            let info = try await direct.info()
            #expect(info.raw["ha"] != nil)
            #expect(info.json.contains("\"connected\":false"), "\(info.json)")
        }
        try await cluster.etcd.restart()
        let second = try await client.append(Array("after the outage".utf8))
        #expect(second == first + 1)
        let last = try await cluster.waitForConvergence()
        #expect(last == second)

        // A quick etcd restart (shorter than the TTL) is survived too.
        cluster.etcd.kill()
        try await cluster.etcd.restart()
        #expect(try await client.append(Array("after a quick restart".utf8)) == second + 1)
    }

    /// A follower paused while the others go on lags; with the leader killed and the laggard
    /// resumed at the same moment, the caught-up follower must win, and the laggard follows it.
    @Test(.timeLimit(.minutes(2)))
    func aLaggingFollowerNeverWinsWhileAMoreCaughtUpOneIsAlive() async throws {
        for _ in 1...2 {
            let cluster = try await TestCluster()
            defer { cluster.destroy() }
            let leader = try await cluster.waitForLeader()
            let followers = cluster.members.filter { $0 !== leader }
            let (laggard, caughtUp) = (followers[0], followers[1])
            let client = WALClusterClient(endpoints: [leader.endpoint], timeout: .seconds(5))
            defer { client.close() }
            try await client.append(Array("everyone has this".utf8))
            _ = try await cluster.waitForConvergence()
            try await laggard.pause()
            var last: UInt64 = 0
            for index in 0..<50 { last = try await client.append(Array("only two have this \(index)".utf8)) }
            leader.kill9()
            laggard.signal(SIGCONT)
            let next = try await cluster.waitForLeader(excluding: leader)
            #expect(next === caughtUp, "the lagging \(laggard.address) won\n\(cluster.logs())")
            let info = await next.info()
            #expect((info?.lastLSN ?? 0) >= last)
            try leader.start()
            #expect(try await cluster.waitForConvergence() >= last)
        }
    }
}

/// walctl against a cluster: `cluster` shows who leads, `--ha-etcd` and `--server A,B,C` reach the leader.
@Suite(.serialized) struct WalctlClusterTests {
    /// Runs walctl with `arguments`; returns its exit status and standard output.
    func walctl(_ arguments: [String]) throws -> ToolResult { try runTool("walctl", arguments) }

    @Test(.timeLimit(.minutes(2)))
    func walctlFindsTheLeaderThroughEtcdOrAnyMemberAndListsTheCluster() async throws {
        let cluster = try await TestCluster()
        defer { cluster.destroy() }
        let leader = try await cluster.waitForLeader()
        let etcd = ["--ha-etcd", cluster.etcd.clientURL, "--ha-cluster", "t"]
        let appended = try walctl(["append"] + etcd + ["via etcd"])
        #expect(appended.status == 0, "\(appended.stderr)")
        #expect(appended.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        // A follower's address first: walctl moves to the leader it names.
        let followers = cluster.members.filter { $0 !== leader }.map(\.address)
        let viaMembers = try walctl(["append", "--server", (followers + [leader.address]).joined(separator: ","), "via members"])
        #expect(viaMembers.status == 0, "\(viaMembers.stderr)")
        #expect(viaMembers.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
        _ = try await cluster.waitForConvergence()
        // Members publish at most every 0.5 s.
        var shown = ""
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            let listed = try walctl(["cluster"] + etcd)
            #expect(listed.status == 0, "\(listed.stderr)")
            shown = listed.stdout
        } while shown.split(separator: "\n").filter({ $0.contains(" 2 2 0") }).count < 3 && ContinuousClock.now < deadline
        #expect(shown.contains("leader \(leader.address)"), "\(shown)")
        #expect(shown.contains("\(leader.address) leader 1 2 2 0"), "\(shown)")
        for follower in followers { #expect(shown.contains("\(follower) follower 1 2 2 0"), "\(shown)") }
        let json = try walctl(["cluster", "--json"] + etcd)
        #expect(json.stdout.contains("\"leader\":\"\(leader.address)\""), "\(json.stdout)")
        // Without a cluster name: a usage error.
        #expect(try walctl(["cluster", "--ha-etcd", cluster.etcd.clientURL]).status == 64)
    }

    /// A start that fails after the etcd client exists (here: the data directory is locked by
    /// another wald) exits 1 naming why; it trapped in async-http-client's deinit (exit 132).
    @Test(.timeLimit(.minutes(1)))
    func aStartThatFailsUnderAutomaticFailoverExitsOneNamingWhy() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wald-ha-locked-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = directory + "/data"
        // The holder runs without --ha-etcd: it only holds the data directory's lock.
        let holderLog = directory + "/holder.log"
        let holder = try spawnChild(buildProductsDirectory().appendingPathComponent("wald").path,
                                    ["--listen", "127.0.0.1:0", "--data-dir", data],
                                    environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") },
                                    stdout: holderLog)
        defer {
            kill(holder, SIGTERM)
            _ = waitForChild(holder, timeout: 20)
        }
        // The holder prints its ready line once it has opened the log (and holds its lock).
        let deadline = ContinuousClock.now + .seconds(20)
        while !((try? String(contentsOfFile: holderLog, encoding: .utf8)) ?? "").contains("ready ") && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let second = try runTool("wald", ["--listen", "127.0.0.1:0", "--data-dir", data, "--ha-etcd", "http://127.0.0.1:1",
                                          "--ha-cluster", "t", "--advertise", "127.0.0.1:1"])
        #expect(second.status == 1 && second.exitedNormally, "\(second.stderr.suffix(1500))")
        #expect(second.stderr.contains("is locked by another process"), "\(second.stderr.suffix(1500))")
    }

    @Test func theLeaderIsReadFromARefusal() {
        #expect(WALClusterClient.leader(inRefusal: "this server is a read-only follower of 10.0.0.1:7070; append there (leader=10.0.0.1:7070)")
                == .tcp(host: "10.0.0.1", port: 7070))
        #expect(WALClusterClient.leader(inRefusal: "no leader: an election is running (leader=none)") == nil)
        #expect(WALClusterClient.leader(inRefusal: "something else") == nil)
    }
}
