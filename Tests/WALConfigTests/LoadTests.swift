// WaldConfig.load: precedence of the four layers, the config file's checks, and every error path,
// each error naming the option as spelled in its source.
import Foundation
import Logging
import Testing
import WALSystem

@testable import WALConfig

/// A YAML file in a fresh temporary directory, removed when the test ends.
final class TemporaryConfigFile {
    let directory: URL
    let path: String

    init(_ yaml: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("wald-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("wald.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

func load(_ arguments: [String] = [], environment: [String: String] = [:]) async throws -> WaldConfig {
    try await WaldConfig.load(flags: try WaldFlags.parse(arguments), environment: environment)
}

/// Loads and returns the error it must throw.
func loadError(
    _ arguments: [String] = [], environment: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation
) async throws -> WaldConfigError {
    let error = await #expect(throws: WaldConfigError.self, sourceLocation: sourceLocation) {
        try await load(arguments, environment: environment)
    }
    return try #require(error, sourceLocation: sourceLocation)
}

@Suite struct PrecedenceTests {
    @Test func noSourcesGiveTheDefaults() async throws {
        #expect(try await load() == WaldConfig())
        let defaults = WaldConfig()
        #expect(defaults.listen == [Endpoint.tcp(host: "127.0.0.1", port: 7070)])
        #expect(defaults.maxSegmentBytes == 64 * 1024 * 1024)
        #expect(defaults.maxFrameBytes == 16_777_215)
        #expect(defaults.flushInterval == .milliseconds(10))
        #expect(defaults.logLevel == .info)
        #expect(defaults.minSyncReplicas == 0)
        #expect(defaults.syncReplicaTimeout == .seconds(5))
        #expect(defaults.maxFollowerHoldBytes == 1 << 30)
    }

    @Test func flagBeatsEnvironmentBeatsFileBeatsDefault() async throws {
        let file = try TemporaryConfigFile(
            """
            max_segment_bytes: 1MiB
            flush_interval: 1s
            log_level: debug
            data_dir: /from/file
            """)
        let environment = [
            "WALD_CONFIG": file.path,
            "WALD_MAX_SEGMENT_BYTES": "2MiB",
            "WALD_FLUSH_INTERVAL": "2s",
        ]
        let config = try await load(["--max-segment-bytes", "3MiB"], environment: environment)
        #expect(config.maxSegmentBytes == 3 << 20)  // flag over environment and file
        #expect(config.flushInterval == .seconds(2))  // environment over file
        #expect(config.logLevel == .debug)  // file over default
        #expect(config.dataDirectory == "/from/file")
        #expect(config.maxConnections == 1024)  // default
        #expect(config.configFile == file.path)
    }

    @Test func flagListenReplacesEnvironmentAndFileLists() async throws {
        let file = try TemporaryConfigFile("listen: [\"0.0.0.0:1000\", \"[::]:1000\"]\n")
        let flags = ["--config", file.path, "--listen", "127.0.0.1:1", "--listen", "[::1]:2"]
        let fromFlags = try await load(flags, environment: ["WALD_LISTEN": "localhost:3"])
        #expect(fromFlags.listen == [Endpoint.tcp(host: "127.0.0.1", port: 1), Endpoint.tcp(host: "::1", port: 2)])

        let fromEnvironment = try await load(["--config", file.path], environment: ["WALD_LISTEN": "localhost:3, [::1]:4"])
        #expect(fromEnvironment.listen == [Endpoint.tcp(host: "localhost", port: 3), Endpoint.tcp(host: "::1", port: 4)])

        let fromFile = try await load(["--config", file.path])
        #expect(fromFile.listen == [Endpoint.tcp(host: "0.0.0.0", port: 1000), Endpoint.tcp(host: "::", port: 1000)])
    }

    @Test func fileListenMayBeOneString() async throws {
        let file = try TemporaryConfigFile("listen: \"[::1]:7071\"\n")
        #expect(try await load(["--config", file.path]).listen == [Endpoint.tcp(host: "::1", port: 7071)])
    }

    @Test func configFlagBeatsConfigVariable() async throws {
        let chosen = try TemporaryConfigFile("max_connections: 7\n")
        let ignored = try TemporaryConfigFile("max_connections: 9\n")
        let config = try await load(["--config", chosen.path], environment: ["WALD_CONFIG": ignored.path])
        #expect(config.maxConnections == 7)
        #expect(config.configFile == chosen.path)
    }

    @Test func everyOptionFromFlags() async throws {
        let config = try await load([
            "--listen", "0.0.0.0:1", "--unix", "/tmp/w.sock", "--data-dir", "/d", "--segment-prefix", "log-",
            "--max-segment-bytes", "128", "--max-segments", "3", "--retention-bytes", "1G", "--max-record-bytes", "4K",
            "--flush-interval", "0", "--max-buffer-bytes", "2M", "--max-connections", "1", "--max-frame-bytes", "8KiB",
            "--auth-token", "s3cret", "--log-level", "TRACE", "--slow-sync-threshold", "500us",
            "--metrics-listen", "[::1]:9090", "--follow", "primary:7070", "--min-sync-replicas", "2",
            "--sync-replica-timeout", "250ms", "--max-follower-hold-bytes", "0",
        ])
        var expected = WaldConfig()
        expected.listen = [Endpoint.tcp(host: "0.0.0.0", port: 1)]
        expected.unixSocket = "/tmp/w.sock"
        expected.dataDirectory = "/d"
        expected.segmentPrefix = "log-"
        expected.maxSegmentBytes = 128
        expected.maxSegments = 3
        expected.retentionBytes = 1 << 30
        expected.maxRecordBytes = 4096
        expected.flushInterval = .zero
        expected.maxBufferBytes = 2 << 20
        expected.maxConnections = 1
        expected.maxFrameBytes = 8192
        expected.authToken = "s3cret"
        expected.logLevel = .trace
        expected.slowSyncThreshold = .microseconds(500)
        expected.metricsListen = Endpoint.tcp(host: "::1", port: 9090)
        expected.follow = Endpoint.tcp(host: "primary", port: 7070)
        expected.minSyncReplicas = 2
        expected.syncReplicaTimeout = .milliseconds(250)
        expected.maxFollowerHoldBytes = 0
        #expect(config == expected)
    }

    @Test func everyOptionFromEnvironment() async throws {
        let environment = [
            "WALD_LISTEN": "0.0.0.0:1", "WALD_UNIX": "/tmp/w.sock", "WALD_DATA_DIR": "/d", "WALD_SEGMENT_PREFIX": "log-",
            "WALD_MAX_SEGMENT_BYTES": "128", "WALD_MAX_SEGMENTS": "3", "WALD_RETENTION_BYTES": "1G",
            "WALD_MAX_RECORD_BYTES": "4K", "WALD_FLUSH_INTERVAL": "0", "WALD_MAX_BUFFER_BYTES": "2M",
            "WALD_MAX_CONNECTIONS": "1", "WALD_MAX_FRAME_BYTES": "8KiB", "WALD_AUTH_TOKEN": "s3cret",
            "WALD_LOG_LEVEL": "trace", "WALD_SLOW_SYNC_THRESHOLD": "500us", "WALD_METRICS_LISTEN": "[::1]:9090",
            "WALD_FOLLOW": "primary:7070", "WALD_MIN_SYNC_REPLICAS": "2", "WALD_SYNC_REPLICA_TIMEOUT": "250ms",
            "WALD_MAX_FOLLOWER_HOLD_BYTES": "0",
        ]
        let fromEnvironment = try await load(environment: environment)
        let fromFlags = try await load([
            "--listen", "0.0.0.0:1", "--unix", "/tmp/w.sock", "--data-dir", "/d", "--segment-prefix", "log-",
            "--max-segment-bytes", "128", "--max-segments", "3", "--retention-bytes", "1G", "--max-record-bytes", "4K",
            "--flush-interval", "0", "--max-buffer-bytes", "2M", "--max-connections", "1", "--max-frame-bytes", "8KiB",
            "--auth-token", "s3cret", "--log-level", "trace", "--slow-sync-threshold", "500us",
            "--metrics-listen", "[::1]:9090", "--follow", "primary:7070", "--min-sync-replicas", "2",
            "--sync-replica-timeout", "250ms", "--max-follower-hold-bytes", "0",
        ])
        #expect(fromEnvironment == fromFlags)
        #expect(fromFlags.minSyncReplicas == 2 && fromFlags.maxFollowerHoldBytes == 0)
    }

    @Test func replicationOptionsFlagBeatsEnvironmentBeatsFileBeatsDefault() async throws {
        let file = try TemporaryConfigFile(
            """
            min_sync_replicas: 1
            sync_replica_timeout: 1s
            max_follower_hold_bytes: 256MiB
            """)
        let fromFile = try await load(["--config", file.path])
        #expect(fromFile.minSyncReplicas == 1)
        #expect(fromFile.syncReplicaTimeout == .seconds(1))
        #expect(fromFile.maxFollowerHoldBytes == 256 << 20)

        let environment = [
            "WALD_CONFIG": file.path, "WALD_MIN_SYNC_REPLICAS": "2", "WALD_SYNC_REPLICA_TIMEOUT": "2s",
            "WALD_MAX_FOLLOWER_HOLD_BYTES": "512MiB",
        ]
        let fromEnvironment = try await load(environment: environment)
        #expect(fromEnvironment.minSyncReplicas == 2)
        #expect(fromEnvironment.syncReplicaTimeout == .seconds(2))
        #expect(fromEnvironment.maxFollowerHoldBytes == 512 << 20)

        let fromFlags = try await load(
            ["--min-sync-replicas", "3", "--sync-replica-timeout", "1m", "--max-follower-hold-bytes", "2G"],
            environment: environment)
        #expect(fromFlags.minSyncReplicas == 3)
        #expect(fromFlags.syncReplicaTimeout == .seconds(60))
        #expect(fromFlags.maxFollowerHoldBytes == 2 << 30)

        // Only one of the three set: the others keep their defaults.
        let mixed = try await load(["--sync-replica-timeout", "750ms"], environment: ["WALD_MIN_SYNC_REPLICAS": "1"])
        #expect(mixed.minSyncReplicas == 1)
        #expect(mixed.syncReplicaTimeout == .milliseconds(750))
        #expect(mixed.maxFollowerHoldBytes == 1 << 30)
    }

    @Test func unprefixedVariablesAreIgnored() async throws {
        #expect(try await load(environment: ["MAX_CONNECTIONS": "5", "LISTEN": "bad"]) == WaldConfig())
    }

    @Test func unrecognizedWaldVariablesAreListedNotFatal() async throws {
        let environment = ["WALD_MAX_SEGMENT_BYTE": "1", "WALD_CONFIG": "/x", "WALD_LOG_LEVEL": "info", "PATH": "/bin"]
        #expect(WaldConfig.unrecognizedEnvironmentVariables(in: environment) == ["WALD_MAX_SEGMENT_BYTE"])
        #expect(try await load(environment: ["WALD_MAX_SEGMENT_BYTE": "1"]) == WaldConfig())
    }
}

@Suite struct SampleFileTests {
    static let samplePath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("config/wald.yaml").path

    @Test func sampleFileLoadsAsTheDefaults() async throws {
        var expected = WaldConfig()
        expected.configFile = Self.samplePath
        #expect(try await load(["--config", Self.samplePath]) == expected)
    }

    @Test func sampleFileDocumentsEveryOption() throws {
        let text = try String(contentsOfFile: Self.samplePath, encoding: .utf8)
        for key in WaldOption.fileKeys {
            #expect(text.contains("\n\(key):") || text.contains("\n# \(key):"), "sample lacks \(key)")
        }
    }

    /// Every commented example uncommented loads, but `follow` and `ha_etcd` exclude each other:
    /// once with each of them left commented.
    @Test(arguments: [WaldOption.haEtcd, WaldOption.follow])
    func sampleFileWithEveryLineUncommentedLoads(leftCommented: WaldOption) async throws {
        let text = try String(contentsOfFile: Self.samplePath, encoding: .utf8)
        let keys = WaldOption.fileKeys.filter { $0 != leftCommented.yamlKey }
        let uncommented = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            keys.contains { line.hasPrefix("# \($0): ") } ? String(line.dropFirst(2)) : String(line)
        }
        let file = try TemporaryConfigFile(uncommented.joined(separator: "\n"))
        let config = try await load(["--config", file.path])
        #expect(config.unixSocket != nil && config.authToken != nil && config.metricsListen != nil)
        #expect(leftCommented == .follow ? config.haEtcd.count == 3 && config.follow == nil : config.follow != nil)
    }

    @Test func sampleFileSetsTheReplicationDefaultsExplicitly() throws {
        let text = try String(contentsOfFile: Self.samplePath, encoding: .utf8)
        #expect(text.contains("\nmin_sync_replicas: 0\n"))
        #expect(text.contains("\nsync_replica_timeout: 5s\n"))
        #expect(text.contains("\nmax_follower_hold_bytes: 1GiB\n"))
    }

    @Test func readmeTableListsEveryOption() throws {
        let table = try String(
            contentsOfFile: URL(fileURLWithPath: Self.samplePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("docs/config-table.md").path,
            encoding: .utf8)
        for option in WaldOption.allCases {
            #expect(table.contains("`\(option.flag)"), "table lacks \(option.flag)")
            #expect(table.contains("`\(option.environmentVariable)`"), "table lacks \(option.environmentVariable)")
        }
    }

    /// One table: the README points at docs/config-table.md and carries no copy of its rows.
    @Test func readmeLinksTheOptionTableInsteadOfCopyingIt() throws {
        let root = URL(fileURLWithPath: Self.samplePath).deletingLastPathComponent().deletingLastPathComponent()
        let table = try String(contentsOfFile: root.appendingPathComponent("docs/config-table.md").path, encoding: .utf8)
        let readme = try String(contentsOfFile: root.appendingPathComponent("README.md").path, encoding: .utf8)
        let rows = table.split(separator: "\n").filter { $0.hasPrefix("| `--") }
        #expect(rows.count == WaldOption.allCases.count)
        #expect(readme.contains("(docs/config-table.md)"))
        #expect(!readme.split(separator: "\n").contains { $0.hasPrefix("| `--") })
    }
}

@Suite struct ConfigFileErrorTests {
    @Test func unknownKeyIsAnErrorWithASuggestion() async throws {
        let file = try TemporaryConfigFile("max_segment_byte: 1MiB\nlog_level: info\n")
        let error = try await loadError(["--config", file.path])
        #expect(error == .unknownKeys(["max_segment_byte"], file: file.path))
        #expect(error.source == .file(file.path))
        #expect(error.description.hasPrefix("unknown key \"max_segment_byte\" (did you mean \"max_segment_bytes\"?) in config file \(file.path)"))
    }

    @Test func everyUnknownKeyIsListed() async throws {
        let file = try TemporaryConfigFile("colour: blue\nlisten: 127.0.0.1:1\nshape: round\n")
        #expect(try await loadError(["--config", file.path]) == .unknownKeys(["colour", "shape"], file: file.path))
    }

    @Test func configKeyInsideTheFileIsRejected() async throws {
        let file = try TemporaryConfigFile("config: other.yaml\n")
        let error = try await loadError(["--config", file.path])
        #expect(error == .unknownKeys(["config"], file: file.path))
        #expect(error.description.contains("only be chosen with --config or WALD_CONFIG"))
    }

    @Test func nestedMappingIsRejected() async throws {
        let file = try TemporaryConfigFile("listen:\n  host: 127.0.0.1\n  port: 7070\n")
        guard case .malformedFile(file.path, let reason) = try await loadError(["--config", file.path]) else {
            Issue.record("expected malformedFile")
            return
        }
        #expect(reason.contains("\"listen\""))
    }

    @Test func listForASingleValueIsRejected() async throws {
        let file = try TemporaryConfigFile("data_dir: [a, b]\n")
        #expect(
            try await loadError(["--config", file.path])
                == .malformedFile(path: file.path, reason: "\"data_dir\" takes a single value, not a list"))
    }

    @Test func keyWithoutValueIsRejected() async throws {
        let file = try TemporaryConfigFile("unix:\n")
        #expect(
            try await loadError(["--config", file.path])
                == .malformedFile(path: file.path, reason: "\"unix\" has no value; comment the line out to use the default"))
    }

