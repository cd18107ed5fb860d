// The catalogue of the daemon's options, the one place an option is described: one case per option and
// its entry (value, parser, default's words, meaning, reloadability). From it come the three spellings
// (flag, WALD_* variable, YAML key), the command-line parser and `wald --help` (WaldFlags), loading
// (WaldConfig+Load), the SIGHUP diff, the start-up log line, docs/config-table.md and config/wald.yaml
// (OptionDocs; `make docs` writes them, a test fails when they differ). Adding an option: a case, its
// entry below, the stored property (with its default) in WaldConfig, its use, and its test.
import WALSystem

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
    case tlsHandshakeTimeout = "tls_handshake_timeout"

    /// The key in the YAML config file, e.g. `max_segment_bytes`.
    public var yamlKey: String { rawValue }

    /// The command-line flag, e.g. `--max-segment-bytes`.
    public var flag: String { "--" + String(rawValue.map { $0 == "_" ? "-" : $0 }) }

    /// The environment variable, e.g. `WALD_MAX_SEGMENT_BYTES`.
    public var environmentVariable: String { "WALD_" + rawValue.uppercased() }

    /// How the flag is written with its value, e.g. `--max-segment-bytes SIZE`; a switch alone.
    var flagUsage: String { entry.field.shape == .toggle ? flag : "\(flag) \(entry.valueName)" }

    /// Whether the option may appear in the config file. `config` names the file, so it can't.
    public var isFileKey: Bool { self != .config }

    /// Whether a running daemon can apply a new value (on SIGHUP) without restarting.
    public var isReloadable: Bool { entry.isReloadable }

    /// The YAML keys the config file may contain.
    public static let fileKeys: [String] = allCases.filter(\.isFileKey).map(\.yamlKey)

    /// Options whose values are secrets: never logged, redacted in errors.
    public var isSecret: Bool { entry.isSecret }

    /// Options that take a list (repeated flags, a comma-separated variable, a YAML list).
    public var isList: Bool { entry.field.shape == .list }
}

