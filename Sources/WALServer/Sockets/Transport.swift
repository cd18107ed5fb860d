// A connected socket's byte stream as its owner on the loop sees it: in clear (read(2)/send(2)
// through WALSystem's Sockets) or through TLS (a TLSSession over the same non-blocking descriptor).
// Connection and UpstreamStream read and write only through it, so every protocol works
// unchanged over TLS: the input buffer receives decrypted bytes, the output is encrypted on
// the way out. TLS adds one thing the owner must honour: a read (or the handshake) may have to
// wait for the socket to become *writable* (`wantsWritable`), so the owner arms its write
// source for that as well as for pending output.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import WALTLS
import WALSystem

struct Transport {
    let fd: Int32
    let tls: TLSSession?
    /// The last TLS call waits for writability (the owner arms its write source and, when it
    /// fires, retries the handshake or the read).
    private(set) var wantsWritable = false
    /// Why the last TLS call failed (for the owner's log line).
    private(set) var failure: String?

    init(fd: Int32, tls: TLSSession? = nil) {
        self.fd = fd
        self.tls = tls
    }

    var isTLS: Bool { tls != nil }
    /// A TLS handshake is still running (reads and writes wait for it).
    var isHandshaking: Bool { tls.map { !$0.handshakeDone } ?? false }

    enum HandshakeStep: Equatable {
        case done
        /// Waits for the socket (readable, or writable when `wantsWritable`).
        case waiting
        case failed
    }

    /// Advances the TLS handshake (done at once for a plain socket).
    mutating func handshake() -> HandshakeStep {
        guard let tls else { return .done }
        wantsWritable = false
        switch tls.handshake() {
        case .bytes: return .done
        case .wantRead: return .waiting
        case .wantWrite:
            wantsWritable = true
            return .waiting
        case .closed:
            failure = "the peer closed the connection during the TLS handshake"
            return .failed
        case .failed(let reason):
            failure = reason
            return .failed
        }
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> ReadOutcome {
        guard let tls else { return Sockets.read(fd, into: buffer) }
        wantsWritable = false
        switch tls.read(into: buffer) {
        case .bytes(let n): return .bytes(n)
        case .wantRead: return .wouldBlock
        case .wantWrite:
            wantsWritable = true
            return .wouldBlock
        case .closed: return .endOfFile
        case .failed(let reason):
            failure = reason
            return .failed(EPROTO)
        }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        guard let tls else { return Sockets.write(fd, bytes) }
        switch tls.write(bytes) {
        case .bytes(let n): return .wrote(n)
        // WANT_READ: only a renegotiation would ask it, and renegotiation is off; the read
        // source is armed whenever the connection reads, which is when it could come.
        case .wantRead, .wantWrite: return .wouldBlock
        case .closed: return .failed(EPIPE)
        case .failed(let reason):
            failure = reason
            return .failed(EPROTO)
        }
    }

    /// Decrypted bytes TLS holds that no readability event will announce.
    var pending: Int { tls?.pending ?? 0 }

    /// Sends TLS close_notify (best effort, never waits).
    func shutdown() { tls?.shutdown() }
}
