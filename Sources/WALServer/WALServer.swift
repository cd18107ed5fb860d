// The network front of the WAL: listeners on TCP and unix sockets and their connections, all
// on one event loop (ServerLoop), and graceful shutdown. Calls from other threads reach the
// loop with `queue.async` (or `queue.sync` for a quick answer; never from the loop itself).
// See docs/protocol.md for what is spoken on the wire, docs/architecture.md for who runs what.
import Dispatch
import Logging
import Synchronization
import WALCore
import WALProtocol
import WALTLS
#if canImport(Glibc)
import Glibc
import WALSync
#endif
import WALSystem

/// Serves a `WAL` over the wald protocol (binary and text on the same port).
public final class WALServer: Sendable {
    private let loop: ServerLoop
    private let listeners = WALMutex<[Listener]>([])

    private struct Listener: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated Sendable; listeners are
        // only created, read and cancelled under the `listeners` lock.
        let fd: Int32
        let source: any DispatchSourceRead
        let address: String
        let tls: Bool
    }

    /// Attaches the server's event loop to `wal`: from now on the WAL's results are delivered
    /// there (one server per WAL).
    public init(wal: WAL, options: ServerOptions, version: String = WaldVersion.string) {
        loop = ServerLoop(wal: wal, options: options, version: version)
    }

    /// Binds every address of `options.listen` and `options.unixSocket`, all or none: throws
    /// `SystemError` (a port in use, a name that does not resolve) with nothing left bound or
    /// created. A daemon binds before it opens its log, so a failed start leaves nothing behind,
    /// and hands the descriptors over as `inheritedListeners`.
    public static func bind(_ options: ServerOptions) throws -> [Int32] {
        var fds: [Int32] = []
        do {
            for address in options.listen { fds.append(try Sockets.listen(address)) }
            if let path = options.unixSocket { fds.append(try Sockets.listenUnix(path)) }
        } catch {
            for fd in fds { Sockets.close(fd) }
            if let path = options.unixSocket, fds.count > options.listen.count { unlink(path) }
            throw error
        }
        return fds
    }

    /// Binds every address of `options.tlsListen`, all or none (see `bind`).
    public static func bindTLS(_ options: ServerOptions) throws -> [Int32] {
        var fds: [Int32] = []
        do {
            for address in options.tlsListen { fds.append(try Sockets.listen(address)) }
        } catch {
            for fd in fds { Sockets.close(fd) }
            throw error
        }
        return fds
    }

    /// The address a listening descriptor is bound to (`127.0.0.1:7070`, `unix:/path`).
    public static func localAddress(_ fd: Int32) -> String { Sockets.localAddress(fd) }

    /// Binds every configured address (or adopts inherited listeners) and starts accepting.
    /// Returns the bound addresses (`127.0.0.1:7070`, `unix:/path`, and `tls=127.0.0.1:7443`
    /// for TLS listeners), with real port numbers. Throws `SystemError` when an address cannot
    /// be bound (nothing stays bound then), `TLSError` when TLS listeners have no certificate.
    @discardableResult
    public func start() throws -> [String] {
        let options = loop.sharedOptions.withLock { $0 }
        var fds: [Int32] = []
        var tlsFDs: [Int32] = []
        let needsTLS = !options.tlsListen.isEmpty || !options.inheritedTLSListeners.isEmpty
        if needsTLS && options.tls == nil {
            throw TLSError("TLS listeners need a certificate and key (tls_cert_file, tls_key_file)")
        }
        if options.inheritedListeners.isEmpty {
            fds = try Self.bind(options)
        } else {
            for fd in options.inheritedListeners {
                Sockets.setNonBlocking(fd)
                fds.append(fd)
            }
        }
        if options.inheritedTLSListeners.isEmpty {
            do {
                tlsFDs = try Self.bindTLS(options)
            } catch {
                for fd in fds { Sockets.close(fd) }
                throw error
            }
        } else {
            for fd in options.inheritedTLSListeners {
                Sockets.setNonBlocking(fd)
                tlsFDs.append(fd)
            }
        }
        var bound: [String] = []
        for (fd, tls) in fds.map({ ($0, false) }) + tlsFDs.map({ ($0, true) }) {
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
            let loop = self.loop
            source.setEventHandler { Self.acceptAll(listener: fd, tls: tls, loop: loop) }
            source.setCancelHandler { Sockets.close(fd) }
            let address = Sockets.localAddress(fd)
            listeners.withLock { $0.append(Listener(fd: fd, source: source, address: address, tls: tls)) }
            bound.append(tls ? "tls=" + address : address)
            source.resume()
        }
        loop.logger.info("listening", metadata: ["addresses": "\(bound.joined(separator: ", "))"])
        return bound
    }

    /// On the loop: accepts what is pending (at most 64 at a time, then other events run).
    private static func acceptAll(listener: Int32, tls: Bool, loop: ServerLoop) {
        for _ in 0..<64 {
            guard let (fd, peer) = Sockets.accept(listener) else { return }
            let context = tls ? loop.options.tls : nil
            if tls && context == nil {
                Sockets.close(fd)
                continue
            }
            switch loop.admit(fd: fd, peer: peer, tls: context) {
            case .admitted(let connection):
                connection.start()
            case .refused(let reason):
                loop.metrics.connectionRejected()
                if !tls {
                    // A TLS client could not read a line in clear: it only sees the close.
                    let message = Array("ERR BUSY \(reason)\r\n".utf8)
                    _ = message.withUnsafeBytes { Sockets.write(fd, $0) }
                }
                Sockets.close(fd)
                loop.logger.warning("connection refused", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
            }
        }
    }

    /// Serves one already-connected stream socket (one end of a socketpair, say) as if a
    /// listener had accepted it: the fuzzer (`wald-fuzz session`) and the in-process tests
    /// drive client sessions through it without a network. Takes ownership of `fd`. Returns
    /// false, having closed `fd`, when the server is full. Not to be called on the loop.
    package func serve(connectedSocket fd: Int32, peer: String) -> Bool {
        Sockets.setNonBlocking(fd)
        let loop = self.loop
        let connection = loop.queue.sync { () -> Connection? in
            guard case .admitted(let connection) = loop.admit(fd: fd, peer: peer) else { return nil }
            connection.start()
            return connection
        }
        if connection == nil { Sockets.close(fd) }
        return connection != nil
    }

    /// On a follower: streams the upstream's log into this server's WAL from `lsn`, on the
    /// event loop (records appended under the upstream's LSNs, FEEDBACK after each local
    /// fdatasync), until the stream ends; then throws `UpstreamError` saying why. Takes
    /// ownership of `fd`, a connected (and authenticated) socket to the upstream, and of `tls`,
    /// its TLS session when the upstream is reached over TLS (handshake done). One stream at a
    /// time; a second call ends the first.
    public func follow(upstreamSocket fd: Int32, tls: TLSSession? = nil, from lsn: LSN) async throws {
        let loop = self.loop
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.queue.async {
                loop.upstream?.end(.stopped)
                guard !loop.followingStopped else {
                    Sockets.close(fd)
                    continuation.resume(throwing: UpstreamError.stopped)
                    return
                }
                loop.upstream = UpstreamStream(fd: fd, tls: tls, from: lsn, loop: loop, finished: continuation)
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

    /// The options in force (the last `update` applied).
    public var options: ServerOptions { loop.sharedOptions.withLock { $0 } }

    /// Applies a reloaded configuration (SIGHUP): every setting of `new` except those fixed when
    /// the server started, which keep their values: the listeners (`listen`, `unixSocket`,
    /// `tlsListen`, the inherited sockets), the replication role, `respStream`, `respBuffered`,
    /// `logger` and `metricsText`. Takes effect for requests read from now on and for new TLS
    /// handshakes; open connections keep their negotiated session. Same shape as `WAL.update`.
    public func update(_ new: ServerOptions) {
        let options = loop.sharedOptions.withLock { options -> ServerOptions in
            var next = new
            next.listen = options.listen
            next.unixSocket = options.unixSocket
            next.tlsListen = options.tlsListen
            next.inheritedListeners = options.inheritedListeners
            next.inheritedTLSListeners = options.inheritedTLSListeners
            next.replication = options.replication
            next.respStream = options.respStream
            next.respBuffered = options.respBuffered
            next.logger = options.logger
            next.metricsText = options.metricsText
            options = next
            return next
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
