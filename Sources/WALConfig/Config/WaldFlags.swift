// The daemon's command-line options. Every one is optional: a flag that isn't given must not hide the
// environment or the config file, so defaults live in WaldConfig, not here. Values stay text so that
// a bad flag gets the same error, naming the flag, as a bad environment variable or file entry.
import ArgumentParser
import Configuration

/// Embed in the daemon's command with `@OptionGroup var flags: WaldFlags`, then call
/// `WaldConfig.load(flags:environment:)`. In tests: `try WaldFlags.parse(["--listen", "[::1]:7070"])`.
public struct WaldFlags: ParsableArguments, Sendable {
    @Option(help: WaldOption.help(.listen,
            "TCP address to serve on; repeat for several (the variable takes them comma-separated). Default 127.0.0.1:7070.",
            valueName: "host:port"))
    public var listen: [String] = []

    @Option(help: WaldOption.help(.unix, "Also serve on this Unix socket. Default none.", valueName: "path"))
    public var unix: String?

    @Option(help: WaldOption.help(.dataDir, "Directory of the segment files. Default ./data.", valueName: "dir"))
    public var dataDir: String?

    @Option(help: WaldOption.help(.config, "YAML config file; flags and WALD_* variables override it.", valueName: "file"))
    public var config: String?

    @Option(help: WaldOption.help(.segmentPrefix, "Segment file name prefix. Default wal-.", valueName: "prefix"))
    public var segmentPrefix: String?

    @Option(help: WaldOption.help(.maxSegmentBytes, "Size at which a segment is closed (bytes; KiB/MiB/GiB). Default 64MiB.", valueName: "size"))
    public var maxSegmentBytes: String?

    @Option(help: WaldOption.help(.maxSegments, "Keep at most this many segments; 0 = unlimited. Default 0.", valueName: "count"))
    public var maxSegments: String?

    @Option(help: WaldOption.help(.retentionBytes, "Delete the oldest segments above this total size; 0 = unlimited. Default 0.", valueName: "size"))
    public var retentionBytes: String?

    @Option(help: WaldOption.help(.maxRecordBytes, "Largest record payload accepted. Default 1MiB.", valueName: "size"))
    public var maxRecordBytes: String?

    @Option(help: WaldOption.help(.flushInterval, "How often buffered appends are synced (0, 500us, 10ms, 1s, 2m); 0 = only on demand. Default 10ms.", valueName: "duration"))
    public var flushInterval: String?

    @Option(help: WaldOption.help(.maxBufferBytes, "Buffered appends collect up to this size before one write. Default 1MiB.", valueName: "size"))
    public var maxBufferBytes: String?

    @Option(help: WaldOption.help(.maxConnections, "Most client connections at once. Default 1024.", valueName: "count"))
    public var maxConnections: String?

    @Option(help: WaldOption.help(.maxFrameBytes, "Largest protocol frame, at most 16777215. Default 16777215.", valueName: "size"))
    public var maxFrameBytes: String?

    @Option(help: WaldOption.help(.authToken, "Clients must send this token before anything else. Default none. Prefer the variable: flags are visible in ps.", valueName: "token"))
    public var authToken: String?

    @Option(help: WaldOption.help(.logLevel, "trace, debug, info, notice, warning, error or critical. Default info.", valueName: "level"))
    public var logLevel: String?

    @Option(help: WaldOption.help(.slowSyncThreshold, "Log an fdatasync slower than this at warning. Default 1s.", valueName: "duration"))
    public var slowSyncThreshold: String?

    @Option(help: WaldOption.help(.metricsListen, "Serve metrics on this TCP address. Default none.", valueName: "host:port"))
    public var metricsListen: String?

    @Option(help: WaldOption.help(.follow, "Run as a follower of the wald at this address: stream its log and keep an identical copy; read-only to clients. Default none.", valueName: "host:port"))
    public var follow: String?

    @Option(help: WaldOption.help(.minSyncReplicas, "A durable append is acknowledged only after the local fsync and this many followers cover it. Default 0.", valueName: "count"))
    public var minSyncReplicas: String?

