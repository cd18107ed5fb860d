// Roles against a real wald: users from the config file with hashes made by `walctl hash-token`,
// client certificates mapped to roles, and the single auth token as admin; each role allowed and
// refused per request type over the binary protocol (WALClient), the text protocol (a raw
// socket) and RESP (redis-cli). A refusal names the missing right and leaves the connection open.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// wald with users `reader`, `appender`, `boss` (tokens `<name>-token`), the auth token
/// `legacy-token`, certificate roles for reader-cert/appender-cert/admin-cert, and a TLS
/// listener that asks for (but does not require) client certificates.
private func startWithRoles() throws -> (WaldProcess, TestCertificates, String) {
    let certificates = try TestCertificates.shared()
    var users = ""
    for (name, role) in [("reader", "read"), ("appender", "append"), ("boss", "admin")] {
        let hashed = try runTool("walctl", ["hash-token"], input: Array("\(name)-token\n".utf8))
        #expect(hashed.status == 0 && hashed.stdout.hasPrefix("pbkdf2-sha256$"), "hash-token: \(hashed.stderr)")
        #expect(!hashed.stdout.contains("\(name)-token"), "hash-token printed the token")
        users += "  - name: \(name)\n    role: \(role)\n    token_hash: \"\(hashed.stdout.trimmingCharacters(in: .whitespacesAndNewlines))\"\n"
    }
    let file = NSTemporaryDirectory() + "wald-e2e-roles-\(UUID().uuidString).yaml"
    let yaml = "auth_token: legacy-token\nusers:\n\(users)cert_roles:\n  reader-cert: read\n  appender-cert: append\n"
        + "  admin-cert: admin\n"
    try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
    let wald = try WaldProcess(arguments: ["--config", file, "--listen", "127.0.0.1:0"]
                                   + certificates.serverArguments(clientAuth: "request"))
    return (wald, certificates, file)
}

/// The message of a refused call, or "allowed".
private func outcome(_ call: () async throws -> Void) async -> String {
    do {
        try await call()
        return "allowed"
    } catch WALClientError.server(let code, let message) {
        return "\(code.name) \(message)"
    } catch {
        return "\(error)"
    }
}

@Suite(.serialized) struct RoleTests {
    @Test(.timeLimit(.minutes(1)))
    func eachRoleIsAllowedAndRefusedPerRequestOverTheBinaryProtocol() async throws {
        let (wald, _, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        let anonymous = try await WALClient.connect(wald.plainEndpoint, timeout: .seconds(10))
        defer { anonymous.close() }
        #expect(try await anonymous.ping() == [])
        #expect(await outcome { _ = try await anonymous.info() } == "UNAUTHORIZED authenticate first with AUTH <token>")

        let expected: [(token: String, append: String, truncate: String)] = [
            ("reader-token", "UNAUTHORIZED role read lacks append", "UNAUTHORIZED role read lacks truncate"),
            ("appender-token", "allowed", "UNAUTHORIZED role append lacks truncate"),
            ("boss-token", "allowed", "allowed"),
            ("legacy-token", "allowed", "allowed"),
        ]
        for (token, append, truncate) in expected {
            let client = try await WALClient.connect(wald.plainEndpoint, token: token, timeout: .seconds(10))
            defer { client.close() }
            #expect(await outcome { try await client.append(payload(token, size: 20)) } == append, "\(token) APPEND")
            #expect(await outcome { _ = try await client.info() } == "allowed", "\(token) INFO")
            #expect(await outcome { _ = try await client.sync() } == "allowed", "\(token) SYNC")
            #expect(await outcome { _ = try await client.ping() } == "allowed", "\(token) PING")
            #expect(await outcome { for try await _ in client.replay(from: 1) {} } == "allowed", "\(token) REPLAY")
            #expect(await outcome { _ = try await client.truncate(before: 1) } == truncate, "\(token) TRUNCATE")
            // The connection stays open after a refusal.
            #expect(await outcome { _ = try await client.ping() } == "allowed", "\(token) after a refusal")
        }
        #expect(await outcome { _ = try await WALClient.connect(wald.plainEndpoint, token: "reader-tokeN") }
                    == "UNAUTHORIZED wrong token")
        #expect(!wald.stderrText.contains("reader-token") && !wald.stderrText.contains("legacy-token"), "a token was logged")
    }