extension WaldOption {
    /// This option's entry in the catalogue. Defaults are the stored properties' initial values in
    /// `WaldConfig`; bounds are checked by the parser named here and said in `meaning`.
    var entry: OptionEntry {
        switch self {
        case .listen:
            OptionEntry(
                section: .network, valueName: "HOST:PORT",
                meaning: "TCP addresses to serve on: IPv4 (`127.0.0.1:7070`), IPv6 in brackets (`[::1]:7070`) or a "
                    + "hostname; port 0 lets the kernel pick a free port (wald reports the port it got when ready). "
                    + "`listen: []` in the file serves no TCP (then set `unix` or `tls_listen`). With socket activation "
                    + "the sockets systemd passes are served instead; a flag or variable naming other addresses is an error",
                isReloadable: false, field: .addresses(\.listen))
        case .unix:
            OptionEntry(
                section: .network, valueName: "PATH",
                meaning: "also serve on this Unix domain socket (a path of at most 107 bytes); the file is removed when "
                    + "wald stops cleanly",
                example: "/run/wald/wald.sock", isReloadable: false,
                field: .optionalText(\.unixSocket, parse: TextValue.unixSocketPath))
        case .dataDir:
            OptionEntry(
                section: .storage, valueName: "DIR",
                meaning: "directory of the segment files, relative to wald's working directory; created if missing "
                    + "(its parent must exist); a new log is only started in an empty directory",
                isReloadable: false, field: .text(\.dataDirectory, parse: TextValue.path))
        case .config:
            OptionEntry(
                section: .configuration, valueName: "FILE",
                meaning: "the YAML config file; flags and `WALD_*` variables override it; SIGHUP reads it again",
                isReloadable: true, field: .optionalText(\.configFile, parse: TextValue.path))
        case .segmentPrefix:
            OptionEntry(
                section: .storage, valueName: "PREFIX",
                meaning: "segment file name prefix: `<prefix><first LSN, 20 digits>.wal`; non-empty, no `/`",
                isReloadable: false, field: .text(\.segmentPrefix, parse: TextValue.segmentPrefix))
        case .maxSegmentBytes:
            OptionEntry(
                section: .storage, valueName: "SIZE",
                meaning: "size at which a segment is closed and the next one started; at least 128",
                isReloadable: false,
                field: .size(\.maxSegmentBytes) { (text) throws(ValueError) in
                    try ByteSize.parse(text, minimum: WaldConfig.minimumSegmentBytes)
                })
        case .maxSegments:
            OptionEntry(
                section: .storage, valueName: "N",
                meaning: "keep at most this many segment files; older ones are deleted; 0 = unlimited",
                isReloadable: true, field: .count(\.maxSegments, minimum: 0, meaning: " (0 = unlimited)"))
        case .retentionBytes:
            OptionEntry(
                section: .storage, valueName: "SIZE",
                meaning: "delete the oldest segments while all together exceed this many bytes; 0 = unlimited",
                isReloadable: true, field: .size(\.retentionBytes, parse: ByteSize.parseOrUnlimited))
        case .maxRecordBytes:
            OptionEntry(
                section: .storage, valueName: "SIZE",
                meaning: "largest record payload accepted; at most `max_frame_bytes` − 16",
                isReloadable: true, field: .size(\.maxRecordBytes))
        case .flushInterval:
            OptionEntry(
                section: .storage, valueName: "DURATION",
                meaning: "how often buffered (non-durable) appends are written and fdatasynced; 0 = only when a "
                    + "durable append or an explicit sync asks",
                isReloadable: true, field: .duration(\.flushInterval))
        case .maxBufferBytes:
            OptionEntry(
                section: .storage, valueName: "SIZE",
                meaning: "buffered appends collect in memory up to this many bytes before one write",
                isReloadable: true, field: .size(\.maxBufferBytes))
        case .maxConnections:
            OptionEntry(
                section: .network, valueName: "N",
                meaning: "most client connections open at once; more are refused; at least 1",
                isReloadable: true, field: .count(\.maxConnections, minimum: 1))
        case .maxFrameBytes:
            OptionEntry(
                section: .network, valueName: "SIZE",
                meaning: "largest protocol frame a client may send; at most 16777215 (16 MiB − 1, the wire limit)",
                isReloadable: true,
                field: .size(\.maxFrameBytes) { (text) throws(ValueError) in
                    let bytes = try ByteSize.parse(text)
                    guard (WaldConfig.frameOverheadBytes...WaldConfig.frameBytesLimit).contains(bytes) else {
                        throw ValueError("expected a byte size from \(WaldConfig.frameOverheadBytes) to "
                                         + "\(WaldConfig.frameBytesLimit) (16MiB - 1)")
                    }
                    return bytes
                })
        case .authToken:
            OptionEntry(
                section: .network, valueName: "TOKEN",
                meaning: "clients must send this token (AUTH) before any other command; it has the admin role. Prefer "
                    + "the variable or a file readable only by wald's user: flags show in `ps`",
                example: "change-me", isReloadable: true, isSecret: true,
                field: .optionalText(\.authToken, parse: TextValue.token))
        case .logLevel:
            OptionEntry(
                section: .logging, valueName: "LEVEL",
                meaning: "the least severe level logged: trace, debug, info, notice, warning, error or critical",
                isReloadable: true, field: ValueField(path: \.logLevel, parse: LogLevelText.parse, write: \.rawValue))
        case .slowSyncThreshold:
            OptionEntry(
                section: .logging, valueName: "DURATION",
                meaning: "an fdatasync slower than this is logged at warning with its duration",
                isReloadable: true, field: .duration(\.slowSyncThreshold))
        case .metricsListen:
            OptionEntry(
                section: .network, valueName: "HOST:PORT",
                meaning: "serve Prometheus metrics (`GET /metrics`) on this TCP address",
                example: "127.0.0.1:9090", isReloadable: false, field: .address(\.metricsListen, bindable: true))
        case .follow:
            OptionEntry(
                section: .replication, valueName: "HOST:PORT",
                meaning: "run as a follower of the wald at this address: stream its log and keep an identical copy; "
                    + "read-only to clients. Without it this wald is a primary",
                example: "10.0.0.1:7070", isReloadable: false, field: .address(\.follow, bindable: false))
        case .minSyncReplicas:
            OptionEntry(
                section: .replication, valueName: "N",
                meaning: "a durable append is acknowledged only after the local fsync and this many followers' feedback "
                    + "cover its LSN; 0 = the local fsync alone",
                isReloadable: true,
                field: .count(\.minSyncReplicas, minimum: 0, meaning: " (0 = don't wait for followers)"))
        case .syncReplicaTimeout:
            OptionEntry(
                section: .replication, valueName: "DURATION",
                meaning: "a durable append still waiting for `min_sync_replicas` followers after this long fails with "
                    + "UNAVAILABLE (durable locally, not acknowledged as replicated); above 0",
                isReloadable: true,
                field: .duration(\.syncReplicaTimeout, parse: DurationText.parsePositive))
        case .maxFollowerHoldBytes:
            OptionEntry(
                section: .replication, valueName: "SIZE",
                meaning: "retention keeps the segments a follower or a REPLAY still needs, up to this many bytes behind "
                    + "the end of the log; a stream further behind is dropped (its connection closed); 0 = unlimited",
                isReloadable: true, field: .size(\.maxFollowerHoldBytes, parse: ByteSize.parseOrUnlimited))
        case .respStream:
            OptionEntry(
                section: .network, valueName: "KEY",
                meaning: "the key under which Redis clients (RESP, on the same port) see the log as a stream: XADD, "
                    + "XRANGE, XREAD … name it; 1 to 128 printable ASCII characters without spaces",
                isReloadable: false,
                field: .text(\.respStream) { (text) throws(ValueError) in
                    guard (1...128).contains(text.utf8.count), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                        throw ValueError("expected a stream key of 1 to 128 printable ASCII characters without spaces")
                    }
                    return text
                })
        case .respDurability:
            OptionEntry(
                section: .network, valueName: "durable|buffered",
                meaning: "what a Redis client's XADD waits for until `CLIENT WALD-DURABILITY` says otherwise: `durable` "
                    + "(fsynced, Redis's `appendfsync always`) or `buffered` (written, durable within `flush_interval`, "
                    + "like `appendfsync everysec`)",
                isReloadable: false, field: .text(\.respDurability, parse: TextValue.oneOf(["durable", "buffered"])))
        case .scrubInterval:
            OptionEntry(
                section: .scrub, valueName: "DURATION",
                meaning: "every this often a background scrub reads every sealed segment and checks its headers, record "
                    + "CRCs and LSNs (the first pass 10 minutes after start, or one interval if shorter); damage is "
                    + "logged once at error and shown in INFO (`damage`) and `wald_damaged_places`; 0 = never",
                isReloadable: true, field: .duration(\.scrubInterval))
        case .scrubBytesPerSecond:
            OptionEntry(
                section: .scrub, valueName: "SIZE",
                meaning: "the most a scrub reads per second, so it never competes with appends for the disk; at least 64KiB",
                isReloadable: true,
                field: .size(\.scrubBytesPerSecond) { (text) throws(ValueError) in
                    try ByteSize.parse(text, minimum: 64 << 10, unit: " (read per second)")
                })
        case .haEtcd:
            OptionEntry(
                section: .failover, valueName: "URLS",
                meaning: "automatic failover (docs/replication.md): the etcd v3 endpoints, comma-separated "
                    + "`http://HOST:PORT`, that hold the cluster's leader lease; needs `ha_cluster` and `advertise`; "
                    + "excludes `follow`",
                example: "http://10.0.0.10:2379,http://10.0.0.11:2379,http://10.0.0.12:2379", isReloadable: false,
                field: ValueField(path: \.haEtcd, parse: TextValue.etcdEndpoints, write: { $0.joined(separator: ",") },
                                  log: { .array($0.map { .string($0) }) }))
        case .haCluster:
            OptionEntry(
                section: .failover, valueName: "NAME",
                meaning: "the cluster's name: 1 to 64 of `A-Za-z0-9._-`; its keys live under `/wald/NAME/` in etcd",
                example: "orders", isReloadable: false, field: .optionalText(\.haCluster, parse: TextValue.clusterName))
        case .advertise:
            OptionEntry(
                section: .failover, valueName: "HOST:PORT",
                meaning: "where other members and clients reach this wald; its identity in the cluster",
                example: "10.0.0.1:7070", isReloadable: false, field: .address(\.advertise, bindable: false))
        case .haLeaseTTL:
            OptionEntry(
                section: .failover, valueName: "DURATION",
                meaning: "the leader lease's time to live: whole seconds from 2s (etcd's minimum with its default "
                    + "election timeout) to 1h; a dead leader is replaced after about one TTL",
                isReloadable: false,
                field: .duration(\.haLeaseTTL) { (text) throws(ValueError) in
                    let ttl = try DurationText.parse(text)
                    guard ttl >= .seconds(2), ttl <= .seconds(3600), ttl.components.attoseconds == 0 else {
                        throw ValueError("expected whole seconds from 2s to 1h: etcd counts lease TTLs in seconds and "
                                         + "raises any below its minimum (1.5 x its election timeout, 2 s with default settings)")
                    }
                    return ttl
                })
        case .tlsListen:
            OptionEntry(
                section: .tls, valueName: "HOST:PORT",
                meaning: "TCP addresses served with TLS 1.2 or 1.3 (every protocol), beside `listen` or instead of it "
                    + "(`listen: []`); needs `tls_cert_file` and `tls_key_file`",
                example: "0.0.0.0:7443", isReloadable: false, field: .addresses(\.tlsListen))
        case .tlsCertFile:
            OptionEntry(
                section: .tls, valueName: "FILE",
                meaning: "the TLS listeners' certificate (PEM; intermediate certificates after the server's); SIGHUP "
                    + "reads it again: new connections get the new one, open ones keep theirs",
                example: "/etc/wald/tls/server.pem", isReloadable: true,
                field: .optionalText(\.tlsCertFile, parse: TextValue.path))
        case .tlsKeyFile:
            OptionEntry(
                section: .tls, valueName: "FILE",
                meaning: "the private key of `tls_cert_file` (unencrypted PEM; keep it readable by wald only); a key of "
                    + "another certificate is an error",
                example: "/etc/wald/tls/server.key", isReloadable: true,
                field: .optionalText(\.tlsKeyFile, parse: TextValue.path))
        case .tlsCAFile:
            OptionEntry(
                section: .tls, valueName: "FILE",
                meaning: "CAs that client certificates must chain to (PEM); needed when `tls_client_auth` is request "
                    + "or require",
                example: "/etc/wald/tls/ca.pem", isReloadable: true, field: .optionalText(\.tlsCAFile, parse: TextValue.path))
        case .tlsClientAuth:
            OptionEntry(
                section: .tls, valueName: "none|request|require",
                meaning: "client certificates: `none` (not asked for), `request` (asked for; if sent, it must verify) "
                    + "or `require` (a client without a valid certificate is refused in the handshake)",
                example: "require", isReloadable: true,
                field: .text(\.tlsClientAuth, parse: TextValue.oneOf(["none", "request", "require"])))
        case .idleTimeout:
            OptionEntry(
                section: .network, valueName: "DURATION",
                meaning: "close a connection that sends nothing for this long while the server owes it nothing (held "
                    + "replies, replay and follow streams, XREAD BLOCK and WAIT are exempt); 0 = never",
                isReloadable: true, field: .duration(\.idleTimeout))
        case .maxConnectionsPerAddress:
            OptionEntry(
                section: .network, valueName: "N",
                meaning: "most connections open at once from one IP address (Unix socket clients are not counted); "
                    + "more are refused like `max_connections`; at least 1",
                isReloadable: true, field: .count(\.maxConnectionsPerAddress, minimum: 1))
        case .followTLS:
            OptionEntry(
                section: .replication, valueName: "",
                meaning: "a follower reaches its upstream (`follow`) over TLS, verifying its certificate",
                example: "true", isReloadable: false, field: .toggle(\.followTLS))
        case .followTLSCAFile:
            OptionEntry(
                section: .replication, valueName: "FILE",
                meaning: "CAs the upstream's certificate must chain to (PEM); needs `follow_tls`",
                example: "/etc/wald/tls/ca.pem", noneText: "the system's CAs", isReloadable: false,
                field: .optionalText(\.followTLSCAFile, parse: TextValue.path))
        case .followTLSCertFile:
            OptionEntry(
                section: .replication, valueName: "FILE",
                meaning: "this follower's client certificate (PEM), for an upstream with `tls_client_auth`; with "
                    + "`follow_tls_key_file`",
                example: "/etc/wald/tls/follower.pem", isReloadable: false,
                field: .optionalText(\.followTLSCertFile, parse: TextValue.path))
        case .followTLSKeyFile:
            OptionEntry(
                section: .replication, valueName: "FILE",
                meaning: "the key of `follow_tls_cert_file` (PEM)",
                example: "/etc/wald/tls/follower.key", isReloadable: false,
                field: .optionalText(\.followTLSKeyFile, parse: TextValue.path))
        case .followTLSServerName:
            OptionEntry(
                section: .replication, valueName: "NAME",
                meaning: "the name (DNS name or IP address) the upstream's certificate must carry",
                example: "wald-primary.example.org", noneText: "the host of `follow`", isReloadable: false,
                field: .optionalText(\.followTLSServerName, parse: TextValue.name))
        case .metricsToken:
            OptionEntry(
                section: .network, valueName: "TOKEN",
                meaning: "scrapes of `metrics_listen` must send `Authorization: Bearer TOKEN` (Prometheus: "
                    + "`authorization: credentials`), else 401; prefer the variable",
                example: "change-me", isReloadable: true, isSecret: true,
                field: .optionalText(\.metricsToken, parse: TextValue.token))
        case .tlsHandshakeTimeout:
            OptionEntry(
                section: .tls, valueName: "DURATION",
                meaning: "a TLS client that has not finished its handshake this long after connecting is closed (a "
                    + "stalled handshake holds a connection slot; nginx's `ssl_handshake_timeout` is the same "
                    + "guard); above 0; connections made after a reload get the new value",
                isReloadable: true,
                field: .duration(\.tlsHandshakeTimeout, parse: DurationText.parsePositive))
        }
    }
}