    @Option(help: WaldOption.help(.syncReplicaTimeout, "A durable append waiting longer than this for followers fails with UNAVAILABLE; above 0. Default 5s.", valueName: "duration"))
    public var syncReplicaTimeout: String?

    @Option(help: WaldOption.help(.maxFollowerHoldBytes, "Keep segments a connected follower needs up to this far behind the end of the log, then drop the follower; 0 = unlimited. Default 1GiB.", valueName: "size"))
    public var maxFollowerHoldBytes: String?

    @Option(help: WaldOption.help(.respStream, "The key under which Redis clients (RESP) see the log as a stream. Default wal.", valueName: "key"))
    public var respStream: String?

    @Option(help: WaldOption.help(.respDurability, "What a Redis client's XADD waits for: durable (fsynced) or buffered (written; synced within the flush interval). Default durable.", valueName: "durable|buffered"))
    public var respDurability: String?

    @Option(help: WaldOption.help(.scrubInterval, "Verify every sealed segment's CRCs this often, in the background; 0 = never. Default 24h.", valueName: "duration"))
    public var scrubInterval: String?

    @Option(help: WaldOption.help(.scrubBytesPerSecond, "The most a scrub reads per second, at least 64KiB. Default 16MiB.", valueName: "size"))
    public var scrubBytesPerSecond: String?

    @Option(help: WaldOption.help(.haEtcd, "Automatic failover: the etcd v3 endpoints (comma-separated http://HOST:PORT) that hold the cluster's leader lease. Needs --ha-cluster and --advertise. Default none.", valueName: "urls"))
    public var haEtcd: String?

    @Option(help: WaldOption.help(.haCluster, "Automatic failover: the cluster's name (its keys live under /wald/NAME/ in etcd). Default none.", valueName: "name"))
    public var haCluster: String?

    @Option(help: WaldOption.help(.advertise, "Automatic failover: the HOST:PORT other members and clients reach this wald at. Default none.", valueName: "host:port"))
    public var advertise: String?

    @Option(help: WaldOption.help(.haLeaseTTL, "Automatic failover: the leader lease's time to live, whole seconds, at least 2s (etcd's minimum with default settings). Default 3s.", valueName: "duration"))
    public var haLeaseTTL: String?
    @Option(help: WaldOption.help(.tlsListen, "TCP address to serve with TLS; repeat for several. Needs --tls-cert-file and --tls-key-file. Default none.", valueName: "host:port"))
    public var tlsListen: [String] = []

    @Option(help: WaldOption.help(.tlsCertFile, "The TLS listeners' certificate chain (PEM). Default none.", valueName: "file"))
    public var tlsCertFile: String?

    @Option(help: WaldOption.help(.tlsKeyFile, "The private key of the TLS certificate (PEM). Default none.", valueName: "file"))
    public var tlsKeyFile: String?

    @Option(help: WaldOption.help(.tlsCAFile, "CAs that client certificates must chain to (PEM). Default none.", valueName: "file"))
    public var tlsCAFile: String?

    @Option(help: WaldOption.help(.tlsClientAuth, "Client certificates: none, request (verified if sent) or require. Default none.", valueName: "none|request|require"))
    public var tlsClientAuth: String?

    @Option(help: WaldOption.help(.idleTimeout, "Close a connection that sends nothing this long while owed nothing; 0 = never. Default 5m.", valueName: "duration"))
    public var idleTimeout: String?

    @Option(help: WaldOption.help(.maxConnectionsPerAddress, "Most connections at once from one IP address. Default 64.", valueName: "count"))
    public var maxConnectionsPerAddress: String?

    @Flag(help: WaldOption.flagHelp(.followTLS, "Reach the upstream of --follow over TLS. Default off."))
    public var followTls = false

    @Option(help: WaldOption.help(.followTLSCAFile, "CAs the upstream's certificate must chain to (PEM). Default the system's.", valueName: "file"))
    public var followTlsCaFile: String?