    @Test(.timeLimit(.minutes(1)))
    func eachRoleIsAllowedAndRefusedPerRequestOverTheTextProtocol() throws {
        let (wald, _, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        func session(_ token: String?) throws -> (String) -> String {
            let connection = try RawConnection(port: wald.port)
            if let token {
                connection.send("AUTH \(token)\r\n")
                #expect(connection.readLine() == "OK")
            }
            return { line in
                connection.send(line + "\r\n")
                return connection.readLine() ?? "(closed)"
            }
        }
        let anonymous = try session(nil)
        #expect(anonymous("PING") == "PONG")
        #expect(anonymous("APPEND x") == "ERR UNAUTHORIZED authenticate first with AUTH <token>")
        let reader = try session("reader-token")
        #expect(reader("APPEND x") == "ERR UNAUTHORIZED role read lacks append")
        #expect(reader("SYNC").hasPrefix("SYNCED"))
        #expect(reader("INFO").hasPrefix("{"))
        #expect(reader("METRICS") == "ERR UNAUTHORIZED role read lacks metrics")
        #expect(reader("PROMOTE") == "ERR UNAUTHORIZED role read lacks promote")
        #expect(reader("TRUNCATE 1") == "ERR UNAUTHORIZED role read lacks truncate")
        let appender = try session("appender-token")
        #expect(appender("APPEND x") == "OK 1")
        #expect(appender("TRUNCATE 1") == "ERR UNAUTHORIZED role append lacks truncate")
        #expect(appender("METRICS") == "ERR UNAUTHORIZED role append lacks metrics")
        #expect(appender("APPEND y") == "OK 2", "the connection stays usable after a refusal")
        let admin = try session("boss-token")
        #expect(admin("TRUNCATE 1") == "OK 1")
        #expect(!admin("METRICS").hasPrefix("ERR"))
        // Guessing costs a PBKDF2 per user on the server: the third wrong token ends the connection.
        let guesser = try session(nil)
        #expect(guesser("AUTH guess-1") == "ERR UNAUTHORIZED wrong token")
        #expect(guesser("AUTH guess-2") == "ERR UNAUTHORIZED wrong token")
        #expect(guesser("AUTH guess-3") == "ERR UNAUTHORIZED wrong token")
        #expect(guesser("PING") == "(closed)")
    }

    @Test(.timeLimit(.minutes(1)))
    func eachRoleIsAllowedAndRefusedOverRESP() throws {
        let (wald, _, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        func cli(_ arguments: [String]) throws -> String {
            let run = try runProgram("/usr/bin/redis-cli", ["-h", "127.0.0.1", "-p", "\(wald.port)", "--no-auth-warning"] + arguments,
                                     timeout: 20)
            return (run.stdout + run.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try cli(["XLEN", "wal"]) == "NOAUTH Authentication required.")
        #expect(try cli(["--user", "reader", "--pass", "reader-token", "XADD", "wal", "*", "data", "r"])
                    == "NOPERM role read lacks append (XADD)")
        #expect(try cli(["--user", "reader", "--pass", "reader-token", "XLEN", "wal"]) == "0")
        #expect(try cli(["--user", "appender", "--pass", "appender-token", "XADD", "wal", "*", "data", "a"]) == "1-0")
        #expect(try cli(["--user", "appender", "--pass", "appender-token", "XTRIM", "wal", "MINID", "~", "2"])
                    == "NOPERM role append lacks truncate (XTRIM)")
        // AUTH <token> alone finds the user; a user's token under another name does not.
        #expect(try cli(["--pass", "appender-token", "XADD", "wal", "*", "data", "b"]) == "2-0")
        let wrongUser = try cli(["--user", "reader", "--pass", "appender-token", "XLEN", "wal"])
        #expect(wrongUser.contains("WRONGPASS"), "\(wrongUser)")
        let trimmed = try cli(["--user", "boss", "--pass", "boss-token", "XTRIM", "wal", "MINID", "~", "2"])
        #expect(!trimmed.contains("NOPERM") && !trimmed.contains("ERR"), "\(trimmed)")
        let length = try cli(["--pass", "legacy-token", "XLEN", "wal"])
        #expect(length == "1" || length == "2", "\(length)")
    }

    @Test(.timeLimit(.minutes(1)))
    func aVerifiedClientCertificateAuthenticatesAsItsMappedRole() async throws {
        let (wald, certificates, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        let reader = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client("reader-cert"))
        defer { reader.close() }
        #expect(await outcome { try await reader.append(payload("r", size: 5)) } == "UNAUTHORIZED role read lacks append")
        #expect(await outcome { _ = try await reader.info() } == "allowed")
        let appender = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client("appender-cert"))
        defer { appender.close() }
        #expect(await outcome { try await appender.append(payload("a", size: 5)) } == "allowed")
        #expect(await outcome { _ = try await appender.truncate(before: 1) } == "UNAUTHORIZED role append lacks truncate")
        let admin = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client("admin-cert"))
        defer { admin.close() }
        #expect(await outcome { _ = try await admin.truncate(before: 1) } == "allowed")
        // A verified certificate without a mapping, or none, still has to AUTH.
        let stranger = try await WALClient.connect(wald.tlsEndpoint, timeout: .seconds(10), tls: certificates.client("stranger"))
        defer { stranger.close() }
        #expect(await outcome { _ = try await stranger.info() } == "UNAUTHORIZED authenticate first with AUTH <token>")
        let noCertificate = try await WALClient.connect(wald.tlsEndpoint, token: "appender-token", timeout: .seconds(10),
                                                        tls: certificates.client())
        defer { noCertificate.close() }
        #expect(await outcome { try await noCertificate.append(payload("n", size: 5)) } == "allowed")
    }

    /// A read user sees the log's state in INFO but not where its followers are.
    @Test(.timeLimit(.minutes(1)))
    func infoHidesFollowerAddressesFromReadUsers() async throws {
        let (wald, _, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        let follower = try WaldProcess(arguments: ["--follow", wald.address, "--auth-token", "legacy-token"])
        defer { follower.cleanup() }
        let admin = try await WALClient.connect(wald.plainEndpoint, token: "boss-token", timeout: .seconds(10))
        defer { admin.close() }
        let connected = await {
            for _ in 0..<200 {
                if (try? await admin.info().json.contains("\"address\"")) == true { return true }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return false
        }()
        #expect(connected, "the follower never showed up in INFO")
        let reader = try await WALClient.connect(wald.plainEndpoint, token: "reader-token", timeout: .seconds(10))
        defer { reader.close() }
        let json = try await reader.info().json
        #expect(json.contains("\"followers\":[{") && !json.contains("\"address\""), "\(json)")
        #expect(json.contains("\"last_lsn\""))
    }

    /// SIGHUP reads users: again: a new user can authenticate, a removed one no longer can,
    /// and a connection authenticated before keeps its role.
    @Test(.timeLimit(.minutes(1)))
    func usersAreReloadedOnSIGHUP() async throws {
        let (wald, _, file) = try startWithRoles()
        defer { wald.cleanup(); try? FileManager.default.removeItem(atPath: file) }
        let before = try await WALClient.connect(wald.plainEndpoint, token: "appender-token", timeout: .seconds(10))
        defer { before.close() }
        let hashed = try runTool("walctl", ["hash-token"], input: Array("newcomer-token\n".utf8)).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try Data("auth_token: legacy-token\nusers:\n  - {name: newcomer, role: append, token_hash: \"\(hashed)\"}\n".utf8)
            .write(to: URL(fileURLWithPath: file))
        kill(wald.process.processIdentifier, SIGHUP)
        var reloaded = false
        for _ in 0..<200 where !reloaded {
            reloaded = (try? await WALClient.connect(wald.plainEndpoint, token: "newcomer-token", timeout: .seconds(5)))
                .map { $0.close(); return true } ?? false
            if !reloaded { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(reloaded, "the new user could not authenticate after SIGHUP: \(wald.stderrText)")
        #expect(await outcome { _ = try await WALClient.connect(wald.plainEndpoint, token: "appender-token") } == "UNAUTHORIZED wrong token")
        #expect(await outcome { try await before.append(payload("kept", size: 5)) } == "allowed")
    }

    /// With metrics_token, the HTTP metrics endpoint answers only scrapes that send it.
    @Test(.timeLimit(.minutes(1)))
    func theMetricsEndpointRequiresItsBearerToken() throws {
        let wald = try WaldProcess(arguments: ["--metrics-listen", "127.0.0.1:0"], environment: ["WALD_METRICS_TOKEN": "scrape-token"])
        defer { wald.cleanup() }
        let address = try #require(wald.readyLine.split(separator: " ").first { $0.hasPrefix("metrics=") })
        let port = try #require(UInt16(address.split(separator: ":").last ?? ""))
        func get(_ headers: String) throws -> String {
            let connection = try RawConnection(port: port)
            connection.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\(headers)\r\n")
            return connection.readLine() ?? "(closed)"
        }
        #expect(try get("") == "HTTP/1.1 401 Unauthorized")
        #expect(try get("Authorization: Bearer scrape-tokeN\r\n") == "HTTP/1.1 401 Unauthorized")
        #expect(try get("Authorization: Bearer scrape-token\r\n") == "HTTP/1.1 200 OK")
        #expect(!wald.stderrText.contains("scrape-token"), "the metrics token was logged")
    }

    @Test(.timeLimit(.minutes(1)))
    func badUserEntriesAreStartupErrorsAndHashTokenRefusesNoToken() throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-roles-bad-\(UUID().uuidString)"
        let hash = "pbkdf2-sha256$10000$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        let cases: [(yaml: String, says: String)] = [
            ("users:\n  - {name: a, role: read, token_hash: plaintext}\n", "token_hash must be the output of `walctl hash-token`"),
            ("users:\n  - {name: a, role: owner, token_hash: \"\(hash)\"}\n", "role must be read, append or admin"),
            ("users:\n  - {name: a, role: read, token_hash: \"\(hash)\"}\n  - {name: a, role: admin, token_hash: \"\(hash)\"}\n",
             "appears twice"),
            ("users:\n  - {name: a, role: read, token: x, token_hash: \"\(hash)\"}\n", "unknown key \"token\""),
            ("cert_roles:\n  follower-1: superuser\n", "must map to read, append or admin"),
        ]
        for (yaml, says) in cases {
            let file = directory + ".yaml"
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let run = try runTool("wald", ["--data-dir", directory, "--listen", "127.0.0.1:0", "--config", file], timeout: 30)
            #expect(run.status != 0 && run.stderr.contains(says), "\(yaml): \(run.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory))
        }
        let empty = try runTool("walctl", ["hash-token"], input: [])
        #expect(empty.status == 1 && empty.stderr.contains("no token on stdin"), "\(empty.stderr)")
        let spaced = try runTool("walctl", ["hash-token"], input: Array("two words\n".utf8))
        #expect(spaced.status == 1, "\(spaced.stdout)")
        // Two hashes of one token differ (a fresh salt each time).
        let first = try runTool("walctl", ["hash-token"], input: Array("same\n".utf8)).stdout
        let second = try runTool("walctl", ["hash-token"], input: Array("same\n".utf8)).stdout
        #expect(first != second && first.hasPrefix("pbkdf2-sha256$10000$"))
    }
}
