// wald's TLS listeners with real certificates (TLSSupport.swift), real processes and clients
// nobody here wrote: WALClient and walctl over TLS, `openssl s_client` speaking the text
// protocol, `redis-cli --tls` speaking RESP; certificates from the wrong CA, expired ones and
// missing client certificates refused; start-up errors for TLS settings that cannot work.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The failure of a TLS connect, as text (the test's expectation names what it should say).
private func connectFailure(_ endpoint: Endpoint, tls: ClientTLS) async -> String {
    do {
        let client = try await WALClient.connect(endpoint, timeout: .seconds(10), tls: tls)
        defer { client.close() }
        // TLS 1.3: a server that refuses the client's certificate says so after the client's
        // handshake is done, so the refusal shows on the first request.
        _ = try await client.ping()
        return "connected"
    } catch {
        return "\(error)"
    }
}

@Suite(.serialized) struct TLSTests {
    @Test(.timeLimit(.minutes(1)))
    func binaryTextAndRESPWorkOverTLSBesideThePlainListener() async throws {
        let certificates = try TestCertificates.shared()
        let wald = try WaldProcess(arguments: certificates.serverArguments())
        defer { wald.cleanup() }
        #expect(wald.tlsPort != 0, "ready line: \(wald.readyLine)")

        // Binary protocol through WALClient: append, then replay what the plain listener sees too.
        let client = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client())
        let first = try await client.append(payload("tls-0", size: 100))
        let (second, _) = try await client.append(batch: (1...50).map { payload("tls-\($0)", size: 100 + $0 * 300) })
        #expect(first == 1 && second == 2)
        var replayed: [ReplayedRecord] = []
        for try await record in client.replay(from: 1) { replayed.append(record) }
        client.close()
        #expect(replayed.count == 51)
        #expect(replayed.last?.payload == payload("tls-50", size: 100 + 50 * 300))
        #expect(try await replayAll(wald.plainEndpoint) == replayed)

