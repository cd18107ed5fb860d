// EtcdClient against a real etcd (Debian's etcd-server 3.4), one fresh etcd per test, started by WALTestSupport.
// No mocks: what is pinned here is etcd's behaviour through the JSON gateway as much as the client's.
import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing
import WALTestSupport

@testable import WALEtcd
import WALSync

/// Runs `body` with a fresh etcd and a client of it; kills etcd and shuts the client down afterwards.
func withEtcd<T>(
    requestTimeout: Duration = .seconds(2), _ body: (TestEtcd, EtcdClient) async throws -> T
) async throws -> T {
    let etcd = try await TestEtcd.start()
    defer { etcd.destroy() }
    let client = try EtcdClient(endpoints: [etcd.clientURL], requestTimeout: requestTimeout)
    do {
        let result = try await body(etcd, client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// Consumes a watch in a task of its own and hands its events out one at a time, with a timeout.
final class WatchRecorder: Sendable {
    private final class State: Sendable {
        let value = WALMutex<(events: [EtcdWatchEvent], error: EtcdError?, ended: Bool)>(([], nil, false))
    }
    private let state = State()
    private let task: Task<Void, Never>

    init(_ stream: AsyncThrowingStream<EtcdWatchEvent, Error>) {
        let state = self.state
        task = Task {
            do {
                for try await event in stream { state.value.withLock { $0.events.append(event) } }
                state.value.withLock { $0.ended = true }
            } catch {
                state.value.withLock {
                    $0.error = error as? EtcdError ?? .malformed("not an EtcdError: \(error)")
                    $0.ended = true
                }
            }
        }
    }

    deinit { task.cancel() }

    /// The next event; throws the error the watch ended with once every event before it was taken.
    func next(timeout: Duration = .seconds(5), sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> EtcdWatchEvent
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let (event, error, ended) = state.value.withLock { state -> (EtcdWatchEvent?, EtcdError?, Bool) in
                if !state.events.isEmpty { return (state.events.removeFirst(), nil, false) }
                return (nil, state.error, state.ended)
            }
            if let event { return event }
            if let error { throw error }
            if ended { throw EtcdError.malformed("the watch finished without an error") }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("no watch event within \(timeout)", sourceLocation: sourceLocation)
        throw EtcdError.timeout("test: no watch event within \(timeout)")
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// The error `body` throws, which must be an EtcdError.
func etcdError(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> EtcdError? {
    do {
        try await body()
        Issue.record("expected an EtcdError, got success", sourceLocation: sourceLocation)
        return nil
    } catch let error as EtcdError {
        return error
    } catch {
        Issue.record("expected an EtcdError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite struct KeyValueTests {
    @Test func putGetGetPrefixAndDelete() async throws {
        try await withEtcd { _, etcd in
            let revision = try await etcd.put("p/a", value: bytes("one"))
            try await etcd.put("p/b", value: bytes("two"))
            try await etcd.put("q", value: [0, 255, 10])

            let (kv, readRevision) = try await etcd.get("p/a")
            #expect(kv == EtcdKeyValue(key: "p/a", value: bytes("one"), createRevision: revision, modRevision: revision, version: 1))
            #expect(readRevision == revision + 2)
            #expect(try await etcd.get("q").kv?.value == [0, 255, 10])
            #expect(try await etcd.get("missing").kv == nil)

            let (kvs, _) = try await etcd.getPrefix("p/")
            #expect(kvs.map(\.key) == ["p/a", "p/b"])
            #expect(kvs.map(\.value) == [bytes("one"), bytes("two")])

            let second = try await etcd.put("p/a", value: bytes("uno"))
            let updated = try #require(try await etcd.get("p/a").kv)
            #expect(updated.version == 2 && updated.createRevision == revision && updated.modRevision == second)

            try await etcd.delete("p/a")
            try await etcd.delete("p/a")  // absent: no error
            #expect(try await etcd.get("p/a").kv == nil)
            #expect(try await etcd.getPrefix("p/").kvs.map(\.key) == ["p/b"])
            #expect(try await etcd.getPrefix("none/").kvs.isEmpty)
        }
    }

    @Test func txnCreateRevisionZeroTakesAFreeKeyOnlyOnce() async throws {
        try await withEtcd { _, etcd in
            let take = { (value: String) in
                try await etcd.txn(
                    compare: [.createRevision(key: "leader", equals: 0)],
                    success: [.put(key: "leader", value: bytes(value)), .get(key: "leader")],
                    failure: [.get(key: "leader")])
            }
            let first = try await take("a")
            #expect(first.succeeded)
            #expect(first.ranges.count == 1)
            #expect(first.ranges.first?.first?.value == bytes("a"))
            #expect(first.revision == first.ranges.first?.first?.modRevision)

            let second = try await take("b")
            #expect(!second.succeeded)
            #expect(second.revision == first.revision)  // the failure branch wrote nothing
            #expect(second.ranges.first?.map(\.value) == [bytes("a")])
        }
    }

    @Test func txnComparesModRevisionValueAndVersion() async throws {
        try await withEtcd { _, etcd in
            let revision = try await etcd.put("k", value: bytes("v1"))
            try await etcd.put("m/1", value: bytes("x"))
            try await etcd.put("m/2", value: bytes("y"))

            let holds = try await etcd.txn(
                compare: [
                    .modRevision(key: "k", equals: revision), .value(key: "k", equals: bytes("v1")),
                    .version(key: "k", equals: 1), .createRevision(key: "k", equals: revision),
                ],
                success: [.put(key: "k", value: bytes("v2")), .getPrefix(prefix: "m/"), .delete(key: "m/1"), .get(key: "k")])
            #expect(holds.succeeded)
            #expect(holds.ranges.map { $0.map(\.key) } == [["m/1", "m/2"], ["k"]])
            #expect(holds.ranges.last?.first?.value == bytes("v2"))
            #expect(try await etcd.get("m/1").kv == nil)

            for compare: EtcdCompare in [
                .modRevision(key: "k", equals: revision), .value(key: "k", equals: bytes("v1")),
                .version(key: "k", equals: 1),
            ] {
                let fails = try await etcd.txn(compare: [compare], success: [.delete(key: "k")], failure: [.get(key: "k")])
                #expect(!fails.succeeded)
                #expect(fails.ranges.first?.first?.value == bytes("v2"))
            }
            #expect(try await etcd.get("k").kv?.value == bytes("v2"))
        }
    }

    @Test func txnComparesGreaterAndLess() async throws {
        try await withEtcd { _, etcd in
            // Zero-padded numbers compare as bytes in numeric order: how members can compare durable LSNs.
            let revision = try await etcd.put("lsn/a", value: bytes("00000000000000000042"))
            let holds: [EtcdCompare] = [
                .valueLess(key: "lsn/a", than: bytes("00000000000000000100")),
                .valueGreater(key: "lsn/a", than: bytes("00000000000000000041")),
                .modRevisionGreater(key: "lsn/a", than: revision - 1), .modRevisionLess(key: "lsn/a", than: revision + 1),
                .createRevisionGreater(key: "lsn/a", than: 0), .createRevisionLess(key: "missing", than: 1),
                .versionGreater(key: "lsn/a", than: 0), .versionLess(key: "lsn/a", than: 2),
            ]
            let fails: [EtcdCompare] = [
                .valueGreater(key: "lsn/a", than: bytes("00000000000000000100")),
                .valueLess(key: "lsn/a", than: bytes("00000000000000000042")),
                .modRevisionLess(key: "lsn/a", than: revision), .versionGreater(key: "lsn/a", than: 1),
                // A value compare on a missing key is false, whatever the relation.
                .valueLess(key: "missing", than: bytes("9")), .valueGreater(key: "missing", than: []),
            ]
            for compare in holds {
                #expect(try await etcd.txn(compare: [compare], success: []).succeeded, "\(compare)")
            }
            for compare in fails {
                #expect(try await !etcd.txn(compare: [compare], success: []).succeeded, "\(compare)")
            }
        }
    }

    @Test func etcdRefusingATxnIsAStatusError() async throws {
        try await withEtcd { _, etcd in
            // etcd refuses a branch that writes one key twice ("duplicate key given in txn request").
            let error = await etcdError {
                _ = try await etcd.txn(compare: [], success: [.put(key: "d", value: []), .put(key: "d", value: [1])])
            }
            guard case .status(let code, let message) = error else {
                Issue.record("expected .status, got \(String(describing: error))")
                return
            }
            #expect(code == 400)
            #expect(message.contains("duplicate key"))
        }
    }
}

@Suite struct LeaseTests {
    @Test func aOneSecondLeaseIsRaisedToEtcdsMinimum() async throws {
        try await withEtcd { _, etcd in
            // etcd 3.4's minimum TTL is ceil(1.5 × election timeout) = 2 s with the default 1000 ms election
            // timeout: asked 1 s, etcd 3.4.23 granted 2 s.
            let lease = try await etcd.grantLease(ttl: 1)
            #expect(lease.id != 0)
            #expect(lease.ttl == 2)
            let remaining = try await etcd.timeToLive(lease: lease.id)
            #expect((0...2).contains(remaining))
            // A lease ID above 2^53 survives the round trip (sent and read as a JSON string).
            #expect(try await etcd.keepAlive(lease: lease.id) == 2)
        }
    }

    @Test func keepAliveExtendsALeaseBeyondItsTTL() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: 2)
            try await etcd.put("held", value: bytes("x"), lease: lease.id)
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .milliseconds(3500) {
                #expect(try await etcd.keepAlive(lease: lease.id) == lease.ttl)
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(try await etcd.get("held").kv?.lease == lease.id)
            #expect(try await etcd.timeToLive(lease: lease.id) > 0)
        }
    }

    @Test func anUnrenewedLeaseExpiresWithItsKeyAndCannotBeRenewed() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: 2)
            try await etcd.put("ephemeral", value: bytes("x"), lease: lease.id)
            #expect(try await etcd.get("ephemeral").kv != nil)
            // etcd checks expiry every 500 ms: the key is gone within about TTL + 0.5 s (6 s allowed: a busy machine).
            let start = ContinuousClock.now
            while try await etcd.get("ephemeral").kv != nil {
                #expect(ContinuousClock.now - start < .seconds(6), "the key outlived its 2 s lease")
                if ContinuousClock.now - start > .seconds(6) { return }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(ContinuousClock.now - start > .milliseconds(1500))
            #expect(await etcdError { _ = try await etcd.keepAlive(lease: lease.id) } == .leaseNotFound(lease.id))
            #expect(await etcdError { _ = try await etcd.timeToLive(lease: lease.id) } == .leaseNotFound(lease.id))
            #expect(await etcdError { try await etcd.revoke(lease: lease.id) } == .leaseNotFound(lease.id))
        }
    }

    @Test func revokeDeletesTheLeasesKeysAndUnknownLeasesAreNotFound() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: 30)
            try await etcd.put("a", value: [1], lease: lease.id)
            let txn = try await etcd.txn(compare: [], success: [.put(key: "b", value: [2], lease: lease.id)])
            #expect(txn.succeeded)
            try await etcd.revoke(lease: lease.id)
            #expect(try await etcd.get("a").kv == nil)
            #expect(try await etcd.get("b").kv == nil)

            let unknown: Int64 = 0x7fff_ffff_0000_0001
            #expect(await etcdError { try await etcd.put("c", value: [], lease: unknown) } == .leaseNotFound(unknown))
            #expect(
                await etcdError {
                    _ = try await etcd.txn(compare: [], success: [.put(key: "c", value: [], lease: unknown)])
                } == .leaseNotFound(unknown))
            #expect(await etcdError { _ = try await etcd.keepAlive(lease: unknown) } == .leaseNotFound(unknown))
            #expect(try await etcd.get("c").kv == nil)
        }
    }
}

