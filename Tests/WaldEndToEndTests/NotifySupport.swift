// What the systemd notification tests need, without systemd: a NOTIFY_SOCKET (an AF_UNIX
// datagram socket in a scratch directory) whose datagrams are recorded with their arrival time
// and sender pid (SO_PASSCRED) on a background thread, and a way to start the real wald with
// any environment, stdout and stderr in files, directly or behind a launcher (`sh` for
// WATCHDOG_PID, `systemd-socket-activate`).
import Foundation
import WALTestSupport
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
import WALSync
#endif

/// One datagram received on NOTIFY_SOCKET.
struct NotifyMessage: Sendable, CustomStringConvertible {
    let index: Int
    let time: ContinuousClock.Instant
    let text: String
    let pid: Int32?

    /// The value of `KEY=` in this datagram (one assignment per line), or nil.
    func value(_ key: String) -> String? {
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) where line.hasPrefix(key + "=") {
            return String(line.dropFirst(key.count + 1))
        }
        return nil
    }

    var description: String { "#\(index) pid \(pid.map(String.init) ?? "?"): \(text.replacingOccurrences(of: "\n", with: " | "))" }
}

enum NotifyTestError: Error, CustomStringConvertible {
    case setup(String)
    case timeout(String)
    var description: String {
        switch self {
        case .setup(let text): "setup failed: \(text)"
        case .timeout(let text): "timed out: \(text)"
        }
    }
}

/// The service manager's end of NOTIFY_SOCKET.
final class NotifySocket: Sendable {
    let path: String
    private let fd: Int32
    private let received = WALMutex<[NotifyMessage]>([])
    private let stopping = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw NotifyTestError.setup("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw NotifyTestError.setup("path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw NotifyTestError.setup("bind \(path): errno \(code)")
        }
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size))
        let thread = Thread { [self] in receiveLoop() }
        thread.name = "notify-socket"
        thread.start()
    }

    private func receiveLoop() {
        defer { finished.store(true, ordering: .releasing) }
        var data = [UInt8](repeating: 0, count: 65536)
        var control = [UInt8](repeating: 0, count: 512)
        while !stopping.load(ordering: .relaxed) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            var pid: Int32?
            let count: Int = data.withUnsafeMutableBytes { dataBytes in
                control.withUnsafeMutableBytes { controlBytes in
                    var iov = iovec(iov_base: dataBytes.baseAddress, iov_len: dataBytes.count)
                    return withUnsafeMutablePointer(to: &iov) { iovPointer in
                        var message = msghdr()
                        message.msg_iov = iovPointer
                        message.msg_iovlen = 1
                        message.msg_control = controlBytes.baseAddress
                        message.msg_controllen = controlBytes.count
                        let n = recvmsg(fd, &message, Int32(MSG_DONTWAIT))
                        if n >= 0 { pid = Self.senderPID(UnsafeRawBufferPointer(rebasing: controlBytes[0..<Int(message.msg_controllen)])) }
                        return n
                    }
                }
            }
            guard count >= 0 else { continue }
            let now = ContinuousClock.now
            let text = String(decoding: data[0..<count], as: UTF8.self)
            received.withLock { $0.append(NotifyMessage(index: $0.count, time: now, text: text, pid: pid)) }
        }
    }

    /// The pid in an SCM_CREDENTIALS control message (struct cmsghdr on 64-bit Linux: a size_t
    /// length, level and type as Int32, then struct ucred { pid, uid, gid }).
    private static func senderPID(_ control: UnsafeRawBufferPointer) -> Int32? {
        let scmCredentials: Int32 = 2  // SCM_CREDENTIALS
        var offset = 0
        while offset + 16 <= control.count {
            let length = Int(control.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            let level = control.loadUnaligned(fromByteOffset: offset + 8, as: Int32.self)
            let type = control.loadUnaligned(fromByteOffset: offset + 12, as: Int32.self)
            if length < 16 { return nil }
            if level == SOL_SOCKET && type == scmCredentials && offset + 20 <= control.count {
                return control.loadUnaligned(fromByteOffset: offset + 16, as: Int32.self)
            }
            offset += (length + 7) & ~7
        }
        return nil
    }

    var messages: [NotifyMessage] { received.withLock { $0 } }
    var count: Int { received.withLock { $0.count } }

    /// The first message with an index ≥ `from` that matches, waiting up to `timeout`.
    func wait(from: Int = 0, timeout: Duration = .seconds(30),
              _ predicate: (NotifyMessage) -> Bool) async -> NotifyMessage? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let found = messages.first(where: { $0.index >= from && predicate($0) }) { return found }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Like `wait`, but a missing message fails the test, showing what did arrive.
    func require(_ what: String, from: Int = 0, timeout: Duration = .seconds(30),
                 sourceLocation: SourceLocation = #_sourceLocation,
                 _ predicate: (NotifyMessage) -> Bool) async throws -> NotifyMessage {
        if let found = await wait(from: from, timeout: timeout, predicate) { return found }
        Issue.record("no \(what) within \(timeout); received:\n\(dump())", sourceLocation: sourceLocation)
        throw NotifyTestError.timeout(what)
    }

    func dump(from: Int = 0) -> String {
        messages.filter { $0.index >= from }.map(\.description).joined(separator: "\n")
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        while !finished.load(ordering: .acquiring) { usleep(5_000) }
        close(fd)
        unlink(path)
    }
}

