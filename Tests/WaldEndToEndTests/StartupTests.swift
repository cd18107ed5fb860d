// wald's start and stop as an operator sees them, on the real binary: a failed start leaves
// nothing behind, a mistyped data directory does not become a new empty log, one start-up line
// says what this wald is, --help names every option's variable, metrics carry HELP lines and
// the gauges an operator alerts on, "bytes" means one thing everywhere, debug logging shows
// connections, and a clean stop removes the unix socket. And the kvstore example.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct StartupTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A port in use used to fail after the log was opened: a new directory with a 64 MiB segment stayed.
    @Test func aFailedStartLeavesNothingBehind() throws {
        let taken = try SilentListener()
        for arguments in [["--listen", "127.0.0.1:\(taken.port)"], ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:\(taken.port)"]] {
            let directory = NSTemporaryDirectory() + "wald-e2e-failed-start-\(UUID().uuidString)"
            let socket = directory + ".sock"
            let result = try runTool("wald", ["--data-dir", directory, "--unix", socket] + arguments, timeout: 30)
            #expect(result.status != 0 && result.stderr.contains("Address already in use"), "\(arguments): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory), "\(arguments): a failed start created \(directory)")
            #expect(!FileManager.default.fileExists(atPath: socket), "\(arguments): a failed start left \(socket)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aMistypedDataDirectoryIsRefusedAndANewLogIsAnnounced() throws {
        let base = NSTemporaryDirectory() + "wald-e2e-datadir-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: base) }
        // Its parent does not exist: refused, nothing created.
        let deep = base + "/no/such/place"
        let missing = try runTool("wald", ["--data-dir", deep, "--listen", "127.0.0.1:0"], timeout: 30)
        #expect(missing.status != 0 && missing.stderr.contains("does not exist, nor does its parent \(base)/no/such"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: base + "/no"))
        // A directory with other files and no log (a home directory, say): refused, untouched.
        let home = base + "/home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: false)
        #expect(FileManager.default.createFile(atPath: home + "/notes.txt", contents: Data("mine".utf8)))
        let before = try snapshot(home)
        let foreign = try runTool("wald", ["--data-dir", home, "--listen", "127.0.0.1:0"], timeout: 30)
        #expect(foreign.status != 0 && foreign.stderr.contains("holds no log") && foreign.stderr.contains("notes.txt"), "\(foreign.stderr)")
        #expect(try snapshot(home) == before)
        // An empty directory gets a new log, and the start-up line says what this wald is. A file
        // system's root counts as empty with its lost+found (a volume mounted for the data).
        let empty = base + "/empty"
        try FileManager.default.createDirectory(atPath: empty + "/lost+found", withIntermediateDirectories: true)
        let wald = try WaldProcess(dataDirectory: empty, arguments: ["--log-level", "notice", "--max-connections", "77"])
        defer { wald.cleanup() }
        let stderr = wald.stderrText
        #expect(stderr.contains("created a new log: the data directory held no segment"), "\(stderr)")
        let start = try #require(stderr.split(separator: "\n").first { $0.contains("wald started") }, "\(stderr)")
        for field in ["version=0.1.0", "data_dir=\(empty)", "log_id=", "generation=0", "first_lsn=1", "last_lsn=0",
                      "max_connections=77", "flush_interval=5ms", "max_segment_bytes=1048576"] {
            #expect(start.contains(field), "the start-up line lacks \(field): \(start)")
        }
        #expect(!start.contains("retention_bytes"), "a default option is listed: \(start)")
    }

    @Test func helpNamesTheEnvironmentVariableOfEveryOption() throws {
        let help = try runTool("wald", ["--help"])
        #expect(help.status == 0)
        let table = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("docs/config-table.md"), encoding: .utf8)
        let variables = table.split(separator: "\n").filter { $0.hasPrefix("| `--") }.compactMap { row in
            row.split(separator: "|").dropFirst().first.map { _ in row.split(separator: "`").first { $0.hasPrefix("WALD_") } } ?? nil
        }
        #expect(variables.count >= 25)
        let flat = help.stdout.replacingOccurrences(of: "\n", with: " ").split(separator: " ").joined(separator: " ")
        for variable in variables {
            #expect(flat.contains("Env \(variable)"), "wald --help does not name \(variable)")
        }
    }

    /// Metrics had no HELP lines and no gauges for the LSNs or a follower's lag; INFO, verify and
    /// wald_disk_bytes counted bytes three different ways (and the gauge moved only at rotation).
    @Test(.timeLimit(.minutes(1)))
    func metricsHaveHelpLSNAndLagGaugesAndBytesMeanOneThing() async throws {
        let primary = try WaldProcess(arguments: ["--max-segment-bytes", "1KiB"])
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: primary.port))
        defer { client.close() }
        for i in 0..<12 { try await client.append(payload("m\(i)", size: 100)) }
        let deadline = ContinuousClock.now + .seconds(30)
        while try await WALClient.connect(.tcp(host: "127.0.0.1", port: follower.port)).info().lastLSN < 12,
              ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let connection = try RawConnection(port: primary.port)
        let text = connection.metricsText()
        let info = try await client.info()
        let lines = text.split(separator: "\n").map(String.init)
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) "), "no HELP line for \(name)")
        }
        func value(_ name: String) -> Double? {
            lines.first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(value("wald_last_lsn") == 12 && value("wald_durable_lsn") == 12 && value("wald_first_lsn") == Double(info.firstLSN),
                "\(text)")
        let lag = lines.first { $0.hasPrefix("wald_follower_lag_records{") }
        #expect(lag?.contains("follower=\"127.0.0.1:") == true && lag?.hasSuffix(" 0.0") == true, "\(lag ?? text)")

        // One meaning of bytes: the segment files' sizes, in INFO, the gauge and verify alike.
        let files = try FileManager.default.contentsOfDirectory(atPath: primary.dataDirectory).filter { $0.hasSuffix(".wal") }
        let onDisk = try files.reduce(0) {
            $0 + ((try FileManager.default.attributesOfItem(atPath: primary.dataDirectory + "/" + $1)[.size] as? Int) ?? 0)
        }
        #expect(info.bytes == UInt64(onDisk) && value("wald_disk_bytes") == Double(onDisk), "INFO \(info.bytes), files \(onDisk), \(text)")
        #expect(primary.stop(signal: SIGTERM) == 0)
        let verify = try runTool("walctl", ["verify", primary.dataDirectory])
        #expect(verify.stdout.contains("\(onDisk) bytes in segment files"), "\(verify.stdout)")
    }

    @Test(.timeLimit(.minutes(1)))
    func debugLoggingShowsConnectionsAndACleanStopRemovesTheUnixSocket() throws {
        let socket = NSTemporaryDirectory() + "wald-e2e-\(UUID().uuidString.prefix(8)).sock"
        let wald = try WaldProcess(arguments: ["--log-level", "debug", "--unix", socket])
        defer { wald.cleanup() }
        let connection = try RawConnection(port: wald.port)
        connection.send("QUIT\n")
        #expect(connection.readLine() == "BYE")
        #expect(FileManager.default.fileExists(atPath: socket))
        #expect(wald.stop(signal: SIGTERM) == 0)
        let opened = wald.stderrText.split(separator: "\n").filter { $0.contains("connection opened") }
        let closed = wald.stderrText.split(separator: "\n").filter { $0.contains("connection closed") }
        #expect(opened.count == 1 && opened.first?.contains("peer=127.0.0.1:") == true, "\(wald.stderrText)")
        #expect(closed.count == 1 && closed.first?.contains(" debug ") == true, "\(wald.stderrText)")
        #expect(!FileManager.default.fileExists(atPath: socket), "the unix socket file outlived a clean stop")
    }

    /// `wal-example-kvstore DIR set k v` (as the README used to say) created DIR-less
    /// `data/example-kvstore` before printing its usage.
    @Test(.timeLimit(.minutes(1)))
    func theKVStoreExampleChecksItsArgumentsBeforeCreatingAnything() throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-kv-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let wrong = try runTool("wal-example-kvstore", ["--dir", directory, "frob", "k"])
        #expect(wrong.status == 2 && wrong.stderr.contains("usage: wal-example-kvstore [--dir DIR]"), "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory), "a usage error created \(directory)")
        #expect(try runTool("wal-example-kvstore", ["--dir", directory, "set", "k", "v"]).stdout == "OK\n")
        #expect(try runTool("wal-example-kvstore", ["--dir", directory, "get", "k"]).stdout == "v\n")
        let readme = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("wal-example-kvstore [--dir DIR] set k v"))
    }
}