@Suite struct WatchTests {
    @Test func watchSeesPutAndDeleteOfAKey() async throws {
        try await withEtcd { _, etcd in
            let start = try await etcd.get("w").revision + 1
            let events = WatchRecorder(etcd.watch(key: "w", startRevision: start))
            let put = try await etcd.put("w", value: bytes("1"))
            try await etcd.put("w2", value: bytes("not watched"))
            try await etcd.delete("w")
            try await etcd.put("w", value: bytes("2"))

            guard case .put(let first) = try await events.next() else { Issue.record("expected a put"); return }
            #expect(first == EtcdKeyValue(key: "w", value: bytes("1"), createRevision: put, modRevision: put, version: 1))
            guard case .delete(let deleted) = try await events.next() else { Issue.record("expected a delete"); return }
            #expect(deleted.key == "w" && deleted.modRevision == put + 2 && deleted.value.isEmpty)
            guard case .put(let again) = try await events.next() else { Issue.record("expected a put"); return }
            #expect(again.value == bytes("2") && again.version == 1)
        }
    }

    @Test func watchOfAPrefixSeesOnlyKeysUnderIt() async throws {
        try await withEtcd { _, etcd in
            let start = try await etcd.get("x").revision + 1
            let events = WatchRecorder(etcd.watch(key: "cluster/members/", prefix: true, startRevision: start))
            try await etcd.put("cluster/members/a", value: [1])
            try await etcd.put("cluster/membersX", value: [2])
            try await etcd.put("cluster/leader", value: [3])
            try await etcd.put("cluster/members/b", value: [4])
            try await etcd.delete("cluster/members/a")

            var seen: [String] = []
            for _ in 0..<3 {
                switch try await events.next() {
                case .put(let kv): seen.append("put \(kv.key)")
                case .delete(let kv): seen.append("delete \(kv.key)")
                }
            }
            #expect(seen == ["put cluster/members/a", "put cluster/members/b", "delete cluster/members/a"])
        }
    }

