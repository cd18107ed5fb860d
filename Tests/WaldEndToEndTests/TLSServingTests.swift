// TLS while serving: a follower over mutual TLS under load, clients that never finish a
// handshake (and silent ones) next to a well-behaved client, and certificates reloaded on
// SIGHUP under a live connection. Real processes, real certificates (TLSSupport.swift).
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Polls until `condition` holds; false after `seconds`.
private func waitUntil(seconds: Double, _ condition: () async throws -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? await condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return false
}

/// Whether the server closed `connection` (a read sees end of stream within `seconds`).
private func closedByServer(_ connection: RawConnection, within seconds: Int) -> Bool {
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(connection.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var byte: UInt8 = 0
    while true {
        let n = recv(connection.fd, &byte, 1, 0)
        if n == 0 { return true }
        if n < 0 { return errno == ECONNRESET }
    }
}

/// Whether the server has closed `connection` by now (no waiting).
private func isClosedNow(_ connection: RawConnection) -> Bool {
    var byte: UInt8 = 0
    let n = recv(connection.fd, &byte, 1, Int32(MSG_DONTWAIT))
    return n == 0 || (n < 0 && errno == ECONNRESET)
}

/// The subject of the certificate a new TLS connection is served, as `openssl s_client` prints it.
private func servedSubject(port: UInt16, ca: String) throws -> String {
    let run = try runProgram("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", ca],
                             timeout: 20, standardInput: FileHandle(forReadingAtPath: "/dev/null"))
    return run.stdout.split(separator: "\n").first { $0.hasPrefix("subject=") }.map(String.init) ?? run.stdout + run.stderr
}

@Suite(.serialized) struct TLSServingTests {
    @Test(.timeLimit(.minutes(1)))
    func aFollowerOverMutualTLSStaysIdenticalToItsPrimaryUnderLoad() async throws {
        let certificates = try TestCertificates.shared()
        let primary = try WaldProcess(arguments: certificates.serverArguments(clientAuth: "require")
                                          + ["--max-segment-bytes", "65536"])
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: [
            "--follow", "127.0.0.1:\(primary.tlsPort)", "--follow-tls", "--follow-tls-ca-file", certificates.ca,
            "--follow-tls-cert-file", certificates.certificate("follower-1"),
            "--follow-tls-key-file", certificates.key("follower-1"), "--max-segment-bytes", "65536",
        ])
        defer { follower.cleanup() }

