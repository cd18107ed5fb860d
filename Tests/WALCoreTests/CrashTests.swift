// Real-process crash test: the built `wal-stress` binary appends durable records and prints
// each acknowledgement; we SIGKILL it at a random moment, reopen the directory here and check
// that every acknowledged record is present with exactly its bytes and that LSNs are dense.
// The same directory is reused across rounds, so the log grows, rotates and is recovered
// from many different cut points. Set WAL_CRASH_SEED to replay a failing run.
import Foundation
import Testing
import WALCore

@Suite struct CrashTests {
    static let rounds = 24
    static let segmentBytes = 32 * 1024
    static let maxPayload = 300

    @Test func acknowledgedAppendsSurviveSIGKILL() async throws {
        let seed = ProcessInfo.processInfo.environment["WAL_CRASH_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 1...UInt64(UInt32.max))
        guard let binary = stressBinaryPath() else {
            Issue.record("wal-stress binary not found next to the test bundle; run `swift build --build-tests` first")
            return
        }
        let dir = TempDirectory("crash")
        var failed = false
        defer {
            if failed { print("CrashTests: seed \(seed); data kept in \(dir.path)") } else { dir.cleanup() }
        }
        var schedule = SplitMix64(seed: seed)
        var highestAcked: LSN = 0
        for round in 1...Self.rounds {
            let runMillis = 50 + Int(schedule.next() % 351)
            let batch = 1 + Int(schedule.next() % 8)
            let arguments = [dir.path, "--seed", "\(seed)", "--batch", "\(batch)", "--size", "\(Self.maxPayload)",
                             "--segment-bytes", "\(Self.segmentBytes)", "--exit-on-stdin-eof"]
            let run = await runAndKill(binary, arguments, afterMillis: runMillis)
            let context = "seed \(seed), round \(round), killed after \(runMillis) ms, batch \(batch)"
            guard run.killedBySIGKILL else {
                failed = true
                Issue.record("wal-stress exited on its own (status \(run.status)) before SIGKILL: \(context)")
                return
            }
            var previousEnd: LSN?
            for ack in run.acks {
                if let previousEnd, ack.first != previousEnd + 1 {
                    failed = true
                    Issue.record("acks not consecutive: \(ack.first) after \(previousEnd): \(context)")
                }
                previousEnd = ack.first + ack.count - 1
                highestAcked = max(highestAcked, ack.first + ack.count - 1)
            }
            if let problem = try await checkLog(dir.path, seed: seed, acknowledgedThrough: highestAcked) {
                failed = true
                Issue.record("\(problem): \(context)")
                return
            }
        }
        #expect(highestAcked > 0, "no append was ever acknowledged (seed \(seed))")
        let segments = (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.filter { $0.hasSuffix(".wal") }.count ?? 0
        print("CrashTests: \(Self.rounds) SIGKILLs, \(highestAcked) records acknowledged, \(segments) segments, seed \(seed)")
    }

    /// Opens the log like a restarted wald and returns a description of the first problem.
    func checkLog(_ directory: String, seed: UInt64, acknowledgedThrough acked: LSN) async throws -> String? {
        var options = WALOptions(directory: directory)
        options.maxSegmentBytes = Self.segmentBytes
        options.maxRecordBytes = Self.maxPayload
        options.flushInterval = .zero
        options.logger.logLevel = .error
        let wal = try await WAL.open(options)
        let status = wal.status
        var problem: String?
        if status.firstLSN != 1 {
            problem = "log starts at LSN \(status.firstLSN), not 1"
        } else if status.lastLSN < acked {
            problem = "acknowledged through LSN \(acked) but the log ends at \(status.lastLSN)"
        } else {
            let reader = try wal.reader(from: 1)
            var expected: LSN = 1
            try reader.read { lsn, bytes in
                let wanted = crashPayload(seed: seed, lsn: lsn, maxSize: Self.maxPayload)
                if lsn != expected {
                    problem = "LSN \(lsn) where \(expected) was expected"
                } else if !wanted.withUnsafeBytes({ $0.elementsEqual(bytes) }) {
                    problem = "LSN \(lsn) holds \(bytes.count) bytes that differ from its \(wanted.count)-byte payload"
                }
                expected += 1
                return problem == nil
            }
            if problem == nil && expected - 1 != status.lastLSN {
                problem = "reader stopped at LSN \(expected - 1) but the log ends at \(status.lastLSN)"
            }
        }
        try await wal.close()
        return problem
    }
}

/// Same function as `stressPayload` in Sources/wal-stress/main.swift; keep them in step.
func crashPayload(seed: UInt64, lsn: UInt64, maxSize: Int) -> [UInt8] {
    var random = SplitMix64(seed: seed ^ (lsn &* 0xD6E8_FEB8_6659_FD93))
    let size = Int(random.next() % UInt64(maxSize + 1))
    var bytes = [UInt8](repeating: 0, count: size)
    var index = 0
    while index < size {
        var word = random.next()
        for _ in 0..<min(8, size - index) {
            bytes[index] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            index += 1
        }
    }
    return bytes
}

/// `wal-stress` from the build directory holding this test bundle (or WAL_STRESS_PATH).
func stressBinaryPath() -> String? {
    if let path = ProcessInfo.processInfo.environment["WAL_STRESS_PATH"] { return path }
    guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    for _ in 0..<5 {
        for candidate in [dir.appendingPathComponent("wal-stress"), dir.appendingPathComponent("debug/wal-stress")]
        where FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate.path
        }
        dir = dir.deletingLastPathComponent()
    }
    return nil
}

struct StressRun: Sendable {
    var acks: [(first: LSN, count: LSN)] = []
    var status: Int32 = 0
    var killedBySIGKILL: Bool { status & 0x7F == SIGKILL }
}

/// Starts the child, reads its stdout for `afterMillis`, SIGKILLs it, reaps it and collects
/// every ack it printed (those still in the pipe too: each was printed after its fsync).
/// Runs on its own thread so blocking in poll/waitpid never holds a cooperative thread.
func runAndKill(_ binary: String, _ arguments: [String], afterMillis: Int) async -> StressRun {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(returning: runAndKillBlocking(binary, arguments, afterMillis: afterMillis))
        }
    }
}