    @Option(help: WaldOption.help(.followTLSCertFile, "The follower's client certificate (PEM), for mutual TLS. Default none.", valueName: "file"))
    public var followTlsCertFile: String?

    @Option(help: WaldOption.help(.followTLSKeyFile, "The key of --follow-tls-cert-file (PEM). Default none.", valueName: "file"))
    public var followTlsKeyFile: String?

    @Option(help: WaldOption.help(.followTLSServerName, "The name the upstream's certificate must carry. Default the host of --follow.", valueName: "name"))
    public var followTlsServerName: String?

    @Option(help: WaldOption.help(.metricsToken, "Scrapes of --metrics-listen must send Authorization: Bearer <token>. Default none. Prefer the variable.", valueName: "token"))
    public var metricsToken: String?

    public init() {}

    /// The flags that were given, keyed by YAML key, for the highest-priority provider.
    var configValues: [AbsoluteConfigKey: ConfigValue] {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        if !listen.isEmpty { values[WaldOption.listen.configKey] = ConfigValue(.stringArray(listen), isSecret: false) }
        if !tlsListen.isEmpty { values[WaldOption.tlsListen.configKey] = ConfigValue(.stringArray(tlsListen), isSecret: false) }
        if followTls { values[WaldOption.followTLS.configKey] = ConfigValue(.string("true"), isSecret: false) }
        let single: [(WaldOption, String?)] = [
            (.unix, unix), (.dataDir, dataDir), (.config, config), (.segmentPrefix, segmentPrefix),
            (.maxSegmentBytes, maxSegmentBytes), (.maxSegments, maxSegments), (.retentionBytes, retentionBytes),
            (.maxRecordBytes, maxRecordBytes), (.flushInterval, flushInterval), (.maxBufferBytes, maxBufferBytes),
            (.maxConnections, maxConnections), (.maxFrameBytes, maxFrameBytes), (.authToken, authToken),
            (.logLevel, logLevel), (.slowSyncThreshold, slowSyncThreshold), (.metricsListen, metricsListen),
            (.follow, follow), (.minSyncReplicas, minSyncReplicas), (.syncReplicaTimeout, syncReplicaTimeout),
            (.maxFollowerHoldBytes, maxFollowerHoldBytes), (.respStream, respStream),
            (.respDurability, respDurability), (.scrubInterval, scrubInterval),
            (.scrubBytesPerSecond, scrubBytesPerSecond), (.haEtcd, haEtcd), (.haCluster, haCluster),
            (.advertise, advertise), (.haLeaseTTL, haLeaseTTL),
            (.tlsCertFile, tlsCertFile), (.tlsKeyFile, tlsKeyFile),
            (.tlsCAFile, tlsCAFile), (.tlsClientAuth, tlsClientAuth), (.idleTimeout, idleTimeout),
            (.maxConnectionsPerAddress, maxConnectionsPerAddress), (.followTLSCAFile, followTlsCaFile),
            (.followTLSCertFile, followTlsCertFile), (.followTLSKeyFile, followTlsKeyFile),
            (.followTLSServerName, followTlsServerName), (.metricsToken, metricsToken),
        ]
        for case (let option, let value?) in single {
            values[option.configKey] = ConfigValue(.string(value), isSecret: option.isSecret)
        }
        return values
    }
}

extension WaldOption {
    /// The option's key in every provider: one component, the YAML key.
    var configKey: AbsoluteConfigKey { AbsoluteConfigKey([yamlKey]) }

    /// The flag's help: `text`, then the option's environment variable and YAML key, so
    /// `wald --help` names every way to set every option.
    static func help(_ option: WaldOption, _ text: String, valueName: String) -> ArgumentHelp {
        ArgumentHelp("\(text) Env \(option.environmentVariable)" + (option.isFileKey ? ", file key \(option.yamlKey)." : "."),
                     valueName: valueName)
    }

    /// The same for a flag without a value (the variable and the file take true or false).
    static func flagHelp(_ option: WaldOption, _ text: String) -> ArgumentHelp {
        ArgumentHelp("\(text) Env \(option.environmentVariable)=true, file key \(option.yamlKey): true.")
    }
}
