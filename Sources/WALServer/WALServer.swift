// The network front of the WAL: listeners on TCP and unix sockets, connections on Dispatch
// sources, graceful shutdown. See docs/protocol.md for what is spoken on the wire.
import Dispatch
import Logging
import Synchronization
import WALCore

/// Serves a `WAL` over the wald protocol (binary and text on the same port).
public final class WALServer: Sendable {
    private let core: ServerCore
    private let listeners = Mutex<[Listener]>([])
    private let followerWatch = Mutex<Task<Void, Never>?>(nil)

    private struct Listener: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated Sendable; listeners are
        // only created, read and cancelled under the `listeners` lock.
        let fd: Int32
        let source: any DispatchSourceRead
        let address: String
    }

    public init(wal: WAL, options: ServerOptions, version: String = "0.1.0") {
        core = ServerCore(wal: wal, options: options, version: version)
    }

    /// Binds every configured address (or adopts inherited listeners) and starts accepting.
    /// Returns the bound addresses (`127.0.0.1:7070`, `unix:/path`), with real port numbers.
    @discardableResult
    public func start() throws -> [String] {
        let options = core.options
        var fds: [Int32] = []
        do {
            if options.inheritedListeners.isEmpty {
                for address in options.listen { fds.append(try SocketCalls.listenTCP(address)) }
                if let path = options.unixSocket { fds.append(try SocketCalls.listenUnix(path)) }
            } else {
                for fd in options.inheritedListeners {
                    SocketCalls.setNonBlocking(fd)
                    fds.append(fd)
                }
            }
        } catch {
            for fd in fds { SocketCalls.close(fd) }
            throw error
        }
        var bound: [String] = []
        for fd in fds {
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: core.ioQueue)
            let core = self.core
            source.setEventHandler { Self.acceptAll(listener: fd, core: core) }
            source.setCancelHandler { SocketCalls.close(fd) }
            let address = SocketCalls.localAddress(fd)
            listeners.withLock { $0.append(Listener(fd: fd, source: source, address: address)) }
            bound.append(address)
            source.resume()
        }
        core.logger.info("listening", metadata: ["addresses": "\(bound.joined(separator: ", "))"])
        let core = self.core
        let watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                await core.dropLaggingFollowers()
            }
        }
        followerWatch.withLock { $0 = watcher }
        return bound
    }

    private static func acceptAll(listener: Int32, core: ServerCore) {
        for _ in 0..<64 {
            guard let (fd, peer) = SocketCalls.accept(listener) else { return }
            guard let connection = core.admit(fd: fd, peer: peer) else {
                core.metrics.connectionRejected()
                let message = Array("ERR BUSY too many connections\r\n".utf8)
                _ = message.withUnsafeBytes { SocketCalls.write(fd, $0) }
                SocketCalls.close(fd)
                core.logger.warning("connection refused: too many connections", metadata: ["peer": "\(peer)"])
                continue
            }
            connection.start()
        }
    }

    /// Serves one already-connected stream socket (one end of a socketpair, say) as if a
    /// listener had accepted it: the fuzzer (`wald-fuzz session`) drives client sessions
    /// through it without a network. Takes ownership of `fd`. Returns false, having closed
    /// `fd`, when the server is full.
    package func serve(connectedSocket fd: Int32, peer: String) -> Bool {
        SocketCalls.setNonBlocking(fd)
        guard let connection = core.admit(fd: fd, peer: peer) else {
            SocketCalls.close(fd)
            return false
        }
        core.ioQueue.async { connection.start() }
        return true
    }

    /// Addresses being listened on.
    public var addresses: [String] { listeners.withLock { $0.map(\.address) } }

    /// Connections open now.
    public var connectionCount: Int { core.connectionCount }

    /// One line per open connection with its session state (for the fuzz targets' hang reports).
    package var connectionStates: [String] { core.allConnections.map(\.stateDescription) }

    /// Changes the options that may change at run time: max connections, max frame bytes,
    /// auth token, and the replication limits.
    public func update(
        maxConnections: Int? = nil, maxFrameBytes: Int? = nil, authToken: String?? = nil,
        minSyncReplicas: Int? = nil, syncReplicaTimeout: Duration? = nil, maxFollowerHoldBytes: Int? = nil
    ) {
        core.update { options in
            if let maxConnections { options.maxConnections = maxConnections }
            if let maxFrameBytes { options.maxFrameBytes = maxFrameBytes }
            if let authToken { options.authToken = authToken }
            if let minSyncReplicas { options.minSyncReplicas = minSyncReplicas }
            if let syncReplicaTimeout { options.syncReplicaTimeout = syncReplicaTimeout }
            if let maxFollowerHoldBytes { options.maxFollowerHoldBytes = maxFollowerHoldBytes }
        }
    }

    /// The INFO JSON object, as a client would see it.
    public func info() async -> String { await core.infoJSON() }

    /// Stops accepting, lets every connection finish the requests it already sent (follow
    /// streams end), waits up to `timeout` for replies to be written, then closes all
    /// connections. Does not close the WAL.
    public func shutdown(timeout: Duration = .seconds(5)) async {
        let closing = listeners.withLock { list -> [Listener] in
            defer { list.removeAll() }
            return list
        }
        for listener in closing { listener.source.cancel() }
        followerWatch.withLock { $0?.cancel() }
        for connection in core.allConnections { connection.closeGracefully() }
        let deadline = ContinuousClock.now + timeout
        while core.connectionCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        for connection in core.allConnections { connection.close() }
    }
}
