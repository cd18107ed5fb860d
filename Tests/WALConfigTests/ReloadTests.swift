// reloadable(from:): which changed options a SIGHUP can apply and which need a restart.
import Testing
import WALSystem

@testable import WALConfig

@Suite struct ReloadTests {
    @Test func identicalConfigsChangeNothing() {
        let result = WaldConfig().reloadable(from: WaldConfig())
        #expect(result.changed.isEmpty && result.needsRestart.isEmpty)
    }

    @Test func runtimeOptionsDoNotNeedARestart() {
        var new = WaldConfig()
        new.logLevel = .debug
        new.flushInterval = .milliseconds(5)
        new.maxSegments = 10
        new.retentionBytes = 1 << 30
        new.maxConnections = 10
        new.maxRecordBytes = 1024
        new.maxFrameBytes = 4096
        new.maxBufferBytes = 2048
        new.authToken = "t"
        new.slowSyncThreshold = .seconds(2)
        new.minSyncReplicas = 2
        new.syncReplicaTimeout = .seconds(1)
        new.maxFollowerHoldBytes = 0
        new.scrubInterval = .seconds(60)
        new.scrubBytesPerSecond = 1 << 20
        let result = WaldConfig().reloadable(from: new)
        #expect(
            result.changed == [
                "max_segments", "retention_bytes", "max_record_bytes", "flush_interval", "max_buffer_bytes",
                "max_connections", "max_frame_bytes", "auth_token", "log_level", "slow_sync_threshold",
                "min_sync_replicas", "sync_replica_timeout", "max_follower_hold_bytes", "scrub_interval",
                "scrub_bytes_per_second",
            ])
        #expect(result.needsRestart.isEmpty)
    }

    @Test func addressesAndLayoutNeedARestart() {
        var new = WaldConfig()
        new.listen = [Endpoint.tcp(host: "::1", port: 7070)]
        new.unixSocket = "/tmp/s"
        new.dataDirectory = "/other"
        new.segmentPrefix = "x-"
        new.maxSegmentBytes = 1 << 20
        new.metricsListen = Endpoint.tcp(host: "127.0.0.1", port: 9090)
        new.follow = Endpoint.tcp(host: "primary", port: 7070)
        let result = WaldConfig().reloadable(from: new)
        let all = ["listen", "unix", "data_dir", "segment_prefix", "max_segment_bytes", "metrics_listen", "follow"]
        #expect(result.changed == all)
        #expect(result.needsRestart == all)
    }

    @Test func replicationLimitsAreReloadableButFollowIsNot() {
        var new = WaldConfig()
        new.follow = Endpoint.tcp(host: "primary", port: 7070)
        new.minSyncReplicas = 1
        new.syncReplicaTimeout = .milliseconds(100)
        new.maxFollowerHoldBytes = 64 << 20
        let result = WaldConfig().reloadable(from: new)
        #expect(result.changed == ["follow", "min_sync_replicas", "sync_replica_timeout", "max_follower_hold_bytes"])
        #expect(result.needsRestart == ["follow"])
    }

    @Test func mixedChangesSplitCorrectly() {
        var new = WaldConfig()
        new.logLevel = .error
        new.dataDirectory = "/elsewhere"
        let result = WaldConfig().reloadable(from: new)
        #expect(result.changed == ["data_dir", "log_level"])
        #expect(result.needsRestart == ["data_dir"])
    }

    /// SIGHUP applies exactly the reloadable options: after applying, what still differs from
    /// the new configuration is what needs a restart, and nothing else.
    @Test func applyingAReloadTakesEveryReloadableOptionAndNoOther() async throws {
        let new = try await load([
            "--listen", "127.0.0.1:1", "--data-dir", "/elsewhere", "--max-segment-bytes", "1MiB", "--follow", "127.0.0.1:2",
            "--flush-interval", "1s", "--max-connections", "7", "--log-level", "debug", "--min-sync-replicas", "2",
            "--scrub-interval", "1h", "--idle-timeout", "1m", "--max-connections-per-address", "3", "--auth-token", "t",
            "--metrics-token", "m", "--retention-bytes", "1GiB", "--slow-sync-threshold", "2s",
        ])
        let applied = WaldConfig().applyingReloadable(from: new)
        let left = applied.reloadable(from: new)
        #expect(left.changed == left.needsRestart)
        #expect(Set(left.changed) == ["listen", "data_dir", "max_segment_bytes", "follow"])
        #expect(applied.flushInterval == .seconds(1) && applied.maxConnections == 7 && applied.authToken == "t")
    }

    @Test func everyOptionIsClassified() {
        let restartOnly: Set<WaldOption> = [.listen, .unix, .dataDir, .segmentPrefix, .maxSegmentBytes, .metricsListen, .follow,
                                            .respStream, .respDurability, .haEtcd, .haCluster, .advertise, .haLeaseTTL,
                                            .tlsListen, .followTLS, .followTLSCAFile, .followTLSCertFile, .followTLSKeyFile,
                                            .followTLSServerName]
        for option in WaldOption.allCases {
            #expect(option.isReloadable == !restartOnly.contains(option), "\(option)")
        }
    }

    @Test func metadataRedactsTheToken() {
        var config = WaldConfig()
        config.authToken = "hunter2"
        #expect(config.loggingMetadata["auth_token"] == "<redacted>")
        #expect(config.loggingMetadata["flush_interval"] == "10ms")
        #expect(config.loggingMetadata["min_sync_replicas"] == "0")
        #expect(config.loggingMetadata["sync_replica_timeout"] == "5s")
        #expect(config.loggingMetadata["max_follower_hold_bytes"] == "1073741824")
        #expect(config.loggingMetadata.count == WaldOption.allCases.count)
    }
}
