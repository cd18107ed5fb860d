// Starting a child process for a test: posix_spawn, not Foundation's Process. Process's child
// monitor blocked in waitpid on a long-lived child (systemd-socket-activate, a user manager), after
// which no other Process was reaped and a fresh-clone `make test` hung; children spawned from a
// Dispatch worker also inherited libdispatch's signal mask, SIGTERM blocked. Callers reap with waitpid.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct SpawnError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// posix_spawn `executable` with `arguments` and exactly `environment`: stdin from /dev/null,
/// stdout appended to the file `stdout`, stderr to the file `stderr` (or with stdout when nil),
/// no signal blocked and every disposition at its default. Returns the child's pid.
/// Throws `SpawnError` naming the errno when a file cannot be opened or posix_spawn fails.
public func spawnChild(_ executable: String, _ arguments: [String], environment: [String: String], stdout: String,
                       stderr: String? = nil) throws -> pid_t {
    let out = open(stdout, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard out >= 0 else { throw SpawnError(description: "open \(stdout): errno \(errno)") }
    defer { close(out) }
    var err = out
    if let stderr {
        err = open(stderr, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard err >= 0 else { throw SpawnError(description: "open \(stderr): errno \(errno)") }
    }
    defer { if err != out { close(err) } }
    return try spawnChild(executable, arguments, environment: environment, inputFD: nil, outputFD: out, errorFD: err)
}

/// As above with descriptors: the child's stdin is `inputFD` (nil: /dev/null), its stdout
/// `outputFD` and its stderr `errorFD` (each dup2'ed; the caller keeps and closes its own).
public func spawnChild(_ executable: String, _ arguments: [String], environment: [String: String], inputFD: Int32?,
                       outputFD: Int32, errorFD: Int32) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let inputFD {
        posix_spawn_file_actions_adddup2(&actions, inputFD, 0)
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
    posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
    posix_spawn_file_actions_adddup2(&actions, errorFD, 2)
    closeInheritedDescriptors(&actions)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let cArguments = ([executable] + arguments).map { strdup($0) } + [nil]
    let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArguments + cEnvironment).forEach { free($0) } }
    var child: pid_t = 0
    let result = posix_spawn(&child, executable, &actions, &attributes, cArguments, cEnvironment)
    guard result == 0 else { throw SpawnError(description: "posix_spawn \(executable): errno \(result)") }
    return child
}

/// Closes every descriptor above 2 in the child. All test targets run in one process on Linux:
/// without this a child (a wald an end-to-end test starts) inherits whatever another test holds
/// open without O_CLOEXEC — a socketpair's server end in HalfCloseTests kept its client from ever
/// seeing EOF in a TSan run that mixed the suites. Foundation's Process closed them too.
/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34) is not in the Glibc module: looked up
/// with dlsym; without it, each descriptor listed in /proc/self/fd gets a close action.
private func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
        if unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3) == 0 { return }
    }
    let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    for fd in open.compactMap({ Int32($0) }) where fd > 2 {
        posix_spawn_file_actions_addclose(&actions, fd)
    }
}

/// How a child ended: its exit status, or the signal that killed it.
public struct ChildExit: Sendable {
    public let status: Int32
    public let exitedNormally: Bool
    public let timedOut: Bool
}

/// Waits for `pid` (ours) to end, SIGKILLing it after `timeout` seconds. Polls waitpid(pid,
/// WNOHANG) every 5 ms: only this pid is reaped, never another's child.
public func waitForChild(_ pid: pid_t, timeout: Double) -> ChildExit {
    let (status, killed) = reapChild(pid, timeout: timeout)
    guard let status else { return ChildExit(status: -1, exitedNormally: false, timedOut: killed) }
    let signaled = (status & 0x7f) != 0
    return ChildExit(status: signaled ? status & 0x7f : (status >> 8) & 0xff, exitedNormally: !signaled, timedOut: killed)
}

/// The loop behind `waitForChild` and `SpawnedChild.waitUntilExit(seconds:)`: the raw wait
/// status once `pid` is reaped (nil if waitpid failed: not our child, or already reaped), and
/// whether it had to be SIGKILLed after `timeout` seconds.
func reapChild(_ pid: pid_t, timeout: Double) -> (status: Int32?, killed: Bool) {
    let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
    var killed = false
    var status: Int32 = 0
    while true {
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { return (status, killed) }
        if result < 0 && errno != EINTR { return (nil, killed) }
        if !killed && ContinuousClock.now >= deadline {
            kill(pid, SIGKILL)
            killed = true
        }
        usleep(5_000)
    }
}

/// A child started with `spawnChild`, offering the part of Foundation's `Process` the tests
/// use (`processIdentifier`, `isRunning`, `waitUntilExit`, `terminationStatus`,
/// `terminationReason`) without its child monitor (see the file comment). Only this pid is
/// ever reaped.
public final class SpawnedChild: @unchecked Sendable {
    // @unchecked: the exit state is behind `lock`; the pid never changes.
    public enum TerminationReason: Sendable { case exit, uncaughtSignal }