private func runAndKillBlocking(_ binary: String, _ arguments: [String], afterMillis: Int) -> StressRun {
    // Socket pairs rather than pipes because they can be created close-on-exec atomically
    // (Glibc's pipe2 is not visible to Swift): children other tests spawn at the same time must
    // not inherit these ends (an inherited stdin end would keep our child alive after we die;
    // an inherited stdout end would delay EOF).
    var stdinPipe: [Int32] = [0, 0]
    var stdoutPipe: [Int32] = [0, 0]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    precondition(socketpair(AF_UNIX, type, 0, &stdinPipe) == 0 && socketpair(AF_UNIX, type, 0, &stdoutPipe) == 0)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGPIPE)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv: [UnsafeMutablePointer<CChar>?] = ([binary] + arguments).map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, binary, &actions, &attributes, argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    posix_spawnattr_destroy(&attributes)
    for pointer in argv { free(pointer) }
    close(stdinPipe[0])
    close(stdoutPipe[1])
    defer {
        close(stdinPipe[1])
        close(stdoutPipe[0])
    }
    guard spawned == 0 else { return StressRun(status: -1) }

    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    func drain(blocking: Bool, until deadline: ContinuousClock.Instant?) {
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let left = deadline - .now
                if left <= .zero { return }
                timeout = Int32(max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            }
            var poller = pollfd(fd: stdoutPipe[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, blocking ? timeout : 0)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { return }
            let n = buffer.withUnsafeMutableBytes { read(stdoutPipe[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            output.append(contentsOf: buffer[0..<n])
        }
    }
    drain(blocking: true, until: .now + .milliseconds(afterMillis))
    kill(pid, SIGKILL)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    drain(blocking: true, until: nil)  // The child is gone: read what it wrote up to EOF.

    var run = StressRun(status: status)
    for line in output.split(separator: UInt8(ascii: "\n")) {
        let fields = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        if fields.count == 3, fields[0] == "ack", let first = LSN(fields[1]), let count = LSN(fields[2]) {
            run.acks.append((first, count))
        }
    }
    return run
}
