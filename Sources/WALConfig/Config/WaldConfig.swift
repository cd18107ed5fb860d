// The daemon's resolved configuration: one stored property per option, typed and holding its default
// (the catalogue, `WaldOption.entry`, says how each is read, checked and shown), plus the comparison
// a SIGHUP reload uses to decide what it can apply in place.
import Logging
import WALCore
import WALSystem

public struct WaldConfig: Sendable, Equatable {
    /// TCP addresses to serve on. Default `[127.0.0.1:7070]`. An empty list (file: `listen: []`)
    /// serves TCP nowhere, which needs `unixSocket`.
    public var listen: [Endpoint] = [.tcp(host: "127.0.0.1", port: 7070)]
    /// Also serve on this Unix socket path. Default none.
    public var unixSocket: String? = nil
    // The engine's options: what each means, its default and its bounds are said once, on
    // `WALOptions` (WALCore), and the defaults are read from it; the daemon's differ only where noted.
    /// `WALOptions.directory`; the daemon's default is `./data`.
    public var dataDirectory: String = "./data"
    /// `WALOptions.segmentPrefix`.
    public var segmentPrefix: String = engine.segmentPrefix
    /// `WALOptions.maxSegmentBytes`; at least 128.
    public var maxSegmentBytes: Int = engine.maxSegmentBytes
    /// `WALOptions.maxSegments`.
    public var maxSegments: Int = engine.maxSegments
    /// `WALOptions.retentionBytes`.
    public var retentionBytes: Int = engine.retentionBytes
    /// `WALOptions.maxRecordBytes`; at most `maxFrameBytes - 16`.
    public var maxRecordBytes: Int = engine.maxRecordBytes
    /// `WALOptions.flushInterval`.
    public var flushInterval: Duration = engine.flushInterval
    /// `WALOptions.maxBufferBytes`.
    public var maxBufferBytes: Int = engine.maxBufferBytes
    /// Most client connections at once. Default 1024; at least 1.
    public var maxConnections: Int = 1024
    /// Largest protocol frame in bytes. Default and upper bound 16 MiB − 1 (16777215).
    public var maxFrameBytes: Int = WaldConfig.frameBytesLimit
    /// Clients must authenticate with this token. Default none (no authentication).
    public var authToken: String? = nil
    /// Default `.info`.
    public var logLevel: Logger.Level = .info
    /// `WALOptions.slowSyncThreshold`.
    public var slowSyncThreshold: Duration = engine.slowSyncThreshold
    /// Serve metrics on this address. Default none.
    public var metricsListen: Endpoint? = nil
    /// Run as a follower of the wald at this address: stream its log and keep an identical copy;
    /// read-only to clients. Default none (a primary). Needs a restart to change.
    public var follow: Endpoint? = nil
    /// A durable append is acknowledged only after the local fdatasync and this many followers'
    /// feedback cover its LSN. Default 0 (the local fdatasync alone); at least 0. Reloadable.
    public var minSyncReplicas: Int = 0
    /// A durable append still waiting for `minSyncReplicas` followers after this long fails with
    /// UNAVAILABLE (it is durable locally, but not acknowledged as replicated). Default 5 s; above 0. Reloadable.
    public var syncReplicaTimeout: Duration = .seconds(5)
    /// Retention keeps the segments a follower or a REPLAY still needs, but only up to this many bytes
    /// behind the end of the log; a stream further behind is dropped. 0 = unlimited (a stream may
    /// hold segments indefinitely). Default 1 GiB. Reloadable.
    public var maxFollowerHoldBytes: Int = 1 << 30
    /// The key under which RESP clients see the log as a Redis stream: 1–128 printable ASCII
    /// characters, no spaces. Default `wal`.
    public var respStream: String = "wal"
    /// What a RESP client's XADD waits for until it says otherwise (`CLIENT WALD-DURABILITY`):
    /// `durable` (fsynced, Redis's `appendfsync always`) or `buffered` (written, synced within the
    /// flush interval, like `appendfsync everysec`). Default `durable`.
    public var respDurability: String = "durable"
    /// `WALOptions.scrubInterval` (damage also shows in INFO and `wald_damaged_places`); the
    /// daemon's default is 24 h, the engine's none. Reloadable.
    public var scrubInterval: Duration = .seconds(24 * 3600)
    /// `WALOptions.scrubBytesPerSecond`. Reloadable.
    public var scrubBytesPerSecond: Int = engine.scrubBytesPerSecond
    /// Automatic failover (docs/replication.md): the etcd v3 endpoints, `http://HOST:PORT`, that hold the
    /// cluster's leader lease. Empty (the default) = no automatic failover; then `haCluster`,
    /// `advertise` and `haLeaseTTL` are unused. Excludes `follow` (the leader is found in etcd).
    public var haEtcd: [String] = []
    /// The cluster's name: 1–64 of `[A-Za-z0-9._-]`; its keys live under `/wald/<name>/`.
    public var haCluster: String? = nil
    /// Where other members and clients reach this wald (the address published in etcd). A
    /// member's identity in the cluster; port 0 is refused.
    public var advertise: Endpoint? = nil
    /// The leader lease's time to live: whole seconds, at least 2 s (etcd's own minimum with its
    /// default election timeout, 1.5 s rounded up). Default 3 s.
    public var haLeaseTTL: Duration = .seconds(3)
    /// TCP addresses served with TLS, beside `listen` or instead of it (`listen: []`). Default none.
    /// Needs `tlsCertFile` and `tlsKeyFile`.
    public var tlsListen: [Endpoint] = []
    /// The TLS listeners' certificate (PEM, chain after the leaf). Default none. Reloadable (SIGHUP
    /// reads it again; new connections use it, open ones keep theirs).
    public var tlsCertFile: String? = nil
    /// The private key of `tlsCertFile` (unencrypted PEM). Default none. Reloadable.
    public var tlsKeyFile: String? = nil
    /// CAs that client certificates must chain to (PEM). Needed for `tlsClientAuth` request or
    /// require. Default none. Reloadable.
    public var tlsCAFile: String? = nil
    /// `none`, `request` (a certificate, if sent, must verify) or `require`. Default `none`. Reloadable.
    public var tlsClientAuth: String = "none"
    /// A connection that sends nothing this long while the server owes it nothing is closed;
    /// zero = never. Default 5 minutes. Reloadable.
    public var idleTimeout: Duration = .seconds(300)
    /// Most connections at once from one IP address. Default 64; at least 1. Reloadable.
    public var maxConnectionsPerAddress: Int = 64
    /// A follower reaches its upstream over TLS. Default false.
    public var followTLS: Bool = false
    /// CAs the upstream's certificate must chain to; default the system's. Needs `followTLS`.
    public var followTLSCAFile: String? = nil
    /// The follower's client certificate (mutual TLS). Needs `followTLSKeyFile`.
    public var followTLSCertFile: String? = nil
    /// The key of `followTLSCertFile`.
    public var followTLSKeyFile: String? = nil
    /// The name the upstream's certificate must carry; default the host of `follow`.
    public var followTLSServerName: String? = nil
    /// Scrapes of `metrics_listen` must send `Authorization: Bearer <token>`. Default none. Reloadable.
    public var metricsToken: String? = nil
    /// A TLS handshake not finished this long after connecting closes the connection. Default 10 s.
    public var tlsHandshakeTimeout: Duration = .seconds(10)
    /// Named users (config file only, key `users`): AUTH with a user's token gives its role. Reloadable.
    public var users: [WaldUser] = []
    /// Verified client certificate CN → role (config file only, key `cert_roles`). Reloadable.
    public var certificateRoles: [String: String] = [:]
    /// The YAML file the configuration was read from (`--config` or `WALD_CONFIG`), if any.
    public var configFile: String? = nil

