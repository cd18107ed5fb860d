// SIGHUP against a real wald: the server applies every reloadable option it holds (through one
// `WALServer.update(ServerOptions)`), keeps the ones that need a restart and says so in the log.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConfigReloadTests {
    /// `max_connections` 1 → 4 and a new `auth_token` take effect on SIGHUP; a changed
    /// `resp_stream` (not reloadable) is logged as needing a restart and stays in force.
    @Test(.timeLimit(.minutes(1)))
    func sighupAppliesTheServersReloadableOptionsAndKeepsTheOthers() async throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-reload-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/wald.yaml"
        try "listen: 127.0.0.1:0\nmax_connections: 1\nresp_stream: before\n".write(toFile: file, atomically: true, encoding: .utf8)
        let wald = try WaldProcess(arguments: ["--config", file, "--log-level", "info"])
        defer { wald.cleanup() }

        let first = try RawConnection(port: wald.port)
        first.send("PING\r\n")
        #expect(first.readLine() == "PONG")
        let refused = try RawConnection(port: wald.port)
        #expect(refused.readLine()?.hasPrefix("ERR BUSY") == true, "a second connection was admitted at max_connections 1")

        try "listen: 127.0.0.1:0\nmax_connections: 4\nresp_stream: after\nauth_token: reload-token\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        kill(wald.process.processIdentifier, SIGHUP)
        let deadline = ContinuousClock.now + .seconds(20)
        while !wald.stderrText.contains("configuration reloaded") && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(wald.stderrText.contains("configuration reloaded"), "\(wald.stderrText)")
        #expect(wald.stderrText.contains("needs a restart") && wald.stderrText.contains("option=resp_stream"), "\(wald.stderrText)")

        // Four connections at once now (the new limit); the new token is required.
        let second = try RawConnection(port: wald.port)
        second.send("APPEND x\r\n")
        let answer = second.readLine() ?? "(closed)"
        #expect(answer.hasPrefix("ERR UNAUTHORIZED"), "appended without the new token: \(answer)")
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port), token: "reload-token", timeout: .seconds(10))
        defer { client.close() }
        #expect(try await client.append(Array("after reload".utf8)) == 1)
        // resp_stream needs a restart: the stream is still called "before".
        let resp = try RawConnection(port: wald.port)
        resp.send("*2\r\n$4\r\nAUTH\r\n$12\r\nreload-token\r\n")
        #expect(resp.readLine() == "+OK")
        resp.send("*2\r\n$4\r\nXLEN\r\n$6\r\nbefore\r\n")
        #expect(resp.readLine() == ":1")
    }
}