    @Test func topLevelListIsRejected() async throws {
        let file = try TemporaryConfigFile("- listen\n")
        guard case .malformedFile = try await loadError(["--config", file.path]) else {
            Issue.record("expected malformedFile")
            return
        }
    }

    @Test func invalidYAMLIsRejected() async throws {
        let file = try TemporaryConfigFile("listen: [unclosed\n")
        guard case .malformedFile = try await loadError(["--config", file.path]) else {
            Issue.record("expected malformedFile")
            return
        }
    }

    @Test func emptyOrCommentOnlyFileSetsNothing() async throws {
        for text in ["", "# nothing here\n", "---\n"] {
            let file = try TemporaryConfigFile(text)
            #expect(try await load(["--config", file.path]).maxConnections == 1024)
        }
    }

    @Test func missingFileSaysSo() async throws {
        let error = try await loadError(environment: ["WALD_CONFIG": "/nonexistent/wald.yaml"])
        #expect(error.description == "cannot read config file /nonexistent/wald.yaml: no such file")
    }

    @Test func emptyConfigPathIsRejected() async throws {
        let error = try await loadError(environment: ["WALD_CONFIG": ""])
        #expect(error.option == .config && error.source == .environment)
    }
}

@Suite struct ValueErrorTests {
    @Test func badDurationFromFlagMatchesTheDocumentedMessage() async throws {
        let error = try await loadError(["--flush-interval", "10 parsecs"])
        #expect(error.description == "invalid --flush-interval \"10 parsecs\": expected a duration like 10ms, 1s or 0")
        #expect(error.option == .flushInterval && error.source == .flag)
    }

