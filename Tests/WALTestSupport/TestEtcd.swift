// A real one-member etcd for tests: started on free loopback ports in a temporary directory, checked
// healthy, stopped (SIGKILL), restarted on the same data and ports, paused (SIGSTOP), and removed at the end.
// Any test target may depend on this library (WALEtcdTests does; the failover tests will).
//
// The child is started with posix_spawn and reaped with waitpid, not Foundation's Process, for the
// reason in WaldEndToEndTests/NotifySupport.swift (Foundation's one child-monitor thread can block).
import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
import WALSync
#endif

public enum TestEtcdError: Error, CustomStringConvertible {
    /// No etcd binary: the tests need Debian's etcd-server (`make test-deps` installs it).
    case notInstalled(String)
    /// etcd did not become healthy in time, or exited; the text holds the end of its log.
    case notReady(String)
    case setup(String)

    public var description: String {
        switch self {
        case .notInstalled(let text), .notReady(let text), .setup(let text): return text
        }
    }
}

/// One etcd process (`--name t`, a one-member cluster), on 127.0.0.1 with a client and a peer port.
public final class TestEtcd: Sendable {
    /// `http://127.0.0.1:<clientPort>`, what EtcdClient takes.
    public let clientURL: String
    public let clientPort: Int
    public let peerPort: Int
    /// The temporary directory: etcd's data in `data/`, its output in `etcd.log`. Removed by ``destroy()``.
    public let directory: String
    public let executable: String
    /// The running child's pid, nil while stopped. Reaped under this lock.
    private let child = WALMutex<pid_t?>(nil)

