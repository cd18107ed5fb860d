// What the load, crash, bad-input and lifecycle tests share: seeded randomness, payloads that
// name their writer, reading a whole log back, a background writer that proves the server
// keeps serving, a watchdog for awaits that could hang, and running the built executables.
import Foundation
import WALTestSupport
import Synchronization
import Testing
import WALClient
#if canImport(Glibc)
import Glibc
import WALSync
#endif

/// SplitMix64: seeded, so a failing run can be repeated with the seed it prints.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The seed for randomized tests: `E2E_SEED` when set (to replay a failure), else a fresh one.
func testSeed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["E2E_SEED"], let seed = UInt64(text) { return seed }
    return UInt64.random(in: 1...UInt64.max)
}

/// `size` bytes that start with `tag` (so distinct tags give distinct payloads of at least
/// the tag's length) and continue with bytes derived from the tag.
func payload(_ tag: String, size: Int) -> [UInt8] {
    var bytes = Array((tag + ";").utf8.prefix(size))
    var x: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in tag.utf8 { x = (x ^ UInt64(byte)) &* 0x100_0000_01B3 }
    while bytes.count < size {
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes.append(UInt8(truncatingIfNeeded: x >> 33))
    }
    return bytes
}

/// Every record of the log, read back over a new connection.
func replayAll(_ endpoint: Endpoint, from lsn: UInt64 = 0) async throws -> [ReplayedRecord] {
    let client = try await WALClient.connect(endpoint)
    defer { client.close() }
    let watchdog = Watchdog(seconds: 60) { client.close() }
    defer { watchdog.cancel() }
    var records: [ReplayedRecord] = []
    for try await record in client.replay(from: lsn) { records.append(record) }
    return records
}

/// Checks that `records` (a replay from the first LSN) has dense LSNs starting at 1 and holds
/// every acknowledged record with its exact bytes. Returns the log as LSN → payload.
@discardableResult
func expectLog(_ records: [ReplayedRecord], holds acked: [UInt64: [UInt8]], _ context: String,
               sourceLocation: SourceLocation = #_sourceLocation) -> [UInt64: [UInt8]] {
    let lsns = records.map(\.lsn)
    let dense = lsns == Array(UInt64(1)..<UInt64(1 + records.count))
    #expect(dense, "\(context): LSNs are not 1...\(records.count) in order (first \(lsns.prefix(3)), last \(lsns.suffix(3)))",
            sourceLocation: sourceLocation)
    var log: [UInt64: [UInt8]] = [:]
    for record in records { log[record.lsn] = record.payload }
    var missing = 0
    var wrong = 0
    var firstProblem = ""
    for (lsn, bytes) in acked.sorted(by: { $0.key < $1.key }) {
        guard let stored = log[lsn] else {
            missing += 1
            if firstProblem.isEmpty { firstProblem = "acknowledged LSN \(lsn) is missing" }
            continue
        }
        if stored != bytes {
            wrong += 1
            if firstProblem.isEmpty {
                firstProblem = "LSN \(lsn) holds \(stored.count) bytes \(stored.prefix(24)) but \(bytes.count) bytes \(bytes.prefix(24)) were acknowledged"
            }
        }
    }
    #expect(missing == 0 && wrong == 0,
            "\(context): \(missing) acknowledged records missing, \(wrong) with other bytes, of \(acked.count); \(firstProblem)",
            sourceLocation: sourceLocation)
    return log
}

/// Acknowledged (LSN → payload) pairs, collected from many tasks.
final class AckLog: Sendable {
    private let acks = WALMutex<[UInt64: [UInt8]]>([:])
    private let duplicates = WALMutex<[UInt64]>([])

    /// Records a batch acknowledged at `first`; an LSN acknowledged twice is remembered.
    func add(first: UInt64, _ records: [[UInt8]]) {
        acks.withLock { acks in
            for (offset, record) in records.enumerated() {
                let lsn = first + UInt64(offset)
                if acks.updateValue(record, forKey: lsn) != nil { duplicates.withLock { $0.append(lsn) } }
            }
        }
    }

    var all: [UInt64: [UInt8]] { acks.withLock { $0 } }
    var count: Int { acks.withLock { $0.count } }
    var duplicateLSNs: [UInt64] { duplicates.withLock { $0 } }
}

/// A value shared between tasks.
final class Locked<Value: Sendable>: Sendable {
    private let value: WALMutex<Value>
    init(_ initial: Value) { value = WALMutex(initial) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { value.withLock { body(&$0) } }
    var current: Value { value.withLock { $0 } }
}

/// Runs an action on a Dispatch thread after a deadline unless cancelled first: closes a
/// client (failing its pending calls) or kills a process when the server stops answering,
/// so a hang becomes a failure instead of a stuck test run. Dispatch, not a Task, because a
/// blocked cooperative pool would also block a watchdog task.
final class Watchdog: Sendable {
    private let state = WALMutex<(cancelled: Bool, fired: Bool)>((false, false))

    init(seconds: Double, action: @escaping @Sendable () -> Void) {
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            let fire = state.withLock { s -> Bool in
                if s.cancelled { return false }
                s.fired = true
                return true
            }
            if fire { action() }
        }
    }