    @Test func badDurationFromEnvironmentNamesTheVariable() async throws {
        let error = try await loadError(environment: ["WALD_SLOW_SYNC_THRESHOLD": "soon"])
        #expect(error.description == "invalid WALD_SLOW_SYNC_THRESHOLD \"soon\" (environment): expected a duration like 10ms, 1s or 0")
    }

    @Test func badSizeFromFileNamesTheKeyAndFile() async throws {
        let file = try TemporaryConfigFile("max_buffer_bytes: 1MB\n")
        let error = try await loadError(["--config", file.path])
        #expect(error.description == "invalid max_buffer_bytes \"1MB\" in config file \(file.path): \(ByteSize.expectedForm)")
        #expect(error.option == .maxBufferBytes && error.source == .file(file.path))
    }

    @Test func badValueInALowerLayerIsIgnoredWhenAHigherOneWins() async throws {
        let file = try TemporaryConfigFile("max_buffer_bytes: lots\n")
        let config = try await load(["--config", file.path], environment: ["WALD_MAX_BUFFER_BYTES": "4K"])
        #expect(config.maxBufferBytes == 4096)
    }

    @Test(arguments: [
        (["--listen", "localhost"], WaldOption.listen),
        (["--listen", "::1:7070"], .listen),
        (["--listen", "127.0.0.1:65536"], .listen),
        (["--listen", ""], .listen),
        (["--unix", ""], .unix),
        (["--unix", String(repeating: "s", count: 108)], .unix),
        (["--data-dir", ""], .dataDir),
        (["--segment-prefix", "a/b"], .segmentPrefix),
        (["--segment-prefix", ""], .segmentPrefix),
        (["--max-segment-bytes", "127"], .maxSegmentBytes),
        (["--max-segment-bytes", "64 parsecs"], .maxSegmentBytes),
        (["--max-segments=-1"], .maxSegments),
        (["--max-segments", "many"], .maxSegments),
        (["--retention-bytes=-5"], .retentionBytes),
        (["--max-record-bytes=-1"], .maxRecordBytes),
        (["--flush-interval", "10"], .flushInterval),
        (["--max-buffer-bytes", "1.5M"], .maxBufferBytes),
        (["--max-connections", "0"], .maxConnections),
        (["--max-frame-bytes", "16MiB"], .maxFrameBytes),
        (["--max-frame-bytes", "15"], .maxFrameBytes),
        (["--auth-token", ""], .authToken),
        (["--auth-token", "two words"], .authToken),
        (["--log-level", "verbose"], .logLevel),
        (["--slow-sync-threshold", "1.5s"], .slowSyncThreshold),
        (["--metrics-listen", "[::1]:70000"], .metricsListen),
        (["--follow", "primary"], .follow),
        (["--follow", "primary:0"], .follow),
        (["--min-sync-replicas=-1"], .minSyncReplicas),
        (["--min-sync-replicas", "two"], .minSyncReplicas),
        (["--min-sync-replicas", "1.5"], .minSyncReplicas),
        (["--min-sync-replicas", ""], .minSyncReplicas),
        (["--sync-replica-timeout", "0"], .syncReplicaTimeout),
        (["--sync-replica-timeout", "0ms"], .syncReplicaTimeout),
        (["--sync-replica-timeout", "5"], .syncReplicaTimeout),
        (["--sync-replica-timeout", "1.5s"], .syncReplicaTimeout),
        (["--max-follower-hold-bytes=-1"], .maxFollowerHoldBytes),
        (["--max-follower-hold-bytes", "1GB"], .maxFollowerHoldBytes),
        (["--max-follower-hold-bytes", "99999999999G"], .maxFollowerHoldBytes),
    ])
    func badFlagNamesTheFlag(arguments: [String], option: WaldOption) async throws {
        let error = try await loadError(arguments)
        #expect(error.option == option)
        #expect(error.source == .flag)
        #expect(error.description.hasPrefix("invalid \(option.flag) "))
        #expect(error.description.contains(": expected "))
    }

