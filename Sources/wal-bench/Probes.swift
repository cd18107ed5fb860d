// What the benchmark measures outside the engine: a temp directory, the raw pwrite+fdatasync
// reference loop, process memory from /proc, and a monotonic clock.
import Foundation
import Synchronization
import WALSync

/// Seconds elapsed while running `body`.
func measure(_ body: () async throws -> Void) async rethrows -> Double {
    let start = ContinuousClock.now
    try await body()
    return seconds(ContinuousClock.now - start)
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// A fresh directory under `base`, removed by `remove()`.
struct BenchDirectory {
    let path: String

    init(base: String, label: String) {
        path = "\(base)/wal-bench-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The best a log could do for one durable small write: pwrite `size` bytes at the next offset
/// of a zero-filled, preallocated, fdatasynced file, then fdatasync. Returns seconds for `count`.
func rawDurableWrites(directory: String, count: Int, size: Int) throws -> Double {
    let path = directory + "/raw.data"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw BenchError.system("open \(path)", errno) }
    defer {
        close(fd)
        unlink(path)
    }
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    let total = (count * size + zeros.count - 1) / zeros.count * zeros.count
    var offset = 0
    while offset < total {
        guard pwrite(fd, zeros, zeros.count, off_t(offset)) == zeros.count else { throw BenchError.system("pwrite", errno) }
        offset += zeros.count
    }
    guard fsync(fd) == 0 else { throw BenchError.system("fsync", errno) }
    let record = [UInt8](repeating: 0x5A, count: size)
    let start = ContinuousClock.now
    for index in 0..<count {
        guard pwrite(fd, record, size, off_t(index * size)) == size else { throw BenchError.system("pwrite", errno) }
        guard fdatasync(fd) == 0 else { throw BenchError.system("fdatasync", errno) }
    }
    return seconds(ContinuousClock.now - start)
}

enum BenchError: Error, CustomStringConvertible {
    case system(String, Int32)
    case check(String)

    var description: String {
        switch self {
        case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
        case .check(let text): text
        }
    }
}

/// Resident and peak resident memory of this process in KiB (VmRSS, VmHWM of /proc/self/status).
func memoryKiB() -> (rss: Int, peak: Int) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    var rss = 0
    var peak = 0
    for line in text.split(separator: "\n") {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2, let value = Int(fields[1]) else { continue }
        if fields[0] == "VmRSS:" { rss = value }
        if fields[0] == "VmHWM:" { peak = value }
    }
    return (rss, peak)
}

/// The type of the file system holding `path` (the benchmark wants ext4), from /proc/self/mounts.
func fileSystemType(of path: String) -> String {
    guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return "?" }
    let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    var best: (mountPoint: String, type: String) = ("", "?")
    for line in mounts.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count >= 3 else { continue }
        let mountPoint = String(fields[1])
        let covers = mountPoint == "/" || resolved == mountPoint || resolved.hasPrefix(mountPoint + "/")
        if covers && mountPoint.count >= best.mountPoint.count { best = (mountPoint, String(fields[2])) }
    }
    return best.type
}

/// The cross-thread handoff a lone durable append pays, with a 100 µs sleep standing in for
/// fdatasync (so the threads go idle as they do around a real sync): the task parks on a
/// continuation and signals a semaphore; a dedicated thread (like GroupCommit's sync thread)
/// wakes, sleeps, and resumes the continuation; the task wakes on the cooperative pool.
/// Returns seconds per round trip minus seconds per plain 100 µs sleep on one thread.
func handoffCost(count: Int) async -> Double {
    final class Handoff: Sendable {
        let state = WALMutex<(pending: CheckedContinuation<Void, Never>?, stop: Bool)>((nil, false))
        let wakeup = DispatchSemaphore(value: 0)

        func run() {
            while true {
                wakeup.wait()
                usleep(100)
                let (continuation, stop) = state.withLock { state in
                    defer { state.pending = nil }
                    return (state.pending, state.stop)
                }
                continuation?.resume()
                if stop { return }
            }
        }
    }
    let handoff = Handoff()
    DispatchQueue(label: "wal-bench.handoff", qos: .userInitiated).async { handoff.run() }
    let start = ContinuousClock.now
    for _ in 0..<count {
        await withCheckedContinuation { continuation in
            handoff.state.withLock { $0.pending = continuation }
            handoff.wakeup.signal()
        }
    }
    let elapsed = seconds(ContinuousClock.now - start)
    handoff.state.withLock { $0.stop = true }
    handoff.wakeup.signal()
    let sleepStart = ContinuousClock.now
    for _ in 0..<count { usleep(100) }
    let sleeping = seconds(ContinuousClock.now - sleepStart)
    return (elapsed - sleeping) / Double(count)
}
