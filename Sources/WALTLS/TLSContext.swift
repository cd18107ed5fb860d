// The only place that configures OpenSSL: a TLSContext is one SSL_CTX (certificate, key, trusted
// CAs, client-certificate policy, TLS 1.2 minimum) from which every connection's TLSSession is
// made. Server and client (WALServer's listeners, WALClient, a follower's upstream stream) share
// it. A context is immutable once made; a certificate reload makes a new one, and sessions made
// from the old one keep it alive (OpenSSL counts references), so live connections are not
// disturbed.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// What a server asks of its clients' certificates.
public enum TLSClientAuth: String, Sendable, CaseIterable {
    /// No client certificate is asked for.
    case none
    /// A client certificate is asked for and, if sent, must verify against the CA file.
    case request
    /// A client certificate that verifies against the CA file is required.
    case require
}

/// Why a TLS context or session could not be set up, or a handshake failed. The message names
/// the file and OpenSSL's reason.
public struct TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    /// `what`, then OpenSSL's queued reasons (the queue is emptied).
    static func openSSL(_ what: String) -> TLSError {
        let reasons = TLSLibrary.drainErrors()
        return TLSError(reasons.isEmpty ? what : "\(what): \(reasons)")
    }
}

enum TLSLibrary {
    /// OpenSSL's per-thread error queue as one line, emptied.
    static func drainErrors() -> String {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var text = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &text, text.count)
            let line = String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if reasons.count < 4 { reasons.append(line) }
        }
        return reasons.joined(separator: "; ")
    }

    /// The OpenSSL version this process runs with, e.g. `OpenSSL 3.0.19 27 Jan 2026`.
    static var version: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }
}

public final class TLSContext: @unchecked Sendable {
    // @unchecked Sendable: the SSL_CTX is configured completely in init and only read
    // afterwards (SSL_new), which OpenSSL allows from any thread.
    let context: OpaquePointer
    public let isServer: Bool
    /// Client contexts: whether the peer's name is checked (a CA was given or the system's is used).
    let verifiesPeer: Bool

    /// The linked OpenSSL's version line.
    public static var libraryVersion: String { TLSLibrary.version }

    /// A server context: `certificateFile` (PEM, the chain after the leaf) and its `keyFile`
    /// (PEM); `caFile` holds the CAs client certificates must chain to (needed for
    /// `request`/`require`). Throws `TLSError` naming the file and the reason: unreadable,
    /// not PEM, the key not matching the certificate.
    public init(serverCertificateFile certificateFile: String, keyFile: String, caFile: String?,
                clientAuth: TLSClientAuth) throws(TLSError) {
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_server_method()) else { throw .openSSL("cannot create a TLS context") }
        self.context = context
        isServer = true
        verifiesPeer = clientAuth != .none
        try configureCommon()
        try loadCertificate(certificateFile, key: keyFile)
        if clientAuth != .none {
            guard let caFile else {
                throw TLSError("tls_client_auth \(clientAuth.rawValue) needs tls_ca_file: the CAs client certificates must chain to")
            }
            try loadCAs(caFile)
            // The CA names sent in the CertificateRequest, so a client picks the right certificate.
            if let names = SSL_load_client_CA_file(caFile) { SSL_CTX_set_client_CA_list(context, names) }
            ERR_clear_error()
        } else if let caFile {
            try loadCAs(caFile)
        }
        let mode = clientAuth == .require ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
            : clientAuth == .request ? SSL_VERIFY_PEER : SSL_VERIFY_NONE
        SSL_CTX_set_verify(context, mode, nil)
        // Session resumption with client verification needs an id context (else resumption fails).
        let id = Array("wald".utf8)
        _ = SSL_CTX_set_session_id_context(context, id, UInt32(id.count))
    }

    /// A client context: verifies the server against `caFile` (PEM) or, without one, the
    /// system's CAs; presents `certificateFile`/`keyFile` when given (mutual TLS).
    public init(clientCAFile caFile: String?, certificateFile: String?, keyFile: String?) throws(TLSError) {
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_client_method()) else { throw .openSSL("cannot create a TLS context") }
        self.context = context
        isServer = false
        verifiesPeer = true
        try configureCommon()
        if let caFile {
            try loadCAs(caFile)
        } else if SSL_CTX_set_default_verify_paths(context) != 1 {
            throw .openSSL("cannot load the system's CA certificates")
        }
        switch (certificateFile, keyFile) {
        case (let certificate?, let key?): try loadCertificate(certificate, key: key)
        case (nil, nil): break
        case (nil, _?): throw TLSError("a TLS key file was given without a certificate file")
        case (_?, nil): throw TLSError("a TLS certificate file was given without a key file")
        }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
    }

    deinit { SSL_CTX_free(context) }

    private func configureCommon() throws(TLSError) {
        // OpenSSL's socket BIO writes with write(2), not send(MSG_NOSIGNAL): a peer that has
        // closed would raise SIGPIPE and kill the process. Ignored process-wide, as Redis does.
        signal(SIGPIPE, SIG_IGN)
        guard wald_ssl_ctx_set_min_tls12(context) == 1 else { throw .openSSL("cannot set TLS 1.2 as the minimum version") }
        wald_ssl_ctx_set_modes(context)
        wald_ssl_ctx_set_options(context)
    }

    private func loadCertificate(_ certificateFile: String, key keyFile: String) throws(TLSError) {
        try Self.checkReadable(certificateFile, what: "certificate")
        try Self.checkReadable(keyFile, what: "key")
        guard SSL_CTX_use_certificate_chain_file(context, certificateFile) == 1 else {
            throw .openSSL("cannot load the TLS certificate \(certificateFile) (expected PEM)")
        }
        guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1 else {
            let reasons = TLSLibrary.drainErrors()
            // OpenSSL checks the pair while loading the key: a valid key of another certificate.
            if reasons.contains("key values mismatch") {
                throw TLSError("the TLS key \(keyFile) does not match the certificate \(certificateFile): \(reasons)")
            }
            throw TLSError("cannot load the TLS key \(keyFile) (expected an unencrypted PEM key): \(reasons)")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw .openSSL("the TLS key \(keyFile) does not match the certificate \(certificateFile)")
        }
    }

    private func loadCAs(_ caFile: String) throws(TLSError) {
        try Self.checkReadable(caFile, what: "CA file")
        guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
            throw .openSSL("cannot load the TLS CA file \(caFile) (expected PEM certificates)")
        }
    }

    /// OpenSSL's message for a missing file is "system lib": say what the operator can act on.
    private static func checkReadable(_ path: String, what: String) throws(TLSError) {
        guard let file = fopen(path, "r") else {
            let reason = String(cString: strerror(errno))
            throw TLSError("cannot read the TLS \(what) \(path): \(reason)")
        }
        fclose(file)
    }
}
