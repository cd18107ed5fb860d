// Every socket call wald makes, server and client, wrapped once: EINTR retried, EAGAIN a
// value (the server's descriptors are non-blocking), anything else a SystemError naming the
// C function. The server uses the non-blocking half (listen, accept, read, write); the client
// library and walctl the blocking half (connect, sendAll, receive, wait).
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// What a non-blocking read(2) gave.
public enum ReadOutcome: Sendable {
    case bytes(Int)
    case wouldBlock
    case endOfFile
    /// Another errno (ECONNRESET, …).
    case failed(Int32)
}

/// What a non-blocking send(2) gave.
public enum WriteOutcome: Sendable {
    case wrote(Int)
    case wouldBlock
    /// Another errno (EPIPE, ECONNRESET, …).
    case failed(Int32)
}

public enum Sockets {
    private static let streamFlags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

    // MARK: Listening (server)

    /// socket(2), bind(2), listen(2) on `endpoint`: TCP (SO_REUSEADDR, IPV6_V6ONLY for IPv6)
    /// or a unix socket (`listenUnix`). Non-blocking and CLOEXEC. Throws `SystemError`
    /// (getaddrinfo's reason when the host does not resolve; EADDRINUSE for a port in use).
    public static func listen(_ endpoint: Endpoint, backlog: Int32 = 1024) throws(SystemError) -> Int32 {
        let (host, port): (String, UInt16)
        switch endpoint {
        case .unix(let path): return try listenUnix(path, backlog: backlog)
        case .tcp(let h, let p): (host, port) = (h, p)
        }
        let first = try resolve(host: host, port: port, passive: true)
        defer { freeaddrinfo(first) }
        let fd = socket(first.pointee.ai_family, streamFlags | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", path: endpoint.description, errno: errno) }
        setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        if first.pointee.ai_family == AF_INET6 { setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemError("bind", path: endpoint.description, errno: code)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemError("listen", path: endpoint.description, errno: code)
        }
        return fd
    }

    /// Binds and listens on a unix socket path, mode 0660. A stale socket file (nobody accepts
    /// on it: connect(2) is refused) is replaced; one a running server listens on is not
    /// touched, and bind fails with EADDRINUSE (a second wald must not take a running one's
    /// socket away, even when it fails to start after binding).
    public static func listenUnix(_ path: String, backlog: Int32 = 1024) throws(SystemError) -> Int32 {
        var address = try unixAddress(path, operation: "bind")
        let fd = socket(AF_UNIX, streamFlags | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", path: path, errno: errno) }
        var info = stat()
        if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK {
            guard !unixSocketIsLive(address) else {
                Glibc.close(fd)
                throw SystemError("bind", path: path, errno: EADDRINUSE)
            }
            unlink(path)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemError("bind", path: path, errno: code)
        }
        chmod(path, 0o660)
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemError("listen", path: path, errno: code)
        }
        return fd
    }

    /// Whether a server accepts on the unix socket at `address` (a non-blocking connect(2): a
    /// listening socket answers at once, or refuses with EAGAIN when its backlog is full).
    private static func unixSocketIsLive(_ address: sockaddr_un) -> Bool {
        let probe = socket(AF_UNIX, streamFlags | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { Glibc.close(probe) }
        var address = address
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result == 0 { return true }
        // Refused or gone: stale. EAGAIN: listening, backlog full. Anything else: leave it be.
        return errno != ECONNREFUSED && errno != ENOENT
    }

    /// accept(2) one connection, made non-blocking and CLOEXEC (TCP_NODELAY for TCP); nil when
    /// none is pending (or the listener failed). Retries EINTR and ECONNABORTED.
    public static func accept(_ listener: Int32) -> (fd: Int32, peer: String)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(listener, $0, &length) }
            }
            if fd >= 0 {
                // accept4 is not exported by the Glibc module; set the flags right after.
                setNonBlocking(fd)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                if storage.ss_family != sa_family_t(AF_UNIX) { setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
                return (fd, describe(&storage))
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    // MARK: Non-blocking I/O (server)

    /// read(2) once.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> ReadOutcome {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .endOfFile }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    /// send(2) once, MSG_NOSIGNAL (a closed peer is EPIPE, not SIGPIPE); `dontWait` adds
    /// MSG_DONTWAIT for a socket that may be blocking (a journal stream on standard error).
    public static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, dontWait: Bool = false) -> WriteOutcome {
        let flags = Int32(MSG_NOSIGNAL) | (dontWait ? Int32(MSG_DONTWAIT) : 0)
        while true {
            let n = send(fd, bytes.baseAddress, bytes.count, flags)
            if n >= 0 { return .wrote(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    // MARK: Connecting and blocking I/O (client)

    /// TCP keepalive after this long idle, probes this far apart, and this many unanswered
    /// before the kernel resets the connection: a peer that vanished (power lost, a NAT that
    /// forgot the flow) is noticed within about 25 s, even by a follow stream that only waits.
    public static let keepAliveIdleSeconds: Int32 = 10
    public static let keepAliveIntervalSeconds: Int32 = 5
    public static let keepAliveProbes: Int32 = 3

    /// A blocking, CLOEXEC socket connected to `endpoint` (TCP_NODELAY and keepalive for TCP;
    /// every address the name resolves to is tried in turn), within `timeout` when one is given
    /// (a peer that drops SYNs must not hang the caller: ETIMEDOUT). Throws `SystemError`:
    /// `getaddrinfo` with its reason, or the last `connect` errno.
    public static func connect(_ endpoint: Endpoint, timeout: Duration? = nil) throws(SystemError) -> Int32 {
        switch endpoint {
        case .tcp(let host, let port):
            let first = try resolve(host: host, port: port, passive: false)
            defer { freeaddrinfo(first) }
            var lastError: Int32 = 0
            var candidate: UnsafeMutablePointer<addrinfo>? = first
            while let info = candidate {
                let fd = socket(info.pointee.ai_family, streamFlags, 0)
                if fd >= 0 {
                    let outcome = connectSocket(fd, info.pointee.ai_addr, info.pointee.ai_addrlen, timeout: timeout)
                    if outcome == 0 {
                        setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
                        setKeepAlive(fd)
                        return fd
                    }
                    lastError = outcome
                    Glibc.close(fd)
                } else {
                    lastError = errno
                }
                candidate = info.pointee.ai_next
            }
            throw SystemError("connect", path: endpoint.description, errno: lastError)
        case .unix(let path):
            var address = try unixAddress(path, operation: "connect")
            let fd = socket(AF_UNIX, streamFlags, 0)
            guard fd >= 0 else { throw SystemError("socket", path: path, errno: errno) }
            let length = socklen_t(MemoryLayout<sockaddr_un>.size)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connectSocket(fd, $0, length, timeout: timeout) }
            }
            guard result == 0 else {
                Glibc.close(fd)
                throw SystemError("connect", path: endpoint.description, errno: result)
            }
            return fd
        }
    }

    /// send(2) until all of `bytes` is out (blocking socket); false when the connection is gone.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
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

    /// recv(2), blocking: the byte count, 0 at end of stream, -1 on error (then
    /// `lastReceiveTimedOut` says whether SO_RCVTIMEO ran out).
    public static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            return n
        }
    }

    /// Whether the last failed `receive` on this thread ran into the receive timeout.
    public static var lastReceiveTimedOut: Bool { errno == EAGAIN || errno == EWOULDBLOCK }

    /// poll(2) one descriptor for `events` (POLLIN, POLLOUT), retrying EINTR: 1 ready (or hung
    /// up), 0 when `timeout` passed (nil: wait for ever), -1 failed.
    public static func wait(_ fd: Int32, events: Int16, for timeout: Duration?) -> Int32 {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            var millis: Int32 = -1
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero { return 0 }
                millis = milliseconds(left)
            }
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&pfd, 1, millis)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 && deadline != nil { continue }
            return ready < 0 ? -1 : 1
        }
    }

    // MARK: Options

    /// fcntl(2) O_NONBLOCK on (an inherited, socket-activated listener; a follower's stream).
    public static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// fcntl(2) O_NONBLOCK off (for a short, final reply).
    public static func setBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
    }

    /// setsockopt(2) SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT.
    public static func setKeepAlive(_ fd: Int32) {
        setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1)
        setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, keepAliveIdleSeconds)
        setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, keepAliveIntervalSeconds)
        setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, keepAliveProbes)
    }

    /// setsockopt(2) SO_RCVTIMEO: a blocking recv fails with EAGAIN after `interval` without
    /// data (`.zero`: never).
    public static func setReceiveTimeout(_ fd: Int32, _ interval: Duration) {
        let micros = interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000
        var value = timeval(tv_sec: Int(micros / 1_000_000), tv_usec: Int(micros % 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// shutdown(2) both directions: wakes a thread blocked in recv on this socket.
    public static func shutdownBoth(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// close(2), not retried (on Linux the descriptor is gone even after EINTR).
    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// getsockname(2) as text: the port the kernel chose for port 0, `unix:/path`.
    public static func localAddress(_ fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return describe(&storage)
    }

    // MARK: Helpers

    private static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var value = value
        setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// getaddrinfo(3) for a stream socket; the caller frees the list.
    private static func resolve(host: String, port: UInt16, passive: Bool) throws(SystemError) -> UnsafeMutablePointer<addrinfo> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE | AI_NUMERICSERV : AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            let code = status == EAI_SYSTEM ? errno : EINVAL
            let reason = status == EAI_SYSTEM ? SystemError.describe(errno: code) : String(cString: gai_strerror(status))
            throw SystemError("getaddrinfo", path: host, errno: code, resolveFailure: reason)
        }
        return first
    }

    private static func unixAddress(_ path: String, operation: String) throws(SystemError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemError(operation, path: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return address
    }

    /// connect(2), bounded by `timeout`: non-blocking connect, poll for writability, SO_ERROR.
    /// Returns 0 or the errno (ETIMEDOUT when the time ran out).
    private static func connectSocket(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t,
                                      timeout: Duration?) -> Int32 {
        guard let timeout else {
            if Glibc.connect(fd, address, length) == 0 { return 0 }
            // After EINTR the connection goes on in the background: wait for it like EINPROGRESS.
            return errno == EINTR ? finishConnect(fd, deadline: nil) : errno
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        if Glibc.connect(fd, address, length) == 0 { return 0 }
        guard errno == EINPROGRESS || errno == EINTR else { return errno }
        return finishConnect(fd, deadline: ContinuousClock.now + timeout)
    }

    /// Waits for a connect in progress; its result from SO_ERROR.
    private static func finishConnect(_ fd: Int32, deadline: ContinuousClock.Instant?) -> Int32 {
        let ready = wait(fd, events: Int16(POLLOUT), for: deadline.map { $0 - ContinuousClock.now })
        if ready == 0 { return ETIMEDOUT }
        if ready < 0 { return errno }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else { return errno }
        return error
    }

    /// A positive duration in whole milliseconds, rounded up, for poll(2).
    private static func milliseconds(_ duration: Duration) -> Int32 {
        Int32(clamping: duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000 + 1)
    }

    /// inet_ntop(3) of an `in_addr` or `in6_addr`.
    private static func numericHost<Address>(_ family: Int32, _ address: Address, length: Int32) -> String {
        var text = [CChar](repeating: 0, count: Int(length))
        withUnsafeBytes(of: address) { _ = inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func describe(_ storage: inout sockaddr_storage) -> String {
        switch Int32(storage.ss_family) {
        case AF_INET:
            let (address, port) = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ($0.pointee.sin_addr, $0.pointee.sin_port) }
            }
            return "\(numericHost(AF_INET, address, length: INET_ADDRSTRLEN)):\(UInt16(bigEndian: port))"
        case AF_INET6:
            let (address, port) = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { ($0.pointee.sin6_addr, $0.pointee.sin6_port) }
            }
            return "[\(numericHost(AF_INET6, address, length: INET6_ADDRSTRLEN))]:\(UInt16(bigEndian: port))"
        case AF_UNIX:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { address in
                    withUnsafeBytes(of: address.pointee.sun_path) { raw in
                        let text = String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                        return text.isEmpty ? "unix" : "unix:" + text
                    }
                }
            }
        default:
            return "unknown"
        }
    }
}