    @Test func watchReportsALeaseExpiryAsADelete() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: 2)
            let put = try await etcd.put("cluster/leader", value: bytes("me"), lease: lease.id)
            let events = WatchRecorder(etcd.watch(key: "cluster/leader", startRevision: put + 1))
            let start = ContinuousClock.now
            guard case .delete(let kv) = try await events.next(timeout: .seconds(5)) else {
                Issue.record("expected a delete")
                return
            }
            #expect(kv.key == "cluster/leader" && kv.modRevision == put + 1)
            #expect(ContinuousClock.now - start > .seconds(1))
        }
    }

    @Test func anIdleWatchOutlivesTheRequestTimeout() async throws {
        try await withEtcd(requestTimeout: .milliseconds(500)) { _, etcd in
            let start = try await etcd.get("quiet").revision + 1
            let events = WatchRecorder(etcd.watch(key: "quiet", startRevision: start))
            try await Task.sleep(for: .milliseconds(1500))  // 3 request timeouts with nothing to report
            try await etcd.put("quiet", value: [1])
            guard case .put(let kv) = try await events.next() else { Issue.record("expected a put"); return }
            #expect(kv.value == [1])
        }
    }

    @Test func watchFromAnOldRevisionReplaysHistory() async throws {
        try await withEtcd { _, etcd in
            let first = try await etcd.put("h", value: bytes("1"))
            try await etcd.put("h", value: bytes("2"))
            try await etcd.delete("h")
            let events = WatchRecorder(etcd.watch(key: "h", startRevision: first))
            var replayed: [EtcdWatchEvent] = []
            for _ in 0..<3 { replayed.append(try await events.next()) }
            #expect(
                replayed == [
                    .put(EtcdKeyValue(key: "h", value: bytes("1"), createRevision: first, modRevision: first, version: 1)),
                    .put(EtcdKeyValue(key: "h", value: bytes("2"), createRevision: first, modRevision: first + 1, version: 2)),
                    .delete(EtcdKeyValue(key: "h", value: [], modRevision: first + 2)),
                ])
        }
    }

    @Test func watchFromACompactedRevisionThrowsCompacted() async throws {
        try await withEtcd { _, etcd in
            let first = try await etcd.put("c", value: [1])
            let last = try await etcd.put("c", value: [2])
            try await etcd.compact(revision: last)
            let events = WatchRecorder(etcd.watch(key: "c", startRevision: first))
            let error = await etcdError { _ = try await events.next() }
            #expect(error == .compacted(last))
        }
    }

    @Test func watchEndsByThrowingWhenEtcdDies() async throws {
        try await withEtcd { server, etcd in
            let start = try await etcd.put("k", value: [1]) + 1
            let events = WatchRecorder(etcd.watch(key: "k", startRevision: start))
            try await etcd.put("k", value: [2])
            _ = try await events.next()
            server.kill()
            let error = await etcdError { _ = try await events.next() }
            guard case .unreachable = error else {
                Issue.record("expected .unreachable, got \(String(describing: error))")
                return
            }
        }
    }

    /// etcd's own count of open watchers (`etcd_debugging_mvcc_watcher_total` on `GET /metrics`).
    func openWatchers(_ server: TestEtcd, _ etcd: EtcdClient) async throws -> Int {
        let response = try await etcd.http.execute(HTTPClientRequest(url: server.clientURL + "/metrics"), timeout: .seconds(2))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 24))
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("etcd_debugging_mvcc_watcher_total ") })
        return try #require(Int(line.split(separator: " ").last ?? ""))
    }

    /// Polls `openWatchers` until it is `count` (3 s at most).
    func expectOpenWatchers(_ count: Int, _ server: TestEtcd, _ etcd: EtcdClient, sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        let deadline = ContinuousClock.now + .seconds(10)
        var seen = try await openWatchers(server, etcd)
        while seen != count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            seen = try await openWatchers(server, etcd)
        }
        #expect(seen == count, "etcd's open watchers", sourceLocation: sourceLocation)
    }

    @Test func cancellingTheConsumerOrDroppingTheStreamClosesTheWatchInEtcd() async throws {
        try await withEtcd { server, etcd in
            let consumer = Task {
                for try await _ in etcd.watch(key: "idle") {}
            }
            try await expectOpenWatchers(1, server, etcd)
            consumer.cancel()
            _ = await consumer.result  // ends: does not hang
            try await expectOpenWatchers(0, server, etcd)

            var recorder: WatchRecorder? = WatchRecorder(etcd.watch(key: "idle"))
            try await expectOpenWatchers(1, server, etcd)
            recorder = nil
            _ = recorder
            try await expectOpenWatchers(0, server, etcd)
        }
    }
}