    /// Starts etcd and waits until `/health` answers true (a leader is elected).
    ///
    /// - Throws: ``TestEtcdError/notInstalled(_:)`` if no etcd binary is found (`$WALD_TEST_ETCD`, else
    ///   `etcd` on PATH); ``TestEtcdError/notReady(_:)`` with etcd's log if it is not healthy in `timeout`.
    public static func start(timeout: Duration = .seconds(15)) async throws -> TestEtcd {
        let executable = try findExecutable()
        var lastError: (any Error)?
        // A port picked free can be taken before etcd binds it: try fresh ports a few times.
        for _ in 0..<3 {
            let ports = try freePorts(2)
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("wald-etcd-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let etcd = TestEtcd(executable: executable, clientPort: ports[0], peerPort: ports[1], directory: directory)
            do {
                try await etcd.restart(timeout: timeout)
                return etcd
            } catch {
                lastError = error
                let log = etcd.lastLog
                etcd.destroy()
                if !log.contains("address already in use") { throw error }
            }
        }
        throw lastError ?? TestEtcdError.setup("etcd did not start")
    }

    private init(executable: String, clientPort: Int, peerPort: Int, directory: String) {
        self.executable = executable
        self.clientPort = clientPort
        self.peerPort = peerPort
        self.directory = directory
        clientURL = "http://127.0.0.1:\(clientPort)"
    }

    deinit { destroy() }

    public var logPath: String { directory + "/etcd.log" }
    public var dataDirectory: String { directory + "/data" }
    /// Whether etcd is running (an exited child is reaped here).
    public var isRunning: Bool {
        child.withLock { pid in
            guard let running = pid else { return false }
            var status: Int32 = 0
            let result = waitpid(running, &status, WNOHANG)
            if result == running || (result < 0 && errno == ECHILD) {
                pid = nil
                return false
            }
            return true
        }
    }

    /// The last 4 KiB of etcd's output.
    public var lastLog: String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "(no etcd log)" }
        return String(decoding: data.suffix(4096), as: UTF8.self)
    }

    /// Starts etcd again on the same data directory and ports (after ``kill()``) and waits until healthy.
    /// Also what ``start(timeout:)`` uses for the first start.
    public func restart(timeout: Duration = .seconds(15)) async throws {
        guard !isRunning else { throw TestEtcdError.setup("etcd is already running (pid \(child.withLock { $0 } ?? 0))") }
        let peer = "http://127.0.0.1:\(peerPort)"
        let arguments = [
            "--name", "t", "--data-dir", dataDirectory,
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "t=\(peer)",
            "--log-level", "warn", "--logger", "zap",
        ]
        let pid = try spawn(executable, arguments, output: logPath)
        child.withLock { $0 = pid }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !isRunning {
                throw TestEtcdError.notReady("etcd exited before it was healthy; its log:\n\(lastLog)")
            }
            // The probe blocks (up to 500 ms): on a Dispatch thread, not one of the few cooperative ones.
            let port = clientPort
            let healthy = await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: Self.isHealthy(port: port)) }
            }
            if healthy { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill()
        throw TestEtcdError.notReady("etcd not healthy on \(clientURL) within \(timeout); its log:\n\(lastLog)")
    }

    /// SIGKILLs etcd (if running) and reaps it: the data directory stays, for ``restart(timeout:)``.
    public func kill() {
        child.withLock { pid in
            guard let running = pid else { return }
            Glibc.kill(running, SIGCONT)
            Glibc.kill(running, SIGKILL)
            var status: Int32 = 0
            while waitpid(running, &status, 0) < 0 && errno == EINTR {}
            pid = nil
        }
    }

    /// SIGSTOPs etcd: its sockets stay open but nothing answers (a hung member).
    public func pause() { child.withLock { pid in if let pid { _ = Glibc.kill(pid, SIGSTOP) } } }

    /// SIGCONTs a paused etcd.
    public func resume() { child.withLock { pid in if let pid { _ = Glibc.kill(pid, SIGCONT) } } }

    /// Kills etcd and removes its directory. Called by deinit; safe to call again.
    public func destroy() {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Helpers

    static func findExecutable() throws -> String {
        if let path = ProcessInfo.processInfo.environment["WALD_TEST_ETCD"], !path.isEmpty {
            guard access(path, X_OK) == 0 else { throw TestEtcdError.notInstalled("WALD_TEST_ETCD=\(path) is not executable") }
            return path
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/etcd"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw TestEtcdError.notInstalled(
            "etcd is not installed (no etcd on PATH): these tests need a real etcd 3.4; install Debian's etcd-server "
                + "(`make test-deps` does), or point WALD_TEST_ETCD at an etcd binary")
    }

    /// Distinct ports that are free now, picked at random below Linux's ephemeral range (32768-60999), so
    /// that neither outgoing connections nor `bind(0)` elsewhere take them between a ``kill()`` and a
    /// ``restart(timeout:)``. Each is checked by binding it (then closed; a parallel test may still pick the
    /// same one, which ``start(timeout:)`` survives by trying other ports).
    public static func freePorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts < 1000 else { throw TestEtcdError.setup("no free port in 20000-32767") }
            let port = Int.random(in: 20000...32767)
            if ports.contains(port) { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TestEtcdError.setup("socket: errno \(errno)") }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            if bound { ports.append(port) }
        }
        return ports
    }

    /// `GET /health` answered `"health":"true"` within 500 ms (a plain blocking socket with timeouts).
    static func isHealthy(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 0, tv_usec: 500_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else { return false }
        let request = Array("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return false }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self).contains("\"health\":\"true\"")
    }
}

/// Starts etcd (or anything) with the test process's environment, ETCD* variables removed.
public func spawn(_ executable: String, _ arguments: [String], output: String) throws -> pid_t {
    let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCD") }
    return try spawnChild(executable, arguments, environment: environment, stdout: output)
}

/// A loopback port that refuses connections for as long as this object lives: bound (so no one else,
/// e.g. another test's etcd, can take it) but not listening. A port closed after picking it could be
/// handed to a parallel test's etcd, and then a "dead" endpoint would answer, or hang while paused.
public final class RefusingPort: Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestEtcdError.setup("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw TestEtcdError.setup("bind 127.0.0.1:0: errno \(errno)")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// `http://127.0.0.1:<port>`.
    public var url: String { "http://127.0.0.1:\(port)" }

    deinit { close(fd) }
}
