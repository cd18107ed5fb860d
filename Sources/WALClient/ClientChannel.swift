// A client connection's byte stream: a blocking socket (WALSystem's Sockets), or TLS over it. With
// TLS the socket is made non-blocking and every wait is a poll(2) outside the lock, because one
// SSL object must never run SSL_read (the reader thread) and SSL_write (a caller) at once: each
// OpenSSL call holds `lock` for a single non-blocking step only, so a reader waiting for data
// never holds up a writer.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Synchronization
import WALProtocol
import WALTLS
import WALSync
import WALSystem

/// How a client reaches a wald over TLS (walctl `--tls`, a follower's `--follow-tls`).
public struct ClientTLS: Sendable {
    /// CAs the server's certificate must chain to (PEM); nil = the system's.
    public var caFile: String?
    /// A client certificate and key (PEM) for servers that ask for one (mutual TLS).
    public var certificateFile: String?
    public var keyFile: String?
    /// The name the server's certificate must carry (a DNS name or IP address); nil = the
    /// endpoint's host.
    public var serverName: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.serverName = serverName
    }

    /// The OpenSSL context these settings make (reads the files; throws `.connectionFailed`
    /// naming the file and the reason).
    public func makeContext() throws(WALClientError) -> TLSContext {
        do {
            return try TLSContext(clientCAFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        } catch {
            throw .connectionFailed(error.description)
        }
    }
}

final class ClientChannel: Sendable {
    let fd: Int32
    let tls: TLSSession?
    /// Serialises the OpenSSL calls on `tls` (see the file comment).
    private let lock = WALMutex(())
    /// How long `receive` waits before failing with EAGAIN (like SO_RCVTIMEO); nil = for ever.
    private let receiveTimeout = WALMutex<Duration?>(nil)

    /// A plain channel over a connected socket.
    init(fd: Int32) {
        self.fd = fd
        tls = nil
    }

    /// Runs the TLS handshake on connected socket `fd` within `timeout`, checking the server's
    /// certificate against `serverName`. Closes `fd` and throws when it fails.
    init(fd: Int32, context: TLSContext, serverName: String?, timeout: Duration) throws(WALClientError) {
        self.fd = fd
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        do {
            tls = try TLSSession(context: context, fd: fd, serverName: serverName)
        } catch {
            Glibc.close(fd)
            throw .connectionFailed(error.description)
        }
        let deadline = ContinuousClock.now + timeout
        while true {
            let step = tls!.handshake()
            let events: Int16
            switch step {
            case .bytes: return
            case .wantRead: events = Int16(POLLIN)
            case .wantWrite: events = Int16(POLLOUT)
            case .closed:
                Glibc.close(fd)
                throw .connectionFailed("the server closed the connection during the TLS handshake (is it a TLS port? does it want a client certificate?)")
            case .failed(let reason):
                Glibc.close(fd)
                throw .connectionFailed(reason)
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero, Sockets.wait(fd, events: events, for: left) != 0 else {
                Glibc.close(fd)
                throw .timedOut("the TLS handshake did not finish within \(WALClient.seconds(timeout)) s")
            }
        }
    }

    /// Connects to `endpoint` (within `timeout`), then runs the TLS handshake when `tls` is
    /// given (within `timeout`, or 10 s).
    static func connect(_ endpoint: Endpoint, timeout: Duration?, tls: ClientTLS?) throws(WALClientError) -> ClientChannel {
        let fd = try WALClient.openSocket(endpoint, timeout: timeout)
        guard let tls else { return ClientChannel(fd: fd) }
        let context: TLSContext
        do {
            context = try tls.makeContext()
        } catch {
            Sockets.close(fd)
            throw error
        }
        return try ClientChannel(fd: fd, context: context, serverName: tls.serverName ?? endpoint.host,
                                 timeout: timeout ?? .seconds(10))
    }

    func setReceiveTimeout(_ interval: Duration) {
        if tls == nil {
            Sockets.setReceiveTimeout(fd, interval)
        } else {
            receiveTimeout.withLock { $0 = interval }
        }
    }

    /// Sends all bytes; false when the connection is gone.
    func sendAll(_ bytes: [UInt8]) -> Bool {
        guard let tls else { return Sockets.sendAll(fd, bytes) }
        var sent = 0
        while sent < bytes.count {
            let outcome = lock.withLock { _ in bytes.withUnsafeBytes { tls.write(UnsafeRawBufferPointer(rebasing: $0[sent...])) } }
            switch outcome {
            case .bytes(let n): sent += n
            case .wantWrite: if Sockets.wait(fd, events: Int16(POLLOUT), for: nil) < 0 { return false }
            case .wantRead: if Sockets.wait(fd, events: Int16(POLLIN), for: nil) < 0 { return false }
            case .closed, .failed: return false
            }
        }
        return true
    }

    /// Blocking read: the byte count, 0 at end of stream, -1 on error (errno EAGAIN when the
    /// receive timeout passed, as with SO_RCVTIMEO).
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let tls else { return Sockets.receive(fd, into: buffer) }
        let timeout = receiveTimeout.withLock { $0 }
        while true {
            let outcome = lock.withLock { _ in tls.read(into: buffer) }
            let events: Int16
            switch outcome {
            case .bytes(let n): return n
            case .closed: return 0
            case .failed:
                errno = EPROTO
                return -1
            case .wantRead: events = Int16(POLLIN)
            case .wantWrite: events = Int16(POLLOUT)
            }
            let ready = Sockets.wait(fd, events: events, for: timeout)
            if ready == 0 {
                errno = EAGAIN
                return -1
            }
            if ready < 0 { return -1 }
        }
    }

    func shutdownBoth() { Sockets.shutdownBoth(fd) }
}
