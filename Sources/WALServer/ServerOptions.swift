// The server's settings. `WALServer.update` applies a new set while it runs (SIGHUP), all but those fixed at
// start: the listeners and inherited sockets, the replication role, the RESP defaults, the logger, metricsText.
import Dispatch
import Logging
import WALCore
import WALProtocol
import WALTLS
import WALSystem

public struct ServerOptions: Sendable {
    /// TCP addresses to listen on. Default 127.0.0.1:7070.
    public var listen: [Endpoint] = [.tcp(host: "127.0.0.1", port: 7070)]
    /// A unix socket path to listen on as well (mode 0660). Default none.
    public var unixSocket: String?
    /// TCP addresses served with TLS (`tls`); beside `listen` or instead of it. Default none.
    public var tlsListen: [Endpoint] = []
    /// TLS listening sockets already bound (by the daemon, before it opens the log).
    public var inheritedTLSListeners: [Int32] = []
    /// The certificate, key and client-certificate policy of the TLS listeners; needed when
    /// `tlsListen` is not empty. Reloadable (new connections use the new one).
    public var tls: TLSContext?
    /// A TLS client that has not finished its handshake after this long is closed. Default 10 s.
    /// Reloadable (connections accepted afterwards).
    public var tlsHandshakeTimeout: Duration = .seconds(10)
    /// A connection that sends nothing for this long is closed, unless it waits for the
    /// server (a held reply, a replay or follow stream, XREAD BLOCK, WAIT). nil = never.
    /// Default 5 minutes. Reloadable.
    public var idleTimeout: Duration? = .seconds(300)
    /// Most connections open at once from one IP address (unix sockets are not counted).
    /// Default 64. Reloadable.
    public var maxConnectionsPerAddress: Int = 64
    /// Named users, each with a role and its token's salted hash; AUTH with a user's token
    /// gives that role. Reloadable.
    public var users: [ServerUser] = []
    /// A verified TLS client certificate's subject CN → the role it authenticates as. Reloadable.
    public var certificateRoles: [String: Role] = [:]
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

extension Duration {
    /// The same length for Dispatch (whole nanoseconds, saturating).
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        let (nanos, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .never : .nanoseconds(Int(clamping: nanos + attoseconds / 1_000_000_000))
    }
}
