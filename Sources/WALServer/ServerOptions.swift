// The server's settings. The ones marked "reloadable" can change while it runs (SIGHUP).
import Logging
import WALCore
import WALProtocol

public struct ServerOptions: Sendable {
    /// TCP addresses to listen on. Default 127.0.0.1:7070.
    public var listen: [SocketAddress] = [SocketAddress(host: "127.0.0.1", port: 7070)]
    /// A unix socket path to listen on as well (mode 0660). Default none.
    public var unixSocket: String?
    /// Listening sockets inherited from systemd (socket activation); when non-empty they
    /// replace `listen` and `unixSocket`.
    public var inheritedListeners: [Int32] = []
    /// Connections served at once; one more gets `ERR BUSY` and is closed. Default 1024. Reloadable.
    public var maxConnections: Int = 1024
    /// Largest binary frame length accepted (at most 16 MiB - 1). Reloadable.
    public var maxFrameBytes: Int = ProtocolLimits.maxFrameLength
    /// Per-connection output kept before the server stops reading that client's requests
    /// (backpressure). Default 4 MiB.
    public var maxOutputBytes: Int = 4 << 20
    /// When set, clients must AUTH with it before anything but PING and QUIT. Reloadable.
    public var authToken: String?
    /// Whether this server follows an upstream (read-only to clients). Default: a primary.
    public var replication = ReplicationRole(upstream: nil)
    /// Durable appends are acknowledged only after this many followers acknowledged them. Reloadable.
    public var minSyncReplicas: Int = 0
    /// How long a durable append waits for `minSyncReplicas` before failing with UNAVAILABLE. Reloadable.
    public var syncReplicaTimeout: Duration = .seconds(5)
    /// A follower more than this many bytes behind the end of the log is dropped, and its
    /// segments are no longer held. 0 = unlimited. Reloadable.
    public var maxFollowerHoldBytes: Int = 1 << 30
    /// The key under which RESP clients see the log as a Redis stream. Default `wal`.
    public var respStream: String = "wal"
    /// RESP connections start with buffered XADDs (acknowledged once written) instead of
    /// durable ones; `CLIENT WALD-DURABILITY` switches a connection. Default false.
    public var respBuffered = false
    public var logger: Logger = Logger(label: "wald.server")
    /// Produces the METRICS text (Prometheus exposition format). Default none.
    public var metricsText: (@Sendable () -> String)?

    public init() {}
}