@Suite struct EndpointTests {
    @Test func invalidEndpointsAreRejected() throws {
        for endpoint in ["127.0.0.1:2379", "https://127.0.0.1:2379", "http://", "http://h:1/v3", "http://h:1?x=1", "http://u@h:1", "http://h:0"] {
            #expect(throws: EtcdError.invalidEndpoint(endpoint), "\(endpoint)") {
                _ = try EtcdClient(endpoints: [endpoint])
            }
        }
        #expect(throws: EtcdError.self) { _ = try EtcdClient(endpoints: []) }
    }

    @Test func aDeadFirstEndpointIsSkipped() async throws {
        let server = try await TestEtcd.start()
        defer { server.destroy() }
        let dead = try RefusingPort()
        let etcd = try EtcdClient(endpoints: [dead.url, server.clientURL + "/"])
        #expect(etcd.endpoints[1] == server.clientURL)  // the trailing "/" is dropped
        try await etcd.put("k", value: [1])  // a write: the dead endpoint refused the connection, so it was never sent
        #expect(etcd.preferred.withLock { $0 } == 1)
        #expect(try await etcd.get("k").kv?.value == [1])
        await etcd.shutdown()
        await etcd.shutdown()  // twice is fine
        withExtendedLifetime(dead) {}
    }

    @Test func allEndpointsDeadIsUnreachableWithinTheTimeout() async throws {
        let ports = [try RefusingPort(), try RefusingPort()]
        let dead = ports.map(\.url)
        // Refused connections fail at once: the client gives up on all endpoints long before its timeout
        // (a generous 5 s, so that a starved cooperative pool in `make test`'s first group cannot turn the
        // answer into .timeout).
        let etcd = try EtcdClient(endpoints: dead, requestTimeout: .seconds(5))
        let start = ContinuousClock.now
        let error = await etcdError { _ = try await etcd.get("k") }
        #expect(ContinuousClock.now - start < .seconds(4))
        guard case .unreachable(let endpoints, let lastError) = error else {
            Issue.record("expected .unreachable, got \(String(describing: error))")
            await etcd.shutdown()
            return
        }
        #expect(endpoints == dead)
        #expect(lastError.contains(dead[1]))
        let watchError = await etcdError { for try await _ in etcd.watch(key: "k") {} }
        guard case .unreachable = watchError else {
            Issue.record("expected .unreachable from watch, got \(String(describing: watchError))")
            await etcd.shutdown()
            return
        }
        await etcd.shutdown()
        withExtendedLifetime(ports) {}
    }

    @Test func aPausedEtcdTimesOutWithinTheRequestTimeout() async throws {
        try await withEtcd(requestTimeout: .milliseconds(800)) { server, etcd in
            try await etcd.put("k", value: [1])
            server.pause()
            defer { server.resume() }
            let start = ContinuousClock.now
            let error = await etcdError { _ = try await etcd.get("k") }
            let elapsed = ContinuousClock.now - start
            // Upper bound: the timeout plus slack for a busy machine (the first `make test` group).
            #expect(elapsed >= .milliseconds(780) && elapsed < .seconds(3), "took \(elapsed)")
            guard case .timeout(let what) = error else {
                Issue.record("expected .timeout, got \(String(describing: error))")
                return
            }
            #expect(what.contains("/v3/kv/range"))
        }
    }

    @Test func etcdRestartedUnderALiveClientAnswersTheNextRequest() async throws {
        try await withEtcd { server, etcd in
            try await etcd.put("k", value: [1])
            server.kill()
            await #expect(throws: EtcdError.self) { _ = try await etcd.get("k") }
            try await server.restart()
            #expect(try await etcd.get("k").kv?.value == [1])
            try await etcd.put("k", value: [2])
        }
    }
}