/// How wald is started.
enum WaldLauncher {
    /// The wald binary itself.
    case direct
    /// `sh -c 'export WATCHDOG_PID=$$; exec "$@"' sh wald …`: WATCHDOG_PID is wald's own pid.
    case watchdogPIDIsSelf
    /// `systemd-socket-activate <arguments> wald …` (it execs wald at the first connection).
    case socketActivate([String])
}

/// A wald process (possibly behind a launcher that execs it, so the pid is wald's), started with
/// posix_spawn and reaped with waitpid: not Foundation's Process. systemd-socket-activate closes
/// every inherited descriptor, Foundation's among them, and Foundation's one child-monitor thread
/// then blocked in waitpid on it until it exited; meanwhile no other Process in the test run was
/// reaped, the cooperative threads blocked in their waitUntilExit, and the test that would have
/// killed it never ran again (a whole `make test` hung). Same fix as SystemdUnitTests' SpawnedProcess.
final class NotifiedWald: @unchecked Sendable {
    // @unchecked: used only from the test that owns it (the exit status is cached under a lock).
    let pid: pid_t
    let dataDirectory: String
    let stdoutPath: String
    let stderrPath: String
    private let exit = WALMutex<Int32?>(nil)

    init(launcher: WaldLauncher, arguments: [String], environment: [String: String],
         dataDirectory: String, stdoutPath: String, stderrPath: String) throws {
        self.dataDirectory = dataDirectory
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        let wald = buildProductsDirectory().appendingPathComponent("wald").path
        let executable: String
        let argv: [String]
        switch launcher {
        case .direct:
            (executable, argv) = (wald, arguments)
        case .watchdogPIDIsSelf:
            (executable, argv) = ("/bin/sh", ["-c", "export WATCHDOG_PID=$$; exec \"$@\"", "sh", wald] + arguments)
        case .socketActivate(let activation):
            (executable, argv) = ("/usr/bin/systemd-socket-activate", activation + [wald] + arguments)
        }
        // Nothing of the test runner's own service environment leaks in.
        let inherited = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                         "JOURNAL_STREAM", "INVOCATION_ID"]
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") && !inherited.contains($0.key) }
        env.merge(environment) { $1 }

        // posix_spawn, not Process (see WALTestSupport/Spawn.swift).
        let child = try spawnChild(executable, argv, environment: env, stdout: stdoutPath, stderr: stderrPath)
        pid = child
    }

    /// Reaps the child when it has exited (waitpid WNOHANG), keeping its status.
    var isRunning: Bool {
        exit.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            if result == pid { status = raw } else if result < 0 && errno == ECHILD { status = 0 }
            return status == nil
        }
    }

    /// Blocks until the child has exited (callers signal it first or know it is ending).
    private func waitUntilExit() {
        while isRunning { usleep(2_000) }
    }

    /// (exited normally, exit status or terminating signal) once it has exited.
    private var exitStatus: (exited: Bool, status: Int32) {
        let raw = exit.withLock { $0 } ?? 0
        let signal = raw & 0x7F
        return signal == 0 ? (true, (raw >> 8) & 0xFF) : (false, signal)
    }

    var stdoutText: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderrText: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The words after "ready" on wald's `ready <address> …` line, if it has printed it.
    var readyAddresses: [String]? {
        for line in stdoutText.split(separator: "\n") where line.hasPrefix("ready ") {
            return line.dropFirst(6).split(separator: " ").map(String.init)
        }
        return nil
    }

    /// Waits for the ready line; fails (with stderr) when wald exits or the time runs out.
    func waitForReady(timeout: Duration = .seconds(30)) async throws -> [String] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let addresses = readyAddresses { return addresses }
            if !isRunning { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        if let addresses = readyAddresses { return addresses }
        throw NotifyTestError.timeout("wald printed no ready line; stdout:\n\(stdoutText)\nstderr:\n\(stderrText)")
    }

    /// The first TCP address on the ready line, as a port.
    func tcpPort(_ addresses: [String]) throws -> UInt16 {
        guard let first = addresses.first(where: { $0.hasPrefix("127.0.0.1:") }),
              let port = UInt16(first.split(separator: ":").last ?? "") else {
            throw NotifyTestError.setup("no 127.0.0.1 address in \(addresses)")
        }
        return port
    }

    func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Waits for exit; (exited normally, status) or nil if still running after `timeout`.
    func waitForExit(timeout: Duration = .seconds(30)) async -> (exited: Bool, status: Int32)? {
        let deadline = ContinuousClock.now + timeout
        while isRunning {
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return exitStatus
    }

    /// SIGKILL (by pid) if still running, and reap.
    func kill9() {
        if isRunning {
            kill(pid, SIGKILL)
            waitUntilExit()
        }
    }
}

