// Every socket syscall the server makes, wrapped once: EINTR is retried, EAGAIN becomes
// a value, and other errno values become SocketError carrying the call's name.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

public struct SocketError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let target: String
    public let errno: Int32
    /// getaddrinfo's own reason (gai_strerror), when the name could not be resolved.
    public var resolveFailure: String?

    public var description: String {
        if let resolveFailure { return "cannot resolve \(target): \(resolveFailure)" }
        return "\(operation)(\(target)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// An address to listen on or connect to: `127.0.0.1:7070`, `[::1]:7070`, `localhost:7070`.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`, with IPv6 hosts in brackets.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = UInt16(portText) else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

enum ReadOutcome {
    case bytes(Int)
    case wouldBlock
    case endOfFile
    case failed(Int32)
}

enum WriteOutcome {
    case wrote(Int)
    case wouldBlock
    case failed(Int32)
}

enum SocketCalls {
    /// Binds and listens on a TCP address (non-blocking, SO_REUSEADDR, CLOEXEC).
    static func listenTCP(_ address: SocketAddress, backlog: Int32 = 1024) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(address.host, String(address.port), &hints, &result)
        guard status == 0, let first = result else {
            let code = status == EAI_SYSTEM ? errno : EINVAL
            let reason = status == EAI_SYSTEM ? String(cString: strerror(code)) : String(cString: gai_strerror(status))
            throw SocketError(operation: "getaddrinfo", target: address.host, errno: code, resolveFailure: reason)
        }
        defer { freeaddrinfo(result) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "socket", target: address.description, errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if first.pointee.ai_family == AF_INET6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError(operation: "bind", target: address.description, errno: code)
        }
        guard listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError(operation: "listen", target: address.description, errno: code)
        }
        return fd
    }

    /// Binds and listens on a unix socket path, mode 0660. A stale socket file (nobody accepts
    /// on it: connect(2) is refused) is replaced; one a running server listens on is not
    /// touched, and bind fails with EADDRINUSE (a second wald must not take a running one's
    /// socket away, even when it fails to start after binding).
    static func listenUnix(_ path: String, backlog: Int32 = 1024) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SocketError(operation: "bind", target: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "socket", target: path, errno: errno) }
        var info = stat()
        if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK {
            guard !unixSocketIsLive(address) else {
                Glibc.close(fd)
                throw SocketError(operation: "bind", target: path, errno: EADDRINUSE)
            }
            unlink(path)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError(operation: "bind", target: path, errno: code)
        }
        chmod(path, 0o660)
        guard listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError(operation: "listen", target: path, errno: code)
        }
        return fd
    }

    /// Whether a server accepts on the unix socket at `address` (a blocking connect(2); a
    /// listening socket answers at once, even with a full backlog it refuses with EAGAIN).
    private static func unixSocketIsLive(_ address: sockaddr_un) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { Glibc.close(probe) }
        var address = address
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result == 0 { return true }
        // Refused or gone: stale. EAGAIN: listening, backlog full. Anything else: leave it be.
        return errno != ECONNREFUSED && errno != ENOENT
    }

    /// Makes an inherited (socket-activated) listener non-blocking.
    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Makes a socket blocking again (for a short, final reply).
    static func setBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
    }

    /// Accepts one connection, non-blocking and CLOEXEC; nil when none is pending.
    static func accept(_ listener: Int32) -> (fd: Int32, peer: String)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.accept(listener, $0, &length)
                }
            }
            if fd >= 0 {
                // accept4 is not exported by the Glibc module; set the flags right after.
                setNonBlocking(fd)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                var one: Int32 = 1
                if storage.ss_family != sa_family_t(AF_UNIX) {
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                }
                return (fd, describe(&storage))
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> ReadOutcome {
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

    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        while true {
            let n = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .wrote(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// The local address of a listening socket, e.g. to learn the port chosen for port 0.
    static func localAddress(_ fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return describe(&storage)
    }

    private static func describe(_ storage: inout sockaddr_storage) -> String {
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    var raw = address.pointee.sin_addr
                    inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
                    return "\(String(cString: text)):\(UInt16(bigEndian: address.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    var raw = address.pointee.sin6_addr
                    inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
                    return "[\(String(cString: text))]:\(UInt16(bigEndian: address.pointee.sin6_port))"
                }
            }
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