/// What the client makes of answers that are not etcd's (no etcd needed).
@Suite struct MalformedAnswerTests {
    @Test func aBadIntegerIsMalformedAndNamesTheField() throws {
        let error = #expect(throws: EtcdError.self) {
            _ = try decodeJSON(RangeResponse.self, from: bytes(#"{"header":{"revision":"12x"}}"#), context: "/v3/kv/range")
        }
        guard case .malformed(let text) = error else { Issue.record("expected .malformed, got \(String(describing: error))"); return }
        #expect(text.contains("header.revision") && text.contains("12x"))
    }

    @Test func intsAreReadFromStringsOrNumbersAndAbsentMeansZero() throws {
        let response = try decodeJSON(
            RangeResponse.self,
            from: bytes(#"{"header":{"revision":"9223372036854775807"},"kvs":[{"key":"YQ==","mod_revision":7}]}"#),
            context: "test")
        #expect(response.header?.revision?.value == Int64.max)
        #expect(try response.kvs?.first?.decoded() == EtcdKeyValue(key: "a", value: [], modRevision: 7))
    }

    @Test func badBase64AndNonJSONAreMalformed() throws {
        let kv = try decodeJSON(WireKeyValue.self, from: bytes(#"{"key":"!!!"}"#), context: "test")
        #expect(throws: EtcdError.self) { _ = try kv.decoded() }
        #expect(throws: EtcdError.self) { _ = try decodeJSON(RangeResponse.self, from: bytes("<html>"), context: "test") }
        #expect(throws: EtcdError.self) { _ = try EtcdClient.watchEvents(bytes(#"{"result":{"events":[{"type":"BOGUS","kv":{}}]}}"#)[...]) }
        #expect(throws: EtcdError.self) { _ = try EtcdClient.watchEvents(bytes("{}")[...]) }
    }

    @Test func watchMessagesSplitAcrossChunksOrSharingOneAreAllRead() throws {
        let messages =
            #"{"result":{"created":true}}"# + "\n"
            + #"{"result":{"events":[{"kv":{"key":"YQ==","value":"eA==","mod_revision":"5"}}]}}"# + "\n"
            + #"{"result":{"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"6"}}]}}"# + "\n"
        let all = bytes(messages)
        for chunkSize in [1, 7, 40, all.count] {
            var splitter = JSONLineSplitter(maxLineBytes: 1 << 20)
            var events: [EtcdWatchEvent] = []
            var offset = 0
            while offset < all.count {
                splitter.append(all[offset..<min(offset + chunkSize, all.count)])
                offset += chunkSize
                while let line = try splitter.next() { events += try EtcdClient.watchEvents(line) }
            }
            #expect(splitter.remainder() == nil)
            #expect(
                events == [
                    .put(EtcdKeyValue(key: "a", value: bytes("x"), modRevision: 5)),
                    .delete(EtcdKeyValue(key: "a", value: [], modRevision: 6)),
                ], "chunks of \(chunkSize)")
        }
    }

    @Test func anOverlongWatchMessageIsMalformed() throws {
        var splitter = JSONLineSplitter(maxLineBytes: 16)
        splitter.append(bytes(String(repeating: "x", count: 17)))
        #expect(throws: EtcdError.self) { _ = try splitter.next() }
    }
}