    public let processIdentifier: pid_t
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Spawns `executable` (see `spawnChild(_:_:environment:inputFD:outputFD:errorFD:)`).
    public init(_ executable: String, _ arguments: [String], environment: [String: String], inputFD: Int32? = nil,
                outputFD: Int32, errorFD: Int32) throws {
        processIdentifier = try spawnChild(executable, arguments, environment: environment, inputFD: inputFD,
                                           outputFD: outputFD, errorFD: errorFD)
    }

    /// Whether the child has not ended yet (reaps it when it has).
    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Blocks until the child ends and reaps it.
    public func waitUntilExit() { _ = reap(blocking: true) }

    /// Waits up to `seconds` for the child to end, then SIGKILLs and reaps it. Returns whether
    /// it ended by itself.
    public func waitUntilExit(seconds: Double) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if exitStatus != nil { return true }
        let (status, killed) = reapChild(processIdentifier, timeout: seconds)
        exitStatus = status
        return !killed
    }

    /// The exit code, or the signal that ended it (as Foundation reports it); -1 while running.
    public var terminationStatus: Int32 {
        guard let status = reap(blocking: false) else { return -1 }
        return Self.signaled(status) ? status & 0x7f : (status >> 8) & 0xff
    }

    public var terminationReason: TerminationReason {
        guard let status = reap(blocking: false), Self.signaled(status) else { return .exit }
        return .uncaughtSignal
    }

    private static func signaled(_ status: Int32) -> Bool { (status & 0x7f) != 0 && (status & 0x7f) != 0x7f }

    /// waitpid on this pid: the raw status once it has ended, nil while it runs.
    private func reap(blocking: Bool) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while true {
            let result = waitpid(processIdentifier, &status, blocking ? 0 : WNOHANG)
            if result == processIdentifier {
                exitStatus = status
                return status
            }
            if result < 0 && errno == EINTR { continue }
            return nil
        }
    }
}

/// How a program run by `runProgram` ended, and what it printed.
public struct ToolResult: Sendable {
    public var status: Int32
    public var exitedNormally: Bool
    public var stdout: String
    public var stderr: String
    public var timedOut: Bool
}

/// Runs one of the built executables to completion (killed after `timeout` seconds), with
/// its output in temporary files so a chatty child cannot block on a full pipe.
/// `standardInput` replaces /dev/null; `standardOutput`/`standardError` replace the files the
/// result reads (then its text is empty).
public func runTool(_ name: String, _ arguments: [String], timeout: Double = 60, standardInput: FileHandle? = nil,
                    standardOutput: FileHandle? = nil, standardError: FileHandle? = nil,
                    environment: [String: String] = [:]) throws -> ToolResult {
    try runProgram(buildProductsDirectory().appendingPathComponent(name).path, arguments, timeout: timeout,
                   standardInput: standardInput, standardOutput: standardOutput, standardError: standardError,
                   environment: environment)
}

/// `runTool` with `input` on its standard input (from a temporary file).
public func runTool(_ name: String, _ arguments: [String], input: [UInt8], timeout: Double = 60,
                    environment: [String: String] = [:]) throws -> ToolResult {
    let path = NSTemporaryDirectory() + "wald-e2e-stdin-\(UUID().uuidString)"
    guard FileManager.default.createFile(atPath: path, contents: Data(input)), let handle = FileHandle(forReadingAtPath: path) else {
        throw SpawnError(description: "cannot write the standard input file \(path): errno \(errno)")
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try runTool(name, arguments, timeout: timeout, standardInput: handle, environment: environment)
}

/// Runs the program at `path` like `runTool` (a third-party client such as redis-cli).
/// `environment` is added to the test's own (whose WALD_* and WALCTL_* variables are left out).
public func runProgram(_ path: String, _ arguments: [String], timeout: Double = 60, standardInput: FileHandle? = nil,
                       standardOutput: FileHandle? = nil, standardError: FileHandle? = nil,
                       environment: [String: String] = [:]) throws -> ToolResult {
    let base = NSTemporaryDirectory() + "wald-e2e-tool-\(UUID().uuidString)"
    let outPath = base + ".out"
    let errPath = base + ".err"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: outPath)
        try? FileManager.default.removeItem(atPath: errPath)
    }
    // posix_spawn and waitpid on this pid, not Foundation's Process: its waitUntilExit never
    // returned for an openssl child that had exited, with both cooperative threads blocked
    // (one in waitUntilExit, one on the lock around it), and the suite hung.
    let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") && !$0.key.hasPrefix("WALCTL_") }
        .merging(environment) { $1 }
    let out = standardOutput.map { $0.fileDescriptor } ?? open(outPath, O_WRONLY | O_APPEND | O_CLOEXEC)
    let err = standardError.map { $0.fileDescriptor } ?? open(errPath, O_WRONLY | O_APPEND | O_CLOEXEC)
    defer {
        if standardOutput == nil { close(out) }
        if standardError == nil { close(err) }
    }
    let pid = try spawnChild(path, arguments, environment: environment, inputFD: standardInput?.fileDescriptor,
                             outputFD: out, errorFD: err)
    let exit = waitForChild(pid, timeout: timeout)
    return ToolResult(
        status: exit.status,
        exitedNormally: exit.exitedNormally,
        stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
        timedOut: exit.timedOut)
}