    @Test func negativeSyncReplicasNamesTheRangeInEachSource() async throws {
        let fromFlag = try await loadError(["--min-sync-replicas=-1"])
        #expect(fromFlag.description == "invalid --min-sync-replicas \"-1\": expected an integer of at least 0 (0 = don't wait for followers)")
        let fromEnvironment = try await loadError(environment: ["WALD_MIN_SYNC_REPLICAS": "all"])
        #expect(
            fromEnvironment.description
                == "invalid WALD_MIN_SYNC_REPLICAS \"all\" (environment): expected an integer of at least 0 (0 = don't wait for followers)")
        let file = try TemporaryConfigFile("min_sync_replicas: -2\n")
        let fromFile = try await loadError(["--config", file.path])
        #expect(fromFile.option == .minSyncReplicas && fromFile.source == .file(file.path))
        #expect(fromFile.description.hasPrefix("invalid min_sync_replicas \"-2\" in config file \(file.path): "))
    }

    @Test func zeroSyncReplicaTimeoutIsRejected() async throws {
        let error = try await loadError(environment: ["WALD_SYNC_REPLICA_TIMEOUT": "0"])
        #expect(error.description == "invalid WALD_SYNC_REPLICA_TIMEOUT \"0\" (environment): expected a duration above 0 like 500ms, 5s or 1m")
        let unparsable = try await loadError(["--sync-replica-timeout", "soon"])
        #expect(unparsable.description == "invalid --sync-replica-timeout \"soon\": \(DurationText.expectedForm)")
        #expect(try await load(["--sync-replica-timeout", "1ns"]).syncReplicaTimeout == .nanoseconds(1))
    }

    @Test func badFollowerHoldSizeFromFileSaysZeroIsUnlimited() async throws {
        let file = try TemporaryConfigFile("max_follower_hold_bytes: 1TiB\n")
        let error = try await loadError(["--config", file.path])
        #expect(
            error.description
                == "invalid max_follower_hold_bytes \"1TiB\" in config file \(file.path): \(ByteSize.expectedForm) (0 = unlimited)")
        #expect(try await load(["--max-follower-hold-bytes", "0"]).maxFollowerHoldBytes == 0)
    }

    @Test func recordLargerThanFrameAllowsIsBlamedOnTheRecordOption() async throws {
        let error = try await loadError(["--max-frame-bytes", "1MiB"], environment: ["WALD_MAX_RECORD_BYTES": "1MiB"])
        #expect(error.description == "invalid WALD_MAX_RECORD_BYTES \"1MiB\" (environment): expected at most max_frame_bytes - 16 = 1048560")
    }

    @Test func smallFrameAgainstTheDefaultRecordIsBlamedOnTheFrameOption() async throws {
        let error = try await loadError(["--max-frame-bytes", "4096"])
        #expect(error.option == .maxFrameBytes && error.source == .flag)
        #expect(error.description.contains("expected at least max_record_bytes + 16 = 1048592"))
    }

    @Test func recordExactlyFrameMinusOverheadIsAccepted() async throws {
        let config = try await load(["--max-frame-bytes", "4096", "--max-record-bytes", "4080"])
        #expect(config.maxRecordBytes == 4080 && config.maxFrameBytes == 4096)
    }

    @Test func authTokenIsRedactedInErrors() async throws {
        let error = try await loadError(environment: ["WALD_AUTH_TOKEN": "secret with space"])
        #expect(!error.description.contains("secret"))
        #expect(error.option == .authToken && error.source == .environment)
    }

    @Test func emptyListenNeedsAUnixSocket() async throws {
        let file = try TemporaryConfigFile("listen: []\n")
        let error = try await loadError(["--config", file.path])
        #expect(error.option == .listen && error.source == .file(file.path))
        let unixOnly = try await load(["--config", file.path, "--unix", "/tmp/wald.sock"])
        #expect(unixOnly.listen.isEmpty && unixOnly.unixSocket == "/tmp/wald.sock")
    }

    @Test func badAddressInAFileListNamesTheItem() async throws {
        let file = try TemporaryConfigFile("listen:\n  - 127.0.0.1:7070\n  - \"::1:7070\"\n")
        let error = try await loadError(["--config", file.path])
        #expect(error.description.hasPrefix("invalid listen \"::1:7070\" in config file \(file.path): expected HOST:PORT"))
    }
}

