// Streaming replication between real wald processes on loopback: followers keep identical
// logs, cascade, resume after SIGKILL, refuse foreign logs, and make acks synchronous.
import Foundation
import Synchronization
import Testing
import WALClient
#if canImport(Glibc)
import Glibc
import WALSync
import WALTestSupport
#endif

private func endpoint(_ wald: WaldProcess) -> Endpoint { .tcp(host: "127.0.0.1", port: wald.port) }

private func info(_ wald: WaldProcess) async throws -> [String: Any] {
    let client = try await WALClient.connect(endpoint(wald))
    defer { client.close() }
    let json = try await client.info().json
    return try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] ?? [:]
}

/// Polls until `condition` holds (or fails the test after `seconds`).
private func eventually(_ what: String, seconds: Double = 30, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting until \(what)")
    throw CancellationError()
}

/// Acknowledged (LSN, payload) pairs, shared by concurrent writers.
private final class Ledger: Sendable {
    let records = WALMutex<[UInt64: [UInt8]]>([:])
    let stopped = WALMutex(false)
    func add(_ lsn: UInt64, _ payload: [UInt8]) { records.withLock { $0[lsn] = payload } }
    var all: [UInt64: [UInt8]] { records.withLock { $0 } }
    var isStopped: Bool { stopped.withLock { $0 } }
    func stop() { stopped.withLock { $0 = true } }
}

private func lastLSN(_ wald: WaldProcess) async throws -> Int { try await info(wald)["last_lsn"] as? Int ?? -1 }
private func durableLSN(_ wald: WaldProcess) async throws -> Int { try await info(wald)["durable_lsn"] as? Int ?? -1 }

/// Waits until every follower's durable LSN equals the primary's last LSN.
private func waitForCatchUp(_ primary: WaldProcess, _ followers: [WaldProcess]) async throws {
    let target = try await lastLSN(primary)
    for follower in followers {
        try await eventually("follower \(follower.address) reaches LSN \(target)") {
            try await durableLSN(follower) == target
        }
    }
}

/// Durable appends from `clients` concurrent connections; returns what was acknowledged.
private func load(_ wald: WaldProcess, clients: Int, appends: Int, tag: String) async throws -> [UInt64: [UInt8]] {
    let acked = Ledger()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for c in 0..<clients {
            group.addTask {
                let client = try await WALClient.connect(endpoint(wald))
                defer { client.close() }
                for i in 0..<appends {
                    let records = (0..<(i % 3 + 1)).map { payload("\(tag)-\(c)-\(i)-\($0)", size: 20 + (i * 37 + $0) % 900) }
                    let (first, _) = try await client.append(batch: records)
                    for (k, r) in records.enumerated() { acked.add(first + UInt64(k), r) }
                }
            }
        }
        try await group.waitForAll()
    }
    return acked.all
}

@Suite(.serialized) struct ReplicationTests {
    @Test func primaryAndCascadingFollowersEndWithIdenticalLogs() async throws {
        let primary = try WaldProcess(arguments: ["--max-segment-bytes", "65536"])
        defer { primary.cleanup() }
        let first = try WaldProcess(arguments: ["--follow", primary.address, "--max-segment-bytes", "65536"])
        defer { first.cleanup() }
        let second = try WaldProcess(arguments: ["--follow", first.address, "--max-segment-bytes", "65536"])
        defer { second.cleanup() }

        let acked = try await load(primary, clients: 8, appends: 60, tag: "cascade")
        try await waitForCatchUp(primary, [first, second])

        let logs = try await [primary, first, second].asyncMap { try await replayAll(endpoint($0)) }
        expectLog(logs[0], holds: acked, "primary")
        #expect(logs[1] == logs[0], "first follower differs from the primary")
        #expect(logs[2] == logs[0], "cascading follower differs from the primary")
        let ids = try await [primary, first, second].asyncMap { try await info($0)["log_id"] as? String }
        #expect(Set(ids).count == 1)
        let followerInfo = try await info(first)
        #expect(followerInfo["role"] as? String == "follower")
        #expect(followerInfo["upstream"] as? String == primary.address)
        #expect(followerInfo["upstream_connected"] as? Bool == true)
        let followers = try await info(primary)["followers"] as? [[String: Any]] ?? []
        #expect(followers.count == 1)
        #expect(followers.first?["durable_lsn"] as? Int == acked.keys.max().map(Int.init))
        for key in ["address", "lag_records", "lag_bytes", "last_feedback_ms"] {
            #expect(followers.first?[key] != nil, "INFO followers[0] lacks \(key)")
        }
    }

