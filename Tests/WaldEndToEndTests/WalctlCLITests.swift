// walctl as a user of redis-cli, psql or etcdctl expects it, through the built binaries: global
// options before or after the command and from the environment, a bare HOST meaning port 7070,
// --version, the command's usage on a usage error, a timeout on every network command, a clear
// word for a peer that is not a wald and for a name that does not resolve, ping in
// milliseconds, truncate saying what it dropped, bench's output, and error messages that name
// options as users type them.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct WalctlCLITests {
    @Test(.timeLimit(.minutes(1)))
    func globalOptionsComeBeforeOrAfterTheCommandOrFromTheEnvironment() throws {
        let wald = try WaldProcess(environment: ["WALD_AUTH_TOKEN": "s3cret"])
        defer { wald.cleanup() }
        // Before the command, with the token from the environment only (not in `ps`).
        let before = try runTool("walctl", ["--server", wald.address, "--timeout", "5", "append", "one"],
                                 environment: ["WALCTL_TOKEN": "s3cret"])
        #expect(before.status == 0 && before.stdout == "1\n", "\(before.status): \(before.stdout) \(before.stderr)")
        // Server and token from the environment.
        let env = try runTool("walctl", ["info"], environment: ["WALCTL_SERVER": wald.address, "WALCTL_TOKEN": "s3cret"])
        #expect(env.status == 0 && env.stdout.contains("\"last_lsn\":1"), "\(env.status): \(env.stdout) \(env.stderr)")
        // After the command, the flag wins over the variable.
        let after = try runTool("walctl", ["replay", "--server", wald.address, "--token", "s3cret"],
                                environment: ["WALCTL_SERVER": "127.0.0.1:9"])
        #expect(after.status == 0 && after.stdout == "1\tone\n", "\(after.status): \(after.stdout) \(after.stderr)")
        let wrong = try runTool("walctl", ["info", "--server", wald.address])
        #expect(wrong.status == 1 && wrong.stderr.contains("UNAUTHORIZED"), "\(wrong.status): \(wrong.stderr)")
    }

    @Test func aHostWithoutPortMeansPort7070() throws {
        // Whatever answers there (nothing, or a wald), the address walctl used is port 7070.
        let result = try runTool("walctl", ["ping", "--server", "127.0.0.1", "--timeout", "2"])
        #expect(result.exitedNormally)
        #expect((result.stdout + result.stderr).contains("127.0.0.1:7070"), "\(result.stdout) \(result.stderr)")
        let bad = try runTool("walctl", ["ping", "--server", "127.0.0.1:http"])
        #expect(bad.status == 64 && bad.stderr.contains("--server must be HOST, HOST:PORT"), "\(bad.stderr)")
    }

    @Test func bothBinariesPrintTheirVersion() throws {
        for tool in ["wald", "walctl"] {
            let result = try runTool(tool, ["--version"])
            #expect(result.status == 0 && result.stdout == "0.1.0\n", "\(tool) --version: \(result.status) \(result.stdout) \(result.stderr)")
        }
    }

    @Test func aUsageErrorPrintsThatCommandsUsage() throws {
        let empty = try runTool("walctl", ["append", "--server", "127.0.0.1:9"], input: [])
        #expect(empty.status == 64, "\(empty.status): \(empty.stderr)")
        #expect(empty.stderr.contains("nothing to append") && empty.stderr.contains("Usage: walctl append"), "\(empty.stderr)")
        let reconnect = try runTool("walctl", ["replay", "--reconnect"])
        #expect(reconnect.status == 64 && reconnect.stderr.contains("Usage: walctl replay"), "\(reconnect.stderr)")
        let ping = try runTool("walctl", ["ping", "--count", "0"])
        #expect(ping.status == 64 && ping.stderr.contains("Usage: walctl ping"), "\(ping.stderr)")
    }

    /// A server that accepts but never answers: ping used to wait for ever.
    @Test(.timeLimit(.minutes(1)))
    func everyNetworkCommandTimesOutOnAServerThatNeverAnswers() throws {
        let silent = try SilentListener()
        let server = "127.0.0.1:\(silent.port)"
        for arguments in [["ping", "--timeout", "1"], ["info", "--timeout", "1"], ["replay", "--timeout", "1"],
                          ["append", "--timeout", "1", "x"], ["bench", "--timeout", "1", "--count", "5"]] {
            let result = try runTool("walctl", arguments + ["--server", server], timeout: 20)
            #expect(!result.timedOut && result.exitedNormally && result.status == 1,
                    "walctl \(arguments[0]): status \(result.status), killed \(result.timedOut): \(result.stdout) \(result.stderr)")
            #expect(result.stdout.contains("no reply within 1 s") || result.stderr.contains("no reply from \(server) within 1 s"),
                    "walctl \(arguments[0]): \(result.stdout) \(result.stderr)")
        }
        let env = try runTool("walctl", ["ping", "--server", server], timeout: 20, environment: ["WALCTL_TIMEOUT": "0.5"])
        #expect(!env.timedOut && env.status == 1 && env.stderr.contains("timed out"), "\(env.stderr)")
    }

    /// The metrics port speaks HTTP: walctl said "frame of 1213486160 bytes" ("HTTP" read as a length).
    @Test(.timeLimit(.minutes(1)))
    func aPeerThatIsNotAWaldIsNamedSo() throws {
        let wald = try WaldProcess(arguments: ["--metrics-listen", "127.0.0.1:0"])
        defer { wald.cleanup() }
        let metricsAddress = try #require(wald.readyLine.split(separator: " ").first { $0.hasPrefix("metrics=") })
        let metrics = String(metricsAddress.dropFirst(8))
        let http = try runTool("walctl", ["info", "--server", metrics, "--timeout", "10"], timeout: 30)
        #expect(http.status == 1, "\(http.status): \(http.stdout)")
        #expect(http.stderr.contains("\(metrics) is not a wald server") && http.stderr.contains("HTTP/1.1"), "\(http.stderr)")
        #expect(!http.stderr.contains("frame of"), "\(http.stderr)")
        // Anything that speaks first (an SSH or SMTP greeting, a Redis error) is not a wald either.
        let greeter = try LyingServer(reply: Array("SSH-2.0-OpenSSH_9.2\r\n".utf8))
        let ssh = try runTool("walctl", ["ping", "--server", "127.0.0.1:\(greeter.port)"], timeout: 30)
        #expect(ssh.status == 1 && ssh.stderr.contains("is not a wald server: it answered \"SSH-2.0-OpenSSH_9.2\""), "\(ssh.stderr)")
    }

    @Test func aNameThatDoesNotResolveIsSaidSo() throws {
        let client = try runTool("walctl", ["ping", "--server", "no-such-host.invalid:7070"], timeout: 30)
        #expect(client.status == 1 && client.stderr.contains("cannot resolve no-such-host.invalid"), "\(client.stderr)")
        #expect(!client.stderr.contains("errno"), "\(client.stderr)")
        let directory = NSTemporaryDirectory() + "wald-e2e-resolve-\(UUID().uuidString)"
        let server = try runTool("wald", ["--listen", "no-such-host.invalid:0", "--data-dir", directory], timeout: 30)
        #expect(server.status != 0 && server.stderr.contains("cannot resolve no-such-host.invalid"), "\(server.stderr)")
        #expect(!server.stderr.contains("errno 22"), "\(server.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory), "a failed start created \(directory)")
    }

    @Test(.timeLimit(.minutes(1)))
    func pingPrintsMillisecondsAndTruncateSaysWhatItDropped() async throws {
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "1KiB"])
        defer { wald.cleanup() }
        let ping = try runTool("walctl", ["ping", "--server", wald.address, "--count", "3", "--interval", "0"])
        #expect(ping.status == 0, "\(ping.stderr)")
        let lines = ping.stdout.split(separator: "\n")
        #expect(lines.count == 4, "\(ping.stdout)")
        for line in lines.prefix(3) {
            #expect(line.hasPrefix("PONG from \(wald.address): ") && line.hasSuffix(" ms") && line.contains("."), "\(line)")
        }
        #expect(lines.last?.hasPrefix("3 pings: min ") == true && lines.last?.contains(" ms, avg ") == true, "\(ping.stdout)")

        // 100-byte records, one per append: 7 to a 1 KiB segment.
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        for i in 0..<30 { try await client.append(payload("r\(i)", size: 100)) }
        let before = try await client.info()
        let truncate = try runTool("walctl", ["truncate", "--server", wald.address, "--before", "20"])
        let after = try await client.info()
        #expect(truncate.status == 0 && truncate.stdout == "\(after.firstLSN)\n", "\(truncate.stdout) \(truncate.stderr)")
        let dropped = before.segments - after.segments
        #expect(dropped >= 2)
        #expect(truncate.stderr.contains("dropped \(dropped) segments, \(after.firstLSN - 1) records (LSN 1...\(after.firstLSN - 1))"),
                "\(truncate.stderr)")
    }

    /// Limits are named as users type them (`max_record_bytes`, not `maxRecordBytes`).
    @Test(.timeLimit(.minutes(1)))
    func errorMessagesNameOptionsAsUsersTypeThem() throws {
        let wald = try WaldProcess(arguments: ["--max-record-bytes", "1KiB"])
        defer { wald.cleanup() }
        let result = try runTool("walctl", ["append", "--server", wald.address, String(repeating: "x", count: 2000)])
        #expect(result.status == 1 && result.stderr.contains("max_record_bytes (1024)"), "\(result.stderr)")
        #expect(!result.stderr.contains("maxRecordBytes"))
    }

    /// Progress only on a terminal (stderr is a file here), the percentile distribution after
    /// the percentiles, a warning that the records stay, and no latency table when nothing succeeded.
    @Test(.timeLimit(.minutes(1)))
    func benchWarnsPrintsADistributionAndNoEmptyTable() throws {
        let wald = try WaldProcess(arguments: ["--max-record-bytes", "64"])
        defer { wald.cleanup() }
        let ok = try runTool("walctl", ["bench", "--server", wald.address, "--count", "50", "--size", "10"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stderr.contains("they stay in its log") && !ok.stderr.contains("\r"), "\(ok.stderr)")
        #expect(ok.stdout.contains("latency µs: p50") && ok.stdout.contains("Percentile") && ok.stdout.contains("#[Max"),
                "\(ok.stdout)")
        let failing = try runTool("walctl", ["bench", "--server", wald.address, "--count", "5", "--size", "100"])
        #expect(failing.status == 1, "\(failing.stdout)")
        #expect(failing.stdout.contains("0 appends in") && failing.stdout.contains("first error: TOO_LARGE"), "\(failing.stdout)")
        #expect(!failing.stdout.contains("latency"), "an empty latency table after errors: \(failing.stdout)")
        let zero = try runTool("walctl", ["bench", "--server", wald.address, "--count", "0"])
        #expect(zero.status == 64 && zero.stderr.contains("--count"), "\(zero.stderr)")
    }
}
