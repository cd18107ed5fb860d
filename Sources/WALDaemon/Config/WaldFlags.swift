// The daemon's command-line options. Every one is optional: a flag that isn't given must not hide the
// environment or the config file, so defaults live in WaldConfig, not here. Values stay text so that
// a bad flag gets the same error, naming the flag, as a bad environment variable or file entry.
import ArgumentParser
import Configuration

/// Embed in the daemon's command with `@OptionGroup var flags: WaldFlags`, then call
/// `WaldConfig.load(flags:environment:)`. In tests: `try WaldFlags.parse(["--listen", "[::1]:7070"])`.
public struct WaldFlags: ParsableArguments, Sendable {
    @Option(
        help: ArgumentHelp(
            "TCP address to serve on; repeat for several. Default 127.0.0.1:7070. Env WALD_LISTEN (comma-separated).",
            valueName: "host:port"))
    public var listen: [String] = []

    @Option(help: ArgumentHelp("Also serve on this Unix socket. Default none. Env WALD_UNIX.", valueName: "path"))
    public var unix: String?

    @Option(help: ArgumentHelp("Directory of the segment files. Default ./data. Env WALD_DATA_DIR.", valueName: "dir"))
    public var dataDir: String?

    @Option(help: ArgumentHelp("YAML config file; flags and WALD_* variables override it. Env WALD_CONFIG.", valueName: "file"))
    public var config: String?

    @Option(help: ArgumentHelp("Segment file name prefix. Default wal-. Env WALD_SEGMENT_PREFIX.", valueName: "prefix"))
    public var segmentPrefix: String?

    @Option(help: ArgumentHelp("Size at which a segment is closed (bytes; KiB/MiB/GiB). Default 64MiB.", valueName: "size"))
    public var maxSegmentBytes: String?

    @Option(help: ArgumentHelp("Keep at most this many segments; 0 = unlimited. Default 0.", valueName: "count"))
    public var maxSegments: String?

    @Option(help: ArgumentHelp("Delete the oldest segments above this total size; 0 = unlimited. Default 0.", valueName: "size"))
    public var retentionBytes: String?

    @Option(help: ArgumentHelp("Largest record payload accepted. Default 1MiB.", valueName: "size"))
    public var maxRecordBytes: String?

    @Option(help: ArgumentHelp("How often buffered appends are synced (0, 500us, 10ms, 1s, 2m); 0 = only on demand. Default 10ms.", valueName: "duration"))
    public var flushInterval: String?

    @Option(help: ArgumentHelp("Buffered appends collect up to this size before one write. Default 1MiB.", valueName: "size"))
    public var maxBufferBytes: String?

    @Option(help: ArgumentHelp("Most client connections at once. Default 1024.", valueName: "count"))
    public var maxConnections: String?

    @Option(help: ArgumentHelp("Largest protocol frame, at most 16777215. Default 16777215.", valueName: "size"))
    public var maxFrameBytes: String?

    @Option(help: ArgumentHelp("Clients must send this token before anything else. Default none. Prefer WALD_AUTH_TOKEN: flags are visible in ps.", valueName: "token"))
    public var authToken: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. Default info.", valueName: "level"))
    public var logLevel: String?

    @Option(help: ArgumentHelp("Log an fdatasync slower than this at warning. Default 1s.", valueName: "duration"))
    public var slowSyncThreshold: String?

    @Option(help: ArgumentHelp("Serve metrics on this TCP address. Default none.", valueName: "host:port"))
    public var metricsListen: String?

    @Option(help: ArgumentHelp("Run as a follower of the wald at this address: stream its log and keep an identical copy; read-only to clients. Default none.", valueName: "host:port"))
    public var follow: String?

    @Option(help: ArgumentHelp("A durable append is acknowledged only after the local fsync and this many followers cover it. Default 0.", valueName: "count"))
    public var minSyncReplicas: String?

    @Option(help: ArgumentHelp("A durable append waiting longer than this for followers fails with UNAVAILABLE; above 0. Default 5s.", valueName: "duration"))
    public var syncReplicaTimeout: String?

    @Option(help: ArgumentHelp("Keep segments a connected follower needs up to this far behind the end of the log, then drop the follower; 0 = unlimited. Default 1GiB.", valueName: "size"))
    public var maxFollowerHoldBytes: String?

    @Option(help: ArgumentHelp("The key under which Redis clients (RESP) see the log as a stream. Default wal.", valueName: "key"))
    public var respStream: String?

    @Option(help: ArgumentHelp("What a Redis client's XADD waits for: durable (fsynced) or buffered (written; synced within the flush interval). Default durable.", valueName: "durable|buffered"))
    public var respDurability: String?

    public init() {}

    /// The flags that were given, keyed by YAML key, for the highest-priority provider.
    var configValues: [AbsoluteConfigKey: ConfigValue] {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        if !listen.isEmpty { values[WaldOption.listen.configKey] = ConfigValue(.stringArray(listen), isSecret: false) }
        let single: [(WaldOption, String?)] = [
            (.unix, unix), (.dataDir, dataDir), (.config, config), (.segmentPrefix, segmentPrefix),
            (.maxSegmentBytes, maxSegmentBytes), (.maxSegments, maxSegments), (.retentionBytes, retentionBytes),
            (.maxRecordBytes, maxRecordBytes), (.flushInterval, flushInterval), (.maxBufferBytes, maxBufferBytes),
            (.maxConnections, maxConnections), (.maxFrameBytes, maxFrameBytes), (.authToken, authToken),
            (.logLevel, logLevel), (.slowSyncThreshold, slowSyncThreshold), (.metricsListen, metricsListen),
            (.follow, follow), (.minSyncReplicas, minSyncReplicas), (.syncReplicaTimeout, syncReplicaTimeout),
            (.maxFollowerHoldBytes, maxFollowerHoldBytes), (.respStream, respStream),
            (.respDurability, respDurability),
        ]
        for case (let option, let value?) in single {
            values[option.configKey] = ConfigValue(.string(value), isSecret: option == .authToken)
        }
        return values
    }
}

extension WaldOption {
    /// The option's key in every provider: one component, the YAML key.
    var configKey: AbsoluteConfigKey { AbsoluteConfigKey([yamlKey]) }
}