    /// Client limits are for client appends: a follower with a smaller max_record_bytes and
    /// max_frame_bytes than its primary stores what the primary committed (it used to stop
    /// for good at the first larger record, retrying forever).
    @Test func aFollowerWithSmallerLimitsStoresWhatItsPrimaryCommitted() async throws {
        let primary = try WaldProcess()
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address, "--max-record-bytes", "100",
                                                   "--max-frame-bytes", "1KiB"])
        defer { follower.cleanup() }
        let client = try await WALClient.connect(endpoint(primary))
        defer { client.close() }
        let big = [UInt8](repeating: 0x5A, count: 200_000)
        try await client.append([1])
        try await client.append(big)
        try await client.append([3])
        try await waitForCatchUp(primary, [follower])
        let copied = try await replayAll(endpoint(follower))
        #expect(copied.map(\.payload) == [[1], big, [3]])
        #expect(try await info(follower)["upstream_connected"] as? Bool == true)
    }

    @Test func appendOnAFollowerIsReadOnlyAndNamesTheUpstream() async throws {
        let primary = try WaldProcess()
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        let c = try RawConnection(port: follower.port)
        c.send("APPEND nope\n")
        let line = try #require(c.readLine())
        #expect(line.hasPrefix("ERR READ_ONLY ") && line.contains(primary.address))
        c.send("PING\nSYNC\n")
        #expect(c.readLine() == "PONG")
        #expect(c.readLine()?.hasPrefix("SYNCED ") == true)
    }

    @Test func promoteMakesAFollowerAcceptAppendsFromItsLastLSN() async throws {
        let primary = try WaldProcess()
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        _ = try await load(primary, clients: 2, appends: 10, tag: "promote")
        try await waitForCatchUp(primary, [follower])
        let last = try await lastLSN(primary)
        let client = try await WALClient.connect(endpoint(follower))
        defer { client.close() }
        #expect(try await client.promote() == UInt64(last))
        #expect(try await client.append(Array("after promotion".utf8)) == UInt64(last + 1))
        #expect(try await info(follower)["role"] as? String == "primary")
        let primaryClient = try await WALClient.connect(endpoint(primary))
        defer { primaryClient.close() }
        #expect(try await primaryClient.promote() == UInt64(last))  // no-op on a primary
    }

    @Test func aForeignLogIsRefusedAndLeftUntouched() async throws {
        let primary = try WaldProcess()
        defer { primary.cleanup() }
        _ = try await load(primary, clients: 1, appends: 5, tag: "primary")
        let other = try WaldProcess()
        let otherAcked = try await load(other, clients: 1, appends: 7, tag: "other")
        #expect(other.stop() == 0)
        let follower = try WaldProcess(dataDirectory: other.dataDirectory, arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        try await eventually("the follower reports why it refuses") {
            (try await info(follower)["upstream_error"] as? String)?.contains("not the upstream's log") == true
        }
        #expect(try await info(follower)["upstream_connected"] as? Bool == false)
        expectLog(try await replayAll(endpoint(follower)), holds: otherAcked, "foreign follower's own log")
        #expect(try await lastLSN(follower) == otherAcked.count)
    }

    @Test func aNewFollowerOfATruncatedPrimaryStartsAtItsFirstLSN() async throws {
        let primary = try WaldProcess(arguments: ["--max-segment-bytes", "4096"])
        defer { primary.cleanup() }
        _ = try await load(primary, clients: 2, appends: 40, tag: "truncated")
        let client = try await WALClient.connect(endpoint(primary))
        let firstLeft = try await client.truncate(before: 60)
        client.close()
        #expect(firstLeft > 1)
        let follower = try WaldProcess(arguments: ["--follow", primary.address, "--max-segment-bytes", "4096"])
        defer { follower.cleanup() }
        try await waitForCatchUp(primary, [follower])
        #expect(try await info(follower)["first_lsn"] as? Int == Int(firstLeft))
        #expect(try await replayAll(endpoint(follower)) == (try await replayAll(endpoint(primary))))
    }

    @Test func aFollowerTooFarBehindIsDroppedAndThenGetsOutOfRange() async throws {
        let primary = try WaldProcess(arguments: ["--max-follower-hold-bytes", "2MiB"])
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        _ = try await load(primary, clients: 1, appends: 5, tag: "before")
        try await waitForCatchUp(primary, [follower])
        kill(follower.process.processIdentifier, SIGSTOP)
        // More than the loopback socket buffers can hold in transit (a few MiB), so the
        // stopped follower really falls behind.
        let client = try await WALClient.connect(endpoint(primary))
        for i in 0..<400 { try await client.append(payload("while-stopped-\(i)", size: 64 * 1024)) }
        try await eventually("the primary drops the stalled follower") {
            (try await info(primary)["followers"] as? [Any])?.isEmpty == true
        }
        let firstLeft = try await client.truncate(before: UInt64(try await lastLSN(primary)))
        client.close()
        kill(follower.process.processIdentifier, SIGCONT)
        try await eventually("the follower reports OUT_OF_RANGE naming the first LSN \(firstLeft)") {
            let error = try await info(follower)["upstream_error"] as? String ?? ""
            return error.contains("OUT_OF_RANGE") && error.contains("first available LSN is \(firstLeft)")
        }
        #expect(try await lastLSN(follower) < Int(firstLeft) - 1)
    }

    @Test func minSyncReplicasFailsWithoutAFollowerAndAcksOnlyWhatTheFollowerHas() async throws {
        let primary = try WaldProcess(arguments: ["--min-sync-replicas", "1", "--sync-replica-timeout", "300ms"])
        defer { primary.cleanup() }
        let client = try await WALClient.connect(endpoint(primary))
        defer { client.close() }
        await #expect(throws: WALClientError.self) { try await client.append(Array("lonely".utf8)) }
        do {
            try await client.append(Array("lonely".utf8))
        } catch WALClientError.server(let code, let message) {
            #expect(code == .unavailable && message.contains("sync replica"))
        }
        let primaryInfo = try await info(primary)
        #expect(primaryInfo["sync_replica_timeouts"] as? Int ?? 0 >= 2)

        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        try await eventually("the follower connects") { try await info(follower)["upstream_connected"] as? Bool == true }
        for i in 0..<5 {
            let lsn = try await client.append(payload("sync-\(i)", size: 100))
            // The ack means the follower has it on disk: kill it at once and read its files.
            if i == 4 {
                follower.stop(signal: SIGKILL)
                let dump = try runTool("walctl", ["dump", follower.dataDirectory, "--from", "\(lsn)", "--format", "text"])
                #expect(dump.stdout.contains("\(lsn)\t"), "LSN \(lsn) acknowledged but not on the follower's disk: \(dump.stderr)")
            }
        }
    }

    @Test func killingPrimaryAndFollowerRepeatedlyLosesAndDuplicatesNothing() async throws {
        let seed = testSeed()
        var rng = SeededGenerator(seed: seed)
        let segment = ["--max-segment-bytes", "32768"]
        var primary = try WaldProcess(arguments: segment)
        let primaryDir = primary.dataDirectory
        let primaryAddress = primary.address
        var follower = try WaldProcess(arguments: ["--follow", primaryAddress] + segment)
        let followerDir = follower.dataDirectory
        defer { primary.cleanup(); follower.cleanup() }
        var acked: [UInt64: [UInt8]] = [:]
        for round in 0..<10 {
            let ledger = Ledger()
            let address = endpoint(primary)
            let writers = Task {
                await withTaskGroup(of: Void.self) { group in
                    for c in 0..<4 {
                        group.addTask {
                            guard let client = try? await WALClient.connect(address) else { return }
                            defer { client.close() }
                            for i in 0..<100_000 where !ledger.isStopped {
                                let record = payload("r\(round)-c\(c)-\(i)", size: 50 + i % 300)
                                guard let lsn = try? await client.append(record) else { return }
                                ledger.add(lsn, record)
                            }
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 100...400, using: &rng)))
            let killPrimary = Bool.random(using: &rng)
            if killPrimary {
                primary.stop(signal: SIGKILL)
                await writers.value
                primary = try WaldProcess(dataDirectory: primaryDir, arguments: ["--listen", primaryAddress] + segment)
            } else {
                follower.stop(signal: SIGKILL)
                follower = try WaldProcess(dataDirectory: followerDir, arguments: ["--follow", primaryAddress] + segment)
                try await Task.sleep(for: .milliseconds(100))
                ledger.stop()
                await writers.value
            }
            acked.merge(ledger.all) { $1 }
            let log = try await replayAll(endpoint(primary))
            expectLog(log, holds: acked, "round \(round) (seed \(seed), killed \(killPrimary ? "primary" : "follower"))")
        }
        try await waitForCatchUp(primary, [follower])
        #expect(try await replayAll(endpoint(follower)) == (try await replayAll(endpoint(primary))), "seed \(seed)")
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
