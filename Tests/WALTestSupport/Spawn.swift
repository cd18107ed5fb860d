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
}

/// posix_spawn `executable` with `arguments` and exactly `environment`: stdin from /dev/null,
/// stdout appended to the file `stdout`, stderr to the file `stderr` (or with stdout when nil),
/// no signal blocked and every disposition at its default. Returns the child's pid.
/// Throws `SpawnError` naming the errno when posix_spawn fails.
public func spawnChild(_ executable: String, _ arguments: [String], environment: [String: String], stdout: String,
                       stderr: String? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    if let stderr {
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    } else {
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
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