/// Automatic failover's options (issue 15): all-or-nothing, and TTLs etcd would not honour refused.
@Suite struct FailoverOptionTests {
    @Test func theFourOptionsLoadFromFlagsAndEnvironment() async throws {
        let config = try await load(["--ha-etcd", "http://127.0.0.1:2379,http://10.0.0.2:2379", "--ha-cluster", "orders",
                                     "--advertise", "10.0.0.1:7070"], environment: ["WALD_HA_LEASE_TTL": "5s"])
        #expect(config.haEtcd == ["http://127.0.0.1:2379", "http://10.0.0.2:2379"])
        #expect(config.haCluster == "orders")
        #expect(config.advertise == Endpoint.tcp(host: "10.0.0.1", port: 7070))
        #expect(config.haLeaseTTL == .seconds(5))
        #expect(WaldConfig().haEtcd.isEmpty && WaldConfig().haLeaseTTL == .seconds(3))
    }

    @Test func etcdWithoutClusterOrAdvertiseIsRefusedNamingWhatIsMissing() async throws {
        let error = try await loadError(["--ha-etcd", "http://127.0.0.1:2379", "--ha-cluster", "c"])
        #expect(error.description.contains("advertise"), "\(error)")
        let withFollow = try await loadError(["--ha-etcd", "http://127.0.0.1:2379", "--ha-cluster", "c", "--advertise",
                                              "127.0.0.1:7070", "--follow", "127.0.0.1:7071"])
        #expect(withFollow.description.contains("no follow option with ha_etcd"), "\(withFollow)")
    }

    @Test(arguments: ["1s", "1500ms", "2500ms", "2h", "0"])
    func leaseTTLsEtcdWouldNotHonourAreRefused(ttl: String) async throws {
        let error = try await loadError(["--ha-lease-ttl", ttl])
        #expect(error.description.contains("whole seconds from 2s to 1h"), "\(error)")
    }

    @Test(arguments: ["127.0.0.1:2379", "https://127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:0"])
    func etcdEndpointsThatAreNotHTTPHostPortAreRefused(url: String) async throws {
        let error = try await loadError(["--ha-etcd", url, "--ha-cluster", "c", "--advertise", "127.0.0.1:7070"])
        #expect(error.option == .haEtcd, "\(error)")
    }

    @Test(arguments: ["", "a/b", "with space", String(repeating: "x", count: 65)])
    func clusterNamesThatCannotBeKeysAreRefused(name: String) async throws {
        let error = try await loadError(["--ha-cluster", name])
        #expect(error.option == .haCluster, "\(error)")
    }
}