    func cancel() { state.withLock { $0.cancelled = true } }
    var fired: Bool { state.withLock { $0.fired } }
}

/// A client that appends small durable records one after another until stopped, to show
/// that whatever else happens to the server, other clients keep getting acknowledgements.
final class BackgroundWriter: Sendable {
    private let client: WALClient
    private let acks = AckLog()
    private let failure = WALMutex<String?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let task = WALMutex<Task<Void, Never>?>(nil)
    let tag: String

    private init(client: WALClient, tag: String) {
        self.client = client
        self.tag = tag
    }

    static func start(_ endpoint: Endpoint, tag: String = "bg") async throws -> BackgroundWriter {
        let writer = BackgroundWriter(client: try await WALClient.connect(endpoint), tag: tag)
        writer.task.withLock { $0 = Task { await writer.run() } }
        return writer
    }

    private func run() async {
        var index = 0
        while !stopping.load(ordering: .relaxed) {
            let record = payload("\(tag)-\(index)", size: 16 + (index * 37) % 300)
            do {
                let lsn = try await client.append(record)
                acks.add(first: lsn, [record])
            } catch {
                if !stopping.load(ordering: .relaxed) { failure.withLock { $0 = "append #\(index) failed: \(error)" } }
                return
            }
            index += 1
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    var ackCount: Int { acks.count }

    /// Waits (up to a generous `timeout`) for `more` acknowledgements beyond the current
    /// count; records an issue naming `when` if they do not come.
    func expectProgress(_ when: String, more: Int = 5, timeout: Duration = .seconds(30),
                        sourceLocation: SourceLocation = #_sourceLocation) async {
        let target = ackCount + more
        let deadline = ContinuousClock.now + timeout
        while ackCount < target && ContinuousClock.now < deadline && failure.withLock({ $0 }) == nil {
            try? await Task.sleep(for: .milliseconds(5))
        }
        #expect(ackCount >= target,
                "background writer stalled \(when): \(ackCount) acks, wanted \(target); \(failure.withLock { $0 } ?? "no error")",
                sourceLocation: sourceLocation)
    }

    /// Stops appending and closes the connection; returns what was acknowledged. An append
    /// that failed before the stop is an issue.
    func stop(sourceLocation: SourceLocation = #_sourceLocation) async -> [UInt64: [UInt8]] {
        stopping.store(true, ordering: .relaxed)
        let watchdog = Watchdog(seconds: 30) { [client] in client.close() }
        await task.withLock { $0 }?.value
        watchdog.cancel()
        client.close()
        if let failure = failure.withLock({ $0 }) {
            Issue.record("background writer: \(failure)", sourceLocation: sourceLocation)
        }
        #expect(acks.duplicateLSNs.isEmpty, "background writer got LSNs twice: \(acks.duplicateLSNs.prefix(5))",
                sourceLocation: sourceLocation)
        return acks.all
    }
}

/// wald's resident set size in KiB, from /proc/<pid>/status.
func residentKiB(pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }
    return nil
}

/// Everything the server sends on `fd` until it closes the connection, or until nothing
/// arrives for `idleSeconds` (then `closed` is false).
func readUntilClosed(_ fd: Int32, idleSeconds: Int32 = 20) -> (bytes: [UInt8], closed: Bool) {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, idleSeconds * 1000)
        if ready < 0 && errno == EINTR { continue }
        if ready <= 0 { return (bytes, false) }
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 && errno == ECONNRESET { return (bytes, true) }
        if n <= 0 { return (bytes, true) }
        bytes.append(contentsOf: chunk[0..<n])
    }
}

/// Splits bytes into binary frames; `rest` is what remains after the last whole frame.
func splitFrames(_ bytes: [UInt8]) -> (frames: [(opcode: UInt8, body: [UInt8])], rest: Int) {
    var frames: [(UInt8, [UInt8])] = []
    var offset = 0
    while bytes.count - offset >= 4 {
        let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
        guard length >= 1, bytes.count - offset - 4 >= length else { break }
        frames.append((bytes[offset + 4], Array(bytes[(offset + 5)..<(offset + 4 + length)])))
        offset += 4 + length
    }
    return (frames, bytes.count - offset)
}

/// True when the peer has neither sent anything nor closed: the connection is idle and open.
func isOpenAndQuiet(_ fd: Int32) -> Bool {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&pfd, 1, 0) == 0
}

/// A blocking unix-socket connection that reads reply lines (the text protocol over `--unix`).
final class UnixLineConnection {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { throw RawError.connect(errno) }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) }
    }

    func readLine() -> String? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let index = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<index])
                buffer.removeFirst(index + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}

/// Text reply lines (split at `\r\n`, which a reply line never contains), without the ends.
func splitLines(_ bytes: [UInt8]) -> [String] {
    var lines: [String] = []
    var start = 0
    var index = 0
    while index + 1 < bytes.count {
        if bytes[index] == 13 && bytes[index + 1] == 10 {
            lines.append(String(decoding: bytes[start..<index], as: UTF8.self))
            index += 2
            start = index
        } else {
            index += 1
        }
    }
    if start < bytes.count { lines.append(String(decoding: bytes[start...], as: UTF8.self)) }
    return lines
}