/// One test's world: a scratch directory holding NOTIFY_SOCKET, data directories, output
/// files, config and fault files; every process started through it is killed at cleanup.
final class NotifyHarness: @unchecked Sendable {
    // @unchecked: used only from the test that owns it.
    let directory: String
    let notifications: NotifySocket
    private var started: [NotifiedWald] = []

    init() throws {
        var template = Array("/tmp/wald-notify-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw NotifyTestError.setup("mkdtemp: errno \(errno)")
        }
        directory = String(cString: made)
        do {
            notifications = try NotifySocket(path: directory + "/notify")
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Starts wald with NOTIFY_SOCKET (unless `notify` is false), a data directory in the
    /// scratch directory, and `--flush-interval 5ms --max-segment-bytes 1MiB`.
    func start(_ arguments: [String] = ["--listen", "127.0.0.1:0"], environment: [String: String] = [:],
               launcher: WaldLauncher = .direct, notify: Bool = true, dataDirectory: String? = nil,
               logLevel: String? = "info", stderrPath: String? = nil) throws -> NotifiedWald {
        let name = "wald\(started.count)"
        let data = dataDirectory ?? path(name + ".data")
        var args = ["--data-dir", data, "--flush-interval", "5ms", "--max-segment-bytes", "1MiB"]
        if let logLevel { args += ["--log-level", logLevel] }
        var env = environment
        if notify { env["NOTIFY_SOCKET"] = notifications.path }
        let wald = try NotifiedWald(launcher: launcher, arguments: args + arguments, environment: env, dataDirectory: data,
                                    stdoutPath: path(name + ".stdout"), stderrPath: stderrPath ?? path(name + ".stderr"))
        started.append(wald)
        return wald
    }

    /// Writes `text` to `path` atomically (a reader sees the old or the new content).
    func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    func cleanup() {
        for wald in started { wald.kill9() }
        notifications.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// CLOCK_MONOTONIC in microseconds (the clock of MONOTONIC_USEC).
func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
}

/// A loopback port that was free a moment ago (bound to port 0, then closed).
func freeLoopbackPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NotifyTestError.setup("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw NotifyTestError.setup("bind/getsockname: errno \(errno)") }
    return UInt16(bigEndian: address.sin_port)
}

/// Connects to 127.0.0.1:`port`, retrying while nothing listens yet (up to `timeout`).
func connectWhenListening(port: UInt16, timeout: Duration = .seconds(15)) async throws -> RawConnection {
    let deadline = ContinuousClock.now + timeout
    while true {
        do {
            return try RawConnection(port: port, timeoutSeconds: 20)
        } catch RawError.connect(let code) where code == ECONNREFUSED && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// One HTTP/1.1 GET over a fresh connection: (status line, the whole response as text). Reads
/// until the server closes or the body announced by Content-Length is complete.
func httpGet(port: UInt16, path: String) throws -> (statusLine: String, response: String) {
    let connection = try RawConnection(port: port, timeoutSeconds: 20)
    connection.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n")
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
        let text = String(decoding: bytes, as: UTF8.self)
        if let headerEnd = text.range(of: "\r\n\r\n") {
            let headers = text[..<headerEnd.lowerBound].lowercased()
            if let line = headers.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
               let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
               text.utf8.count - text.utf8.distance(from: text.startIndex, to: headerEnd.upperBound) >= length {
                break
            }
        }
        var pfd = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 1000) >= 0 else { break }
        if pfd.revents == 0 { continue }
        let n = chunk.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, 65536, 0) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    let text = String(decoding: bytes, as: UTF8.self)
    let statusLine = text.components(separatedBy: "\r\n").first ?? ""
    return (statusLine, text)
}