        // The text protocol through openssl s_client, verifying the server against the test CA.
        let input = NSTemporaryDirectory() + "wald-e2e-sclient-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: input, contents: Data("PING\r\nAPPEND over-s_client\r\nQUIT\r\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: input) }
        let sClient = try runProgram("/usr/bin/openssl", [
            "s_client", "-connect", "127.0.0.1:\(wald.tlsPort)", "-CAfile", certificates.ca, "-verify_return_error",
            "-verify_ip", "127.0.0.1", "-quiet",
        ], timeout: 20, standardInput: FileHandle(forReadingAtPath: input))
        #expect(sClient.stdout.contains("PONG\r\n"), "s_client: \(sClient.stdout) \(sClient.stderr)")
        #expect(sClient.stdout.contains("OK 52\r\n"), "s_client: \(sClient.stdout) \(sClient.stderr)")

        // RESP through redis-cli --tls.
        let cli = "/usr/bin/redis-cli"
        let tlsArgs = ["--tls", "--cacert", certificates.ca, "-h", "127.0.0.1", "-p", "\(wald.tlsPort)"]
        let ping = try runProgram(cli, tlsArgs + ["PING"], timeout: 20)
        #expect(ping.stdout == "PONG\n", "redis-cli PING: \(ping.stdout) \(ping.stderr)")
        let xadd = try runProgram(cli, tlsArgs + ["XADD", "wal", "*", "data", "from-redis-cli"], timeout: 20)
        #expect(xadd.stdout == "53-0\n", "redis-cli XADD: \(xadd.stdout) \(xadd.stderr)")
        let records = try await replayAll(wald.plainEndpoint)
        #expect(records.count == 53)
        #expect(records.last?.payload == Array("from-redis-cli".utf8))

        // walctl over TLS.
        let walctl = try runTool("walctl", ["append", "--server", "127.0.0.1:\(wald.tlsPort)", "--tls-ca-file", certificates.ca,
                                            "from-walctl"])
        #expect(walctl.status == 0, "walctl append: \(walctl.stdout) \(walctl.stderr)")
        let info = try runTool("walctl", ["info", "--server", "127.0.0.1:\(wald.tlsPort)", "--tls", "--tls-ca-file", certificates.ca])
        #expect(info.status == 0 && info.stdout.contains("\"last_lsn\":54"), "walctl info: \(info.stdout) \(info.stderr)")
    }

    @Test(.timeLimit(.minutes(1)))
    func aServerCertificateFromAnotherCAIsRefused() async throws {
        let certificates = try TestCertificates.shared()
        let wald = try WaldProcess(arguments: certificates.serverArguments())
        defer { wald.cleanup() }
        let failure = await connectFailure(wald.tlsEndpoint, tls: certificates.client(ca: certificates.certificate("other-ca")))
        #expect(failure.contains("certificate verify failed"), "\(failure)")
        // A name the certificate does not carry is refused too.
        var wrongName = certificates.client()
        wrongName.serverName = "wald.example.org"
        let nameFailure = await connectFailure(wald.tlsEndpoint, tls: wrongName)
        #expect(nameFailure.contains("certificate verify failed"), "\(nameFailure)")
        let walctl = try runTool("walctl", ["ping", "--server", "127.0.0.1:\(wald.tlsPort)",
                                            "--tls-ca-file", certificates.certificate("other-ca")])
        #expect(walctl.status == 1 && walctl.stderr.contains("certificate verify failed"), "\(walctl.stderr)")
        // The server is unharmed.
        let client = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client())
        defer { client.close() }
        #expect(try await client.append(payload("after", size: 10)) == 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func expiredCertificatesAreRefusedOnBothSides() async throws {
        let certificates = try TestCertificates.shared()
        let expiredServer = try WaldProcess(arguments: certificates.serverArguments("server-expired"))
        defer { expiredServer.cleanup() }
        let failure = await connectFailure(expiredServer.tlsEndpoint, tls: certificates.client())
        #expect(failure.contains("certificate has expired"), "\(failure)")

        let server = try WaldProcess(arguments: certificates.serverArguments(clientAuth: "require"))
        defer { server.cleanup() }
        let clientFailure = await connectFailure(server.tlsEndpoint, tls: certificates.client("client-expired"))
        #expect(clientFailure != "connected", "an expired client certificate was accepted")
        #expect(await connectFailure(server.tlsEndpoint, tls: certificates.client("follower-1")) == "connected")
    }

    @Test(.timeLimit(.minutes(1)))
    func clientAuthRequireRefusesAClientWithoutACertificate() async throws {
        let certificates = try TestCertificates.shared()
        let wald = try WaldProcess(arguments: certificates.serverArguments(clientAuth: "require"))
        defer { wald.cleanup() }
        let failure = await connectFailure(wald.tlsEndpoint, tls: certificates.client())
        #expect(failure != "connected", "a client without a certificate was served")
        // A certificate from another CA is no better.
        let foreign = try TestCertificates.shared()
        let other = await connectFailure(wald.tlsEndpoint, tls: ClientTLS(
            caFile: foreign.ca, certificateFile: foreign.certificate("other-ca"), keyFile: foreign.key("other-ca")))
        #expect(other != "connected", "a client certificate from another CA was accepted")
        #expect(await connectFailure(wald.tlsEndpoint, tls: certificates.client("follower-1")) == "connected")
        let walctl = try runTool("walctl", ["append", "--server", "127.0.0.1:\(wald.tlsPort)", "--tls-ca-file", certificates.ca,
                                            "--tls-cert-file", certificates.certificate("follower-1"),
                                            "--tls-key-file", certificates.key("follower-1"), "mutual"])
        #expect(walctl.status == 0, "\(walctl.stderr)")
        #expect(wald.process.isRunning)
    }

    @Test(.timeLimit(.minutes(1)))
    func aTLSOnlyServerServesNoPlainPort() async throws {
        let certificates = try TestCertificates.shared()
        let file = NSTemporaryDirectory() + "wald-e2e-tls-only-\(UUID().uuidString).yaml"
        let yaml = "listen: []\ntls_listen: [127.0.0.1:0]\ntls_cert_file: \(certificates.certificate("server"))\n"
            + "tls_key_file: \(certificates.key("server"))\n"
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let wald = try WaldProcess(arguments: ["--config", file])
        defer { wald.cleanup() }
        #expect(wald.readyLine.split(separator: " ").allSatisfy { $0.hasPrefix("tls=") }, "ready line: \(wald.readyLine)")
        #expect(await connectFailure(wald.tlsEndpoint, tls: certificates.client()) == "connected")
    }

    /// Settings that cannot serve stop wald at start with one line naming the problem, and
    /// leave no data directory behind.
    @Test(.timeLimit(.minutes(1)))
    func tlsSettingsThatCannotWorkAreStartupErrors() throws {
        let certificates = try TestCertificates.shared()
        let directory = NSTemporaryDirectory() + "wald-e2e-tls-bad-\(UUID().uuidString)"
        let cases: [(arguments: [String], says: String)] = [
            (["--tls-listen", "127.0.0.1:0"], "tls_cert_file and tls_key_file"),
            (["--tls-listen", "127.0.0.1:0", "--tls-cert-file", certificates.path("missing.pem"),
              "--tls-key-file", certificates.key("server")], "cannot read the TLS certificate \(certificates.path("missing.pem"))"),
            (["--tls-listen", "127.0.0.1:0", "--tls-cert-file", certificates.certificate("server"),
              "--tls-key-file", certificates.key("follower-1")], "does not match the certificate"),
            (["--tls-listen", "127.0.0.1:0", "--tls-cert-file", certificates.certificate("server"),
              "--tls-key-file", certificates.path("server.ext")], "cannot load the TLS key"),
            (["--tls-listen", "127.0.0.1:0", "--tls-cert-file", certificates.certificate("server"),
              "--tls-key-file", certificates.key("server"), "--tls-client-auth", "require"], "tls_ca_file"),
            (["--tls-client-auth", "sometimes"], "expected none, request or require"),
            (["--follow-tls"], "expected follow (or ha_etcd) to be set"),
            (["--follow-tls-ca-file", certificates.ca, "--follow", "127.0.0.1:1"], "follow_tls to be on"),
        ]
        for (arguments, says) in cases {
            let run = try runTool("wald", ["--data-dir", directory, "--listen", "127.0.0.1:0"] + arguments, timeout: 30)
            #expect(run.status != 0, "\(arguments) started")
            #expect(run.stderr.contains(says), "\(arguments): \(run.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory), "\(arguments) created the data directory")
        }
    }
}
