// A connected, authenticated socket for a caller that speaks the protocol itself (a
// follower's stream), and the client's one way to open a socket: WALSystem's `Sockets.connect`
// with its SystemError told as the client's errors.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
@_exported import WALSystem
import WALProtocol
import WALTLS

extension WALClient {
    /// connect(2) to `endpoint` within `timeout` (nil: the kernel's own limit). Throws
    /// `.connectionFailed` (a name that does not resolve, a refused or unreachable address)
    /// or `.timedOut` (no answer within `timeout`).
    package static func openSocket(_ endpoint: Endpoint, timeout: Duration?) throws(WALClientError) -> Int32 {
        do {
            return try Sockets.connect(endpoint, timeout: timeout)
        } catch {
            if let reason = error.resolveFailure, let host = endpoint.host {
                throw .connectionFailed("cannot resolve \(host): \(reason)")
            }
            if error.isTimeout, let timeout {
                throw .timedOut("could not connect to \(endpoint) within \(WALClient.seconds(timeout)) s")
            }
            throw .connectionFailed("connect to \(endpoint): \(SystemError.describe(errno: error.errno))")
        }
    }

    /// A connected socket, authenticated with `token` when given, for a caller that speaks
    /// the protocol itself (a follower's stream, driven by the server's event loop). Blocking,
    /// with a 10 s limit on the TLS handshake and the AUTH reply; the caller owns (and closes)
    /// the descriptor, and owns the TLS session (handshake done) when `tls` is given: from then
    /// on only one thread at a time may use it. Throws `WALClientError` (`.server` for a
    /// refused token).
    public static func connectStream(_ endpoint: Endpoint, token: String?, tls: ClientTLS? = nil) throws -> (fd: Int32, tls: TLSSession?) {
        let channel = try ClientChannel.connect(endpoint, timeout: tls == nil ? nil : .seconds(10), tls: tls)
        let fd = channel.fd
        guard let token else { return (fd, channel.tls) }
        var frame: [UInt8] = []
        BinaryCodec.encode(Request.auth(token: ArraySlice(token.utf8)), into: &frame)
        channel.setReceiveTimeout(.seconds(10))
        defer { if channel.tls == nil { channel.setReceiveTimeout(.zero) } }
        guard channel.sendAll(frame) else {
            Sockets.close(fd)
            throw WALClientError.connectionClosed
        }
        var input: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            do {
                if let (reply, _) = try BinaryCodec.nextFrame(in: input[...]) {
                    let response = try BinaryCodec.decodeResponse(reply)
                    if case .ok = response { return (fd, channel.tls) }
                    Sockets.close(fd)
                    if case .error(let code, let message) = response { throw WALClientError.server(code: code, message: message) }
                    throw WALClientError.protocolViolation("unexpected reply to AUTH: \(response)")
                }
            } catch let error as ProtocolError {
                Sockets.close(fd)
                throw WALClientError.protocolViolation(error.description)
            }
            let n = chunk.withUnsafeMutableBytes { channel.receive(into: $0) }
            guard n > 0 else {
                Sockets.close(fd)
                throw WALClientError.connectionClosed
            }
            input.append(contentsOf: chunk[0..<n])
        }
    }

    /// `connectStream` without TLS: the connected, authenticated descriptor.
    public static func connectSocket(_ endpoint: Endpoint, token: String?) throws -> Int32 {
        try connectStream(endpoint, token: token).fd
    }
}
