// One TLS connection (an SSL object) over a socket its owner already has: the handshake, reads
// and writes, each of which returns at once. On a non-blocking socket OpenSSL says what it waits
// for (WANT_READ / WANT_WRITE) and the owner waits for that with its own Dispatch source or poll;
// nothing here blocks, sleeps or starts a thread. A session is used by one owner at a time (the
// server's loop, or a client under its lock); it never closes the descriptor.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

public final class TLSSession: @unchecked Sendable {
    // @unchecked Sendable: an SSL object is not thread-safe; every owner confines a session to
    // one queue (the server's loop) or one lock (WALClient), documented where it is held.

    /// What a read or write did.
    public enum IO: Equatable, Sendable {
        /// Bytes were read into the buffer, or taken from it.
        case bytes(Int)
        /// Call again when the socket is readable.
        case wantRead
        /// Call again when the socket is writable.
        case wantWrite
        /// The peer ended the TLS stream (close_notify, or the TCP stream ended).
        case closed
        /// The connection is unusable: OpenSSL's reason.
        case failed(String)
    }

    private let ssl: OpaquePointer
    /// Keeps the context's Swift owner alive as long as the session (OpenSSL counts its own
    /// reference as well).
    public let context: TLSContext
    public private(set) var handshakeDone = false
    private var shutDown = false

    /// A session on connected socket `fd`. A client session checks that the server's
    /// certificate names `serverName` (a DNS name or an IP address) and sends it as SNI.
    public init(context: TLSContext, fd: Int32, serverName: String? = nil) throws(TLSError) {
        ERR_clear_error()
        guard let ssl = SSL_new(context.context) else { throw .openSSL("cannot create a TLS session") }
        self.ssl = ssl
        self.context = context
        guard SSL_set_fd(ssl, fd) == 1 else { throw .openSSL("cannot attach the TLS session to its socket") }
        if context.isServer {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let serverName, !serverName.isEmpty {
                if Self.isIPAddress(serverName) {
                    guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName) == 1 else {
                        throw .openSSL("cannot check the server's certificate against \(serverName)")
                    }
                } else {
                    guard SSL_set1_host(ssl, serverName) == 1, wald_ssl_set_sni(ssl, serverName) == 1 else {
                        throw .openSSL("cannot check the server's certificate against \(serverName)")
                    }
                }
            }
        }
    }

    deinit { SSL_free(ssl) }

    /// Advances the handshake: `.bytes(0)` when it is complete.
    public func handshake() -> IO {
        guard !handshakeDone else { return .bytes(0) }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeDone = true
            return .bytes(0)
        }
        return outcome(result, during: "TLS handshake")
    }

    /// SSL_read into `buffer` (which must not be empty).
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> IO {
        ERR_clear_error()
        let result = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if result > 0 { return .bytes(Int(result)) }
        return outcome(result, during: "TLS read")
    }

    /// SSL_write of (a prefix of) `bytes`: partial writes are on, and a retry may pass a moved
    /// buffer that starts with the same bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) -> IO {
        guard bytes.count > 0 else { return .bytes(0) }
        ERR_clear_error()
        let result = SSL_write(ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        if result > 0 { return .bytes(Int(result)) }
        return outcome(result, during: "TLS write")
    }

    /// Decrypted bytes OpenSSL holds that the socket will not announce again: read them
    /// before waiting for readability.
    public var pending: Int { Int(SSL_pending(ssl)) }

    /// Sends close_notify, once, without waiting for the peer's (the descriptor is closed next).
    public func shutdown() {
        guard handshakeDone, !shutDown else { return }
        shutDown = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// The subject CN of the peer's certificate, when it sent one and it verified.
    public var verifiedPeerCommonName: String? {
        guard handshakeDone, SSL_get_verify_result(ssl) == Int(X509_V_OK),
              let certificate = SSL_get0_peer_certificate(ssl),
              let subject = X509_get_subject_name(certificate) else { return nil }
        var text = [CChar](repeating: 0, count: 256)
        let length = X509_NAME_get_text_by_NID(subject, NID_commonName, &text, Int32(text.count))
        guard length > 0 else { return nil }
        return String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The negotiated version, e.g. `TLSv1.3`.
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    private func outcome(_ result: Int32, during what: String) -> IO {
        let code = SSL_get_error(ssl, result)
        switch code {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            let reasons = TLSLibrary.drainErrors()
            let number = errno
            if reasons.isEmpty && (number == 0 || number == ECONNRESET || number == EPIPE) && handshakeDone { return .closed }
            return .failed(reasons.isEmpty ? "\(what): \(number == 0 ? "the peer closed the connection" : String(cString: strerror(number)))"
                                           : "\(what): \(reasons)")
        default:
            var reason = TLSLibrary.drainErrors()
            let verify = SSL_get_verify_result(ssl)
            if verify != Int(X509_V_OK) {
                reason += (reason.isEmpty ? "" : "; ") + "certificate: " + String(cString: X509_verify_cert_error_string(verify))
            }
            return .failed("\(what) failed: \(reason.isEmpty ? "error \(code)" : reason)")
        }
    }

    private static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}