        // 8 writers, half over TLS and half in clear, while the follower streams.
        let acked = Locked<[UInt64: [UInt8]]>([:])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    let client = writer % 2 == 0
                        ? try await WALClient.connect(primary.tlsEndpoint, timeout: .seconds(20), tls: certificates.client("follower-1"))
                        : try await WALClient.connect(primary.plainEndpoint, timeout: .seconds(20))
                    defer { client.close() }
                    for i in 0..<60 {
                        let records = (0..<(i % 3 + 1)).map { payload("mtls-\(writer)-\(i)-\($0)", size: 20 + (i * 37 + $0) % 900) }
                        let (first, _) = try await client.append(batch: records)
                        acked.withLock { log in for (k, r) in records.enumerated() { log[first + UInt64(k)] = r } }
                    }
                }
            }
            try await group.waitForAll()
        }
        let last = acked.current.keys.max() ?? 0
        let caughtUp = await waitUntil(seconds: 30) {
            let client = try await WALClient.connect(follower.plainEndpoint, timeout: .seconds(5))
            defer { client.close() }
            return try await client.info().durableLSN >= last
        }
        #expect(caughtUp, "the follower did not reach LSN \(last): \(follower.stderrText)")
        let primaryLog = try await replayAll(primary.plainEndpoint)
        let followerLog = try await replayAll(follower.plainEndpoint)
        expectLog(primaryLog, holds: acked.current, "primary")
        #expect(followerLog == primaryLog, "the follower's log differs from the primary's")
        let info = try await WALClient.connect(follower.plainEndpoint).info().json
        #expect(info.contains("\"upstream_connected\":true"), "\(info)")
    }

    /// Connections from one address that never finish (or start) a TLS handshake, then many
    /// more, TLS and plain: beyond the per-address limit they are closed at once, the stalled
    /// handshakes after 10 s, while clients from another address are served throughout.
    @Test(.timeLimit(.minutes(1)))
    func clientsThatNeverFinishAHandshakeDoNotLockOutOthers() async throws {
        let certificates = try TestCertificates.shared()
        let wald = try WaldProcess(arguments: certificates.serverArguments()
                                       + ["--max-connections", "24", "--max-connections-per-address", "8"])
        defer { wald.cleanup() }
        let plain = try await WALClient.connect(wald.plainEndpoint, timeout: .seconds(10))
        defer { plain.close() }
        // Before the first stalled connection: every handshake timer starts after this.
        let start = ContinuousClock.now
        var stalled: [RawConnection] = []
        for index in 0..<8 {
            let connection = try RawConnection(port: wald.tlsPort, source: "127.0.0.2")
            // Half send the first bytes of a ClientHello and stop; the rest send nothing.
            if index % 2 == 0 { connection.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) }
            stalled.append(connection)
        }
        // Once they hold the address's 8 slots (plus `plain`), 32 more from the same address.
        let admitted = await waitUntil(seconds: 10) { try await plain.info().connections == 9 }
        #expect(admitted, "the 8 stalled connections were not all admitted")
        var refused: [RawConnection] = []
        for index in 0..<32 {
            let connection = try RawConnection(port: index % 2 == 0 ? wald.tlsPort : wald.port, source: "127.0.0.2")
            if index % 4 == 0 { connection.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) }
            refused.append(connection)
        }
        // Another address is served at once, over TLS and in clear.
        let client = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client())
        defer { client.close() }
        #expect(try await client.append(payload("served", size: 50)) == 1)
        #expect(try await plain.ping() == [])
        // The 32 over the address's limit are closed at once (generously: the suites run in
        // parallel on a 2-core machine).
        let allRefused = await waitUntil(seconds: 8) {
            refused.removeAll { isClosedNow($0) }
            return refused.isEmpty
        }
        #expect(allRefused, "\(refused.count) connections over the per-address limit are still open")
        // The stalled handshakes are closed after 10 s, not before.
        for connection in stalled {
            #expect(closedByServer(connection, within: 20), "a stalled TLS handshake outlived the limit")
        }
        #expect(ContinuousClock.now - start >= .seconds(9), "closed before the handshake limit")
        // The well-behaved clients are still served.
        #expect(try await client.append(payload("still served", size: 50)) == 2)
        #expect(try await plain.ping() == [])
    }

    /// `tls_handshake_timeout` (default 10 s) bounds a stalled handshake; SIGHUP changes it for
    /// connections made afterwards: at 30 s from the file, then 1 s after a reload, a stalled
    /// handshake is closed after about a second, not 30.
    @Test(.timeLimit(.minutes(1)))
    func theHandshakeTimeoutIsAnOptionAndReloads() async throws {
        let certificates = try TestCertificates.shared()
        let file = NSTemporaryDirectory() + "wald-e2e-handshake-\(UUID().uuidString).yaml"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "tls_handshake_timeout: 30s\n".write(toFile: file, atomically: true, encoding: .utf8)
        let wald = try WaldProcess(arguments: certificates.serverArguments() + ["--config", file, "--listen", "127.0.0.1:0",
                                                                               "--log-level", "info"])
        defer { wald.cleanup() }
        let early = try RawConnection(port: wald.tlsPort)
        early.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        try "tls_handshake_timeout: 1s\n".write(toFile: file, atomically: true, encoding: .utf8)
        kill(wald.process.processIdentifier, SIGHUP)
        let reloaded = await waitUntil(seconds: 20) { wald.stderrText.contains("configuration reloaded") }
        #expect(reloaded, "\(wald.stderrText)")
        let start = ContinuousClock.now
        let late = try RawConnection(port: wald.tlsPort)
        late.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        #expect(closedByServer(late, within: 20), "a stalled handshake outlived tls_handshake_timeout 1s")
        let waited = ContinuousClock.now - start
        // Below the default (10 s) and the file's first value (30 s): the reloaded 1 s was applied.
        #expect(waited >= .milliseconds(900) && waited < .seconds(8), "closed after \(waited)")
        // The connection made before the reload keeps the 30 s it started with.
        #expect(!isClosedNow(early), "the handshake timer of an earlier connection changed")
        #expect(try runTool("wald", ["--tls-handshake-timeout", "0"]).stderr.contains(
            "invalid --tls-handshake-timeout \"0\": expected a duration above 0"))
    }

    @Test(.timeLimit(.minutes(1)))
    func silentConnectionsAreClosedAfterTheIdleTimeoutButStreamsAreNot() async throws {
        let wald = try WaldProcess(arguments: ["--idle-timeout", "1s"])
        defer { wald.cleanup() }
        let silent = try RawConnection(port: wald.port)
        let follower = try await WALClient.connect(wald.plainEndpoint, timeout: nil)
        defer { follower.close() }
        let stream = follower.follow(from: 1)
        #expect(closedByServer(silent, within: 5), "a silent connection outlived idle_timeout")
        // The follow stream, silent on its side for longer than the timeout, still receives.
        try await Task.sleep(for: .milliseconds(1500))
        let writer = try await WALClient.connect(wald.plainEndpoint)
        defer { writer.close() }
        try await writer.append(payload("after the idle timeout", size: 30))
        var iterator = stream.makeAsyncIterator()
        let record = try await iterator.next()
        #expect(record?.payload == payload("after the idle timeout", size: 30))
    }

    @Test(.timeLimit(.minutes(1)))
    func sighupReloadsTheCertificateForNewConnectionsAndKeepsOpenOnes() async throws {
        let certificates = try TestCertificates.shared()
        let live = NSTemporaryDirectory() + "wald-e2e-live-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: live) }
        func install(_ name: String) throws {
            for (from, to) in [(certificates.certificate(name), live + "/server.pem"), (certificates.key(name), live + "/server.key")] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try install("server")
        let wald = try WaldProcess(arguments: ["--tls-listen", "127.0.0.1:0", "--tls-cert-file", live + "/server.pem",
                                               "--tls-key-file", live + "/server.key", "--log-level", "notice"])
        defer { wald.cleanup() }
        #expect(try servedSubject(port: wald.tlsPort, ca: certificates.ca) == "subject=CN = localhost")
        let open = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client())
        defer { open.close() }
        #expect(try await open.append(payload("before", size: 20)) == 1)

        try install("server-renewed")
        kill(wald.process.processIdentifier, SIGHUP)
        let renewed = await waitUntil(seconds: 10) {
            try servedSubject(port: wald.tlsPort, ca: certificates.ca) == "subject=CN = localhost-renewed"
        }
        #expect(renewed, "new connections still get the old certificate: \(wald.stderrText)")
        #expect(try await open.append(payload("after", size: 20)) == 2, "the open connection did not survive the reload")

        // A broken certificate file is rejected: the running one stays, connections too.
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: live + "/server.pem"))
        kill(wald.process.processIdentifier, SIGHUP)
        let rejected = await waitUntil(seconds: 10) { wald.stderrText.contains("configuration reload rejected") }
        #expect(rejected, "\(wald.stderrText)")
        #expect(try servedSubject(port: wald.tlsPort, ca: certificates.ca) == "subject=CN = localhost-renewed")
        #expect(try await open.append(payload("after a bad reload", size: 20)) == 3)
    }
}
