// The client's socket calls: connect over TCP or a unix socket, blocking send and recv.
// The client is a library for tools and tests, so one reader thread per connection is fine.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import WALProtocol
import WALTLS

/// Where a wald server listens.
public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// wald's port when an address names none.
    public static let defaultPort: UInt16 = 7070

    /// Parses `HOST:PORT` (IPv6 as `[::1]:7070`) or `unix:/path`. With a `defaultPort`, `HOST`,
    /// `[::1]` and a bare IPv6 address (`::1`) mean that port.
    public init?(parsing text: String, defaultPort: UInt16? = nil) {
        if text.hasPrefix("unix:") {
            self = .unix(path: String(text.dropFirst(5)))
            return
        }
        let host: Substring
        let port: Substring?
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || rest.first == ":" else { return nil }
            port = rest.isEmpty ? nil : rest.dropFirst()
        } else if text.filter({ $0 == ":" }).count > 1 {
            host = text[...]  // an IPv6 address without brackets cannot carry a port
            port = nil
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            host = text[...]
            port = nil
        }
        guard !host.isEmpty else { return nil }
        if let port {
            guard let number = UInt16(port), number > 0 else { return nil }
            self = .tcp(host: String(host), port: number)
        } else {
            guard let defaultPort else { return nil }
            self = .tcp(host: String(host), port: defaultPort)
        }
    }

    /// The host a TLS client checks the server's certificate against (nil for a unix socket).
    public var host: String? {
        if case .tcp(let host, _) = self { return host }
        return nil
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

package enum ClientSocket {
    /// TCP keepalive after this long idle, probes this far apart, and this many unanswered
    /// before the kernel resets the connection: a peer that vanished (power lost, a NAT that
    /// forgot the flow) is noticed within about 25 s, even by a follow stream that only waits.
    static let keepAliveIdleSeconds: Int32 = 10
    static let keepAliveIntervalSeconds: Int32 = 5
    static let keepAliveProbes: Int32 = 3

    /// setsockopt(2) SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT.
    static func setKeepAlive(_ fd: Int32) {
        let size = socklen_t(MemoryLayout<Int32>.size)
        var value: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &value, size)
        value = keepAliveIdleSeconds
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &value, size)
        value = keepAliveIntervalSeconds
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &value, size)
        value = keepAliveProbes
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &value, size)
    }

    /// Connects, within `timeout` when one is given (a peer that drops SYNs must not hang us).
    package static func connect(_ endpoint: Endpoint, timeout: Duration? = nil) throws(WALClientError) -> Int32 {
        switch endpoint {
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &result)
            guard status == 0, let first = result else {
                let reason = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
                throw .connectionFailed("cannot resolve \(host): \(reason)")
            }
            defer { freeaddrinfo(result) }
            var lastError: Int32 = 0
            var candidate: UnsafeMutablePointer<addrinfo>? = first
            while let info = candidate {
                let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                if fd >= 0 {
                    let outcome = connectSocket(fd, info.pointee.ai_addr, info.pointee.ai_addrlen, timeout: timeout)
                    if outcome == 0 {
                        var one: Int32 = 1
                        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                        setKeepAlive(fd)
                        return fd
                    }
                    lastError = outcome
                    Glibc.close(fd)
                }
                candidate = info.pointee.ai_next
            }
            if lastError == ETIMEDOUT, let timeout {
                throw .timedOut("could not connect to \(endpoint) within \(WALClient.seconds(timeout)) s")
            }
            throw .connectionFailed("connect to \(endpoint): \(String(cString: strerror(lastError)))")
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .connectionFailed("path too long: \(path)") }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .connectionFailed("socket: \(String(cString: strerror(errno)))") }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard result == 0 else {
                let code = errno
                Glibc.close(fd)
                throw .connectionFailed("connect to \(endpoint): \(String(cString: strerror(code)))")
            }
            return fd
        }
    }

    /// Sends all bytes; false when the connection is gone.
    package static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            sent += n
        }
        return true
    }

    /// Blocking read; 0 at end of stream, -1 on error.
    package static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            return n
        }
    }

    /// connect(2), bounded by `timeout`: non-blocking connect, poll for writability, SO_ERROR.
    /// Returns 0 or the errno (ETIMEDOUT when the time ran out).
    private static func connectSocket(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t,
                                      timeout: Duration?) -> Int32 {
        guard let timeout else { return Glibc.connect(fd, address, length) == 0 ? 0 : errno }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        if Glibc.connect(fd, address, length) == 0 { return 0 }
        guard errno == EINPROGRESS else { return errno }
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return ETIMEDOUT }
            let millis = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&pfd, 1, millis)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { return errno }
            if ready == 0 { continue }
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else { return errno }
            return error
        }
    }

    /// A blocking recv returns -1 with EAGAIN after `interval` without data.
    static func setReceiveTimeout(_ fd: Int32, _ interval: Duration) {
        let micros = interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000
        var value = timeval(tv_sec: Int(micros / 1_000_000), tv_usec: Int(micros % 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Whether the last failed `receive` ran into the receive timeout.
    static var timedOut: Bool { errno == EAGAIN || errno == EWOULDBLOCK }

    static func shutdownBoth(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    package static func close(_ fd: Int32) { _ = Glibc.close(fd) }
}

extension WALClient {
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
            ClientSocket.close(fd)
            throw WALClientError.connectionClosed
        }
        var input: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            do {
                if let (reply, _) = try BinaryCodec.nextFrame(in: input[...]) {
                    let response = try BinaryCodec.decodeResponse(reply)
                    if case .ok = response { return (fd, channel.tls) }
                    ClientSocket.close(fd)
                    if case .error(let code, let message) = response { throw WALClientError.server(code: code, message: message) }
                    throw WALClientError.protocolViolation("unexpected reply to AUTH: \(response)")
                }
            } catch let error as ProtocolError {
                ClientSocket.close(fd)
                throw WALClientError.protocolViolation(error.description)
            }
            let n = chunk.withUnsafeMutableBytes { channel.receive(into: $0) }
            guard n > 0 else {
                ClientSocket.close(fd)
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
