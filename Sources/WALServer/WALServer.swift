// The network front of the WAL: listeners on TCP and unix sockets and their connections, all
// on one event loop (ServerLoop), and graceful shutdown. Calls from other threads reach the
// loop with `queue.async` (or `queue.sync` for a quick answer; never from the loop itself).
// See docs/protocol.md for what is spoken on the wire, docs/architecture.md for who runs what.
import Dispatch
import Logging
import Synchronization
import WALCore
import WALProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Serves a `WAL` over the wald protocol (binary and text on the same port).
public final class WALServer: Sendable {
    private let loop: ServerLoop
    private let listeners = Mutex<[Listener]>([])

    private struct Listener: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated Sendable; listeners are
        // only created, read and cancelled under the `listeners` lock.
        let fd: Int32
        let source: any DispatchSourceRead
        let address: String
    }

    /// Attaches the server's event loop to `wal`: from now on the WAL's results are delivered
    /// there (one server per WAL).
    public init(wal: WAL, options: ServerOptions, version: String = WaldVersion.string) {
        loop = ServerLoop(wal: wal, options: options, version: version)
    }

    /// Binds every address of `options.listen` and `options.unixSocket`, all or none: throws
    /// `SocketError` (a port in use, a name that does not resolve) with nothing left bound or
    /// created. A daemon binds before it opens its log, so a failed start leaves nothing behind,
    /// and hands the descriptors over as `inheritedListeners`.
    public static func bind(_ options: ServerOptions) throws -> [Int32] {
        var fds: [Int32] = []
        do {
            for address in options.listen { fds.append(try SocketCalls.listenTCP(address)) }
            if let path = options.unixSocket { fds.append(try SocketCalls.listenUnix(path)) }
        } catch {
            for fd in fds { SocketCalls.close(fd) }
            if let path = options.unixSocket, fds.count > options.listen.count { unlink(path) }
            throw error
        }
        return fds
    }

    /// The address a listening descriptor is bound to (`127.0.0.1:7070`, `unix:/path`).
    public static func localAddress(_ fd: Int32) -> String { SocketCalls.localAddress(fd) }

    /// Binds every configured address (or adopts inherited listeners) and starts accepting.
    /// Returns the bound addresses (`127.0.0.1:7070`, `unix:/path`), with real port numbers.
    /// Throws `SocketError` when an address cannot be bound (nothing stays bound then).
    @discardableResult
    public func start() throws -> [String] {
        let options = loop.sharedOptions.withLock { $0 }
        var fds: [Int32] = []
        if options.inheritedListeners.isEmpty {
            fds = try Self.bind(options)
        } else {
            for fd in options.inheritedListeners {
                SocketCalls.setNonBlocking(fd)
                fds.append(fd)
            }
        }
        var bound: [String] = []
        for fd in fds {
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
            let loop = self.loop
            source.setEventHandler { Self.acceptAll(listener: fd, loop: loop) }
            source.setCancelHandler { SocketCalls.close(fd) }
            let address = SocketCalls.localAddress(fd)
            listeners.withLock { $0.append(Listener(fd: fd, source: source, address: address)) }
            bound.append(address)
            source.resume()
        }
        loop.logger.info("listening", metadata: ["addresses": "\(bound.joined(separator: ", "))"])
        return bound
    }

    /// On the loop: accepts what is pending (at most 64 at a time, then other events run).
    private static func acceptAll(listener: Int32, loop: ServerLoop) {
        for _ in 0..<64 {
            guard let (fd, peer) = SocketCalls.accept(listener) else { return }
            guard let connection = loop.admit(fd: fd, peer: peer) else {
                loop.metrics.connectionRejected()
                let message = Array("ERR BUSY too many connections\r\n".utf8)
                _ = message.withUnsafeBytes { SocketCalls.write(fd, $0) }
                SocketCalls.close(fd)
                loop.logger.warning("connection refused: too many connections", metadata: ["peer": "\(peer)"])
                continue
            }
            connection.start()
        }
    }

    /// Serves one already-connected stream socket (one end of a socketpair, say) as if a
    /// listener had accepted it: the fuzzer (`wald-fuzz session`) and the in-process tests
    /// drive client sessions through it without a network. Takes ownership of `fd`. Returns
    /// false, having closed `fd`, when the server is full. Not to be called on the loop.
    package func serve(connectedSocket fd: Int32, peer: String) -> Bool {
        SocketCalls.setNonBlocking(fd)
        let loop = self.loop
        let connection = loop.queue.sync { () -> Connection? in
            let connection = loop.admit(fd: fd, peer: peer)
            connection?.start()
            return connection
        }
        if connection == nil { SocketCalls.close(fd) }
        return connection != nil
    }

    /// On a follower: streams the upstream's log into this server's WAL from `lsn`, on the
    /// event loop (records appended under the upstream's LSNs, FEEDBACK after each local
    /// fdatasync), until the stream ends; then throws `UpstreamError` saying why. Takes
    /// ownership of `fd`, a connected (and authenticated) socket to the upstream. One stream
    /// at a time; a second call ends the first.
    public func follow(upstreamSocket fd: Int32, from lsn: LSN) async throws {
        let loop = self.loop
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.queue.async {
                loop.upstream?.end(.stopped)
                guard !loop.followingStopped else {
                    SocketCalls.close(fd)
                    continuation.resume(throwing: UpstreamError.stopped)
                    return
                }
                loop.upstream = UpstreamStream(fd: fd, from: lsn, loop: loop, finished: continuation)
            }
        }
    }

    /// Ends the stream from the upstream, if any, and refuses later ones (PROMOTE, shutdown);
    /// `follow` throws `.stopped`.
    public func stopFollowing() async {
        let loop = self.loop
        await withCheckedContinuation { continuation in
            loop.queue.async {
                loop.followingStopped = true
                loop.upstream?.end(.stopped)
                continuation.resume()
            }
        }
    }

    /// Lets `follow` start streams again after `stopFollowing` (automatic failover re-points a
    /// follower at a new leader).
    public func allowFollowing() async {
        let loop = self.loop
        await withCheckedContinuation { continuation in
            loop.queue.async {
                loop.followingStopped = false
                continuation.resume()
            }
        }
    }

    /// The role object (follower or primary, and under automatic failover the term and lease).
    public var replication: ReplicationRole { loop.replication }

    /// Addresses being listened on.
    public var addresses: [String] { listeners.withLock { $0.map(\.address) } }

    /// Connections open now.
    public var connectionCount: Int { loop.openConnections.load(ordering: .relaxed) }

    /// One line per open connection with its session state (for the fuzz targets' hang reports).
    package var connectionStates: [String] {
        let loop = self.loop
        return loop.queue.sync { loop.connections.values.map(\.stateDescription) }
    }

    /// Changes the options that may change at run time: max connections, max frame bytes,
    /// auth token, and the replication limits. Takes effect for requests read from now on.
    public func update(
        maxConnections: Int? = nil, maxFrameBytes: Int? = nil, authToken: String?? = nil,
        minSyncReplicas: Int? = nil, syncReplicaTimeout: Duration? = nil, maxFollowerHoldBytes: Int? = nil
    ) {
        let options = loop.sharedOptions.withLock { options -> ServerOptions in
            if let maxConnections { options.maxConnections = maxConnections }
            if let maxFrameBytes { options.maxFrameBytes = maxFrameBytes }
            if let authToken { options.authToken = authToken }
            if let minSyncReplicas { options.minSyncReplicas = minSyncReplicas }
            if let syncReplicaTimeout { options.syncReplicaTimeout = syncReplicaTimeout }
            if let maxFollowerHoldBytes { options.maxFollowerHoldBytes = maxFollowerHoldBytes }
            return options
        }
        let loop = self.loop
        loop.queue.sync { loop.options = options }
    }

    /// The metrics text (`GET /metrics`), with the gauges read at scrape time brought up to
    /// date on the loop first. Not to be called on the loop.
    public func metricsText() -> String {
        let loop = self.loop
        loop.queue.sync { loop.refreshGauges() }
        return loop.sharedOptions.withLock { $0.metricsText }?() ?? "# metrics are not enabled in this process\n"
    }

    /// The INFO JSON object, as a client would see it.
    public func info() async -> String {
        let loop = self.loop
        return await withCheckedContinuation { continuation in
            loop.queue.async { continuation.resume(returning: loop.infoJSON()) }
        }
    }

    /// Stops accepting, lets every connection finish the requests it already sent (follow
    /// streams end), waits up to `timeout` for replies to be written, then closes all
    /// connections. Does not close the WAL.
    public func shutdown(timeout: Duration = .seconds(5)) async {
        let closing = listeners.withLock { list -> [Listener] in
            defer { list.removeAll() }
            return list
        }
        for listener in closing { listener.source.cancel() }
        let loop = self.loop
        loop.queue.async {
            for connection in Array(loop.connections.values) { connection.closeGracefully() }
        }
        let deadline = ContinuousClock.now + timeout
        while connectionCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        await withCheckedContinuation { continuation in
            loop.queue.async {
                for connection in Array(loop.connections.values) { connection.close() }
                loop.stopTick()
                continuation.resume()
            }
        }
    }
}
