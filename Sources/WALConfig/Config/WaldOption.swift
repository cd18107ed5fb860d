// The catalog of the daemon's options: one case per option, and from it each option's three spellings
// (flag, environment variable, YAML key) and whether a running daemon can apply a change to it.

/// One configurable option of wald. The raw value is the option's YAML key.
public enum WaldOption: String, Sendable, CaseIterable, Hashable {
    case listen
    case unix
    case dataDir = "data_dir"
    case config
    case segmentPrefix = "segment_prefix"
    case maxSegmentBytes = "max_segment_bytes"
    case maxSegments = "max_segments"
    case retentionBytes = "retention_bytes"
    case maxRecordBytes = "max_record_bytes"
    case flushInterval = "flush_interval"
    case maxBufferBytes = "max_buffer_bytes"
    case maxConnections = "max_connections"
    case maxFrameBytes = "max_frame_bytes"
    case authToken = "auth_token"
    case logLevel = "log_level"
    case slowSyncThreshold = "slow_sync_threshold"
    case metricsListen = "metrics_listen"
    case follow
    case minSyncReplicas = "min_sync_replicas"
    case syncReplicaTimeout = "sync_replica_timeout"
    case maxFollowerHoldBytes = "max_follower_hold_bytes"
    case respStream = "resp_stream"
    case respDurability = "resp_durability"
    case scrubInterval = "scrub_interval"
    case scrubBytesPerSecond = "scrub_bytes_per_second"
    case haEtcd = "ha_etcd"
    case haCluster = "ha_cluster"
    case advertise
    case haLeaseTTL = "ha_lease_ttl"
    case tlsListen = "tls_listen"
    case tlsCertFile = "tls_cert_file"
    case tlsKeyFile = "tls_key_file"
    case tlsCAFile = "tls_ca_file"
    case tlsClientAuth = "tls_client_auth"
    case idleTimeout = "idle_timeout"
    case maxConnectionsPerAddress = "max_connections_per_address"
    case followTLS = "follow_tls"
    case followTLSCAFile = "follow_tls_ca_file"
    case followTLSCertFile = "follow_tls_cert_file"
    case followTLSKeyFile = "follow_tls_key_file"
    case followTLSServerName = "follow_tls_server_name"
    case metricsToken = "metrics_token"

    /// The key in the YAML config file, e.g. `max_segment_bytes`.
    public var yamlKey: String { rawValue }

    /// The command-line flag, e.g. `--max-segment-bytes`.
    public var flag: String { "--" + String(rawValue.map { $0 == "_" ? "-" : $0 }) }

    /// The environment variable, e.g. `WALD_MAX_SEGMENT_BYTES`.
    public var environmentVariable: String { "WALD_" + rawValue.uppercased() }

    /// Whether the option may appear in the config file. `config` names the file, so it can't.
    public var isFileKey: Bool { self != .config }

    /// Whether a running daemon can apply a new value (on SIGHUP) without restarting.
    /// Addresses, the data directory, the segment layout and the follower role are fixed for the life
    /// of the process.
    public var isReloadable: Bool {
        switch self {
        case .logLevel, .flushInterval, .maxSegments, .retentionBytes, .maxConnections, .maxRecordBytes,
            .maxFrameBytes, .maxBufferBytes, .authToken, .slowSyncThreshold, .minSyncReplicas, .syncReplicaTimeout,
            .maxFollowerHoldBytes, .scrubInterval, .scrubBytesPerSecond, .config, .tlsCertFile, .tlsKeyFile, .tlsCAFile,
            .tlsClientAuth, .idleTimeout, .maxConnectionsPerAddress, .metricsToken:
            return true
        case .listen, .unix, .dataDir, .segmentPrefix, .maxSegmentBytes, .metricsListen, .follow, .respStream,
             .respDurability, .haEtcd, .haCluster, .advertise, .haLeaseTTL,
             .tlsListen, .followTLS, .followTLSCAFile, .followTLSCertFile, .followTLSKeyFile,
             .followTLSServerName:
            return false
        }
    }

    /// The YAML keys the config file may contain.
    public static let fileKeys: [String] = allCases.filter(\.isFileKey).map(\.yamlKey)

    /// Options whose values are secrets: never logged, redacted in errors.
    public var isSecret: Bool { self == .authToken || self == .metricsToken }

    /// Options that take a list of addresses (repeated flags, a comma-separated variable, a YAML list).
    public var isList: Bool { self == .listen || self == .tlsListen }
}