    /// The largest frame the wire format can describe: a 24-bit length.
    public static let frameBytesLimit = (1 << 24) - 1
    /// Bytes of a frame that are not record payload.
    public static let frameOverheadBytes = 16
    /// The smallest segment that holds a header and one record header.
    public static let minimumSegmentBytes = 128

    /// File keys outside the option catalogue: structured access lists, with no flag or variable.
    public static let accessKeys = ["users", "cert_roles"]

    /// The engine's defaults, which the engine options above start from.
    private static let engine = WALOptions(directory: "./data")

    /// All defaults.
    public init() {}

    /// Which options differ between this (running) configuration and `new`, in catalog order, by
    /// YAML key; `needsRestart` is the subset a running daemon can't apply (see `WaldOption.isReloadable`).
    public func reloadable(from new: WaldConfig) -> (changed: [String], needsRestart: [String]) {
        let changed = WaldOption.allCases.filter { !sameValue(of: $0, as: new) }
        return (changed.map(\.yamlKey), changed.filter { !$0.isReloadable }.map(\.yamlKey))
    }

    private func sameValue(of option: WaldOption, as other: WaldConfig) -> Bool {
        option.entry.field.same(self, other)
    }

    /// The running configuration with every option a running daemon can apply
    /// (`WaldOption.isReloadable`) taken from `new`, and the file-only access lists (`users`,
    /// `cert_roles`), which are reloadable too. What SIGHUP applies.
    public func applyingReloadable(from new: WaldConfig) -> WaldConfig {
        var applied = self
        for option in WaldOption.allCases where option.isReloadable {
            option.entry.field.copy(from: new, into: &applied)
        }
        applied.users = new.users
        applied.certificateRoles = new.certificateRoles
        return applied
    }

    /// Every option as log metadata (YAML keys), secrets redacted: log it once at startup.
    public var loggingMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = [:]
        for option in WaldOption.allCases {
            let entry = option.entry
            metadata[option.yamlKey] =
                entry.isSecret ? (entry.field.written(self) == nil ? "none" : "<redacted>") : entry.field.logged(self)
        }
        return metadata
    }
}

/// One entry of the config file's `users:` list. `tokenHash` is `walctl hash-token`'s output.
public struct WaldUser: Sendable, Equatable {
    public var name: String
    /// `read`, `append` or `admin`.
    public var role: String
    public var tokenHash: String

    public init(name: String, role: String, tokenHash: String) {
        self.name = name
        self.role = role
        self.tokenHash = tokenHash
    }
}
