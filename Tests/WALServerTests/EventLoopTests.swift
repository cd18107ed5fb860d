// The event loop in process: a real WAL on real files (real fdatasync), a WALServer serving
// socketpairs, and clients speaking the binary protocol. What the loop must keep true: replies
// in request order across a sync completion; a stalled fdatasync holds back only durable acks;
// follow streams and appends share the loop; a client that stops reading stalls nobody else;
// rotation under load never runs fdatasync (or any fsync) on the loop; a refused append leaves
// nothing behind; a stream waiting for room goes on whoever makes the room.
import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization
import Testing
import WALCore
import WALProtocol
import WALServer
import WALSync

@Suite(.serialized) struct EventLoopTests {
    @Test(.timeLimit(.minutes(1)))
    func pipelinedRepliesStraddlingASyncComeBackInOrder() async throws {
        let harness = try await LoopHarness.start()
        defer { harness.cleanup() }
        let client = try harness.connect()
        harness.io.stallSyncs()
        client.send(.append(records: [[1]], buffered: false))
        try await harness.io.waitUntilASyncIsStalled()
        // Sent while the first sync is held: a durable append, a PING, a buffered append, a durable one.
        client.send(.append(records: [[2]], buffered: false))
        client.send(.ping([7, 7]))
        client.send(.append(records: [[3], [4]], buffered: true))
        client.send(.append(records: [[5]], buffered: false))
        try await Task.sleep(for: .milliseconds(100))
        #expect(client.available() == 0, "a reply went out before the held APPENDED before it")
        harness.io.releaseSyncs()
        let replies = try client.receive(5)
        #expect(replies == [
            .appended(firstLSN: 1, count: 1), .appended(firstLSN: 2, count: 1), .pong([7, 7]),
            .appended(firstLSN: 3, count: 2), .appended(firstLSN: 5, count: 1),
        ])
        try await harness.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aStalledSyncHoldsBackOnlyDurableAcks() async throws {
        let harness = try await LoopHarness.start()
        defer { harness.cleanup() }
        let writer = try harness.connect()
        for value in UInt8(1)...3 { writer.send(.append(records: [[value]], buffered: false)) }
        _ = try writer.receive(3)
        harness.io.stallSyncs()
        writer.send(.append(records: [[4]], buffered: false))
        try await harness.io.waitUntilASyncIsStalled()
        let other = try harness.connect()
        other.send(.ping([1]))
        #expect(try other.receive(1) == [.pong([1])])
        other.send(.info)
        guard case .info(let json) = try other.receive(1).first else { throw HarnessError("no INFO reply") }
        #expect(json.contains("\"durable_lsn\":3"))
        other.send(.append(records: [[9]], buffered: true))
        #expect(try other.receive(1) == [.appended(firstLSN: 5, count: 1)])
        other.send(.replay(from: 1, maxCount: 0, follow: false))
        #expect(try other.receive(4) == [
            .record(lsn: 1, payload: [1]), .record(lsn: 2, payload: [2]), .record(lsn: 3, payload: [3]), .end(nextLSN: 4),
        ])
        #expect(writer.available() == 0, "the durable append was answered while its fdatasync was stalled")
        harness.io.releaseSyncs()
        #expect(try writer.receive(1) == [.appended(firstLSN: 4, count: 1)])
        try await harness.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aFollowStreamAndAppendsShareTheLoop() async throws {
        let harness = try await LoopHarness.start()
        defer { harness.cleanup() }
        let follower = try harness.connect()
        follower.send(.replay(from: 1, maxCount: 0, follow: true))
        let writer = try harness.connect()
        var acked: [UInt64] = []
        for round in 0..<20 {
            for i in 0..<10 { writer.send(.append(records: [ArraySlice("r\(round)-\(i)".utf8)], buffered: false)) }
            for reply in try writer.receive(10) {
                guard case .appended(let first, _) = reply else { throw HarnessError("unexpected \(reply)") }
                acked.append(first)
            }
        }
        #expect(acked == Array(1...200))
        let records = try follower.receive(200)
        for (index, record) in records.enumerated() {
            let round = index / 10, i = index % 10
            #expect(record == .record(lsn: UInt64(index + 1), payload: ArraySlice(Array("r\(round)-\(i)".utf8))))
        }
        try await harness.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aClientThatStopsReadingStallsNoOtherClient() async throws {
        let harness = try await LoopHarness.start()
        defer { harness.cleanup() }
        let loader = try harness.connect()
        for _ in 0..<16 { loader.send(.append(records: Array(repeating: ArraySlice(repeating: 5, count: 60_000), count: 16), buffered: false)) }
        _ = try loader.receive(16)
        // Asks for ~15 MB of records and PINGs behind them, and never reads.
        let stuck = try harness.connect(receiveBuffer: 4096)
        stuck.send(.replay(from: 1, maxCount: 0, follow: false))
        for _ in 0..<2000 { stuck.send(.ping(ArraySlice(repeating: 1, count: 500)), wait: false) }
        try await Task.sleep(for: .milliseconds(200))
        let other = try harness.connect()
        for round in 0..<50 {
            other.send(.append(records: [[UInt8(round)]], buffered: false))
            other.send(.ping([2]))
            let replies = try other.receive(2)
            guard case .appended = replies[0], replies[1] == .pong([2]) else { throw HarnessError("unexpected \(replies)") }
        }
        let states = harness.server.connectionStates.joined(separator: "\n")
        #expect(states.contains("read_suspended=true"), "the stuck client is still being read: \(states)")
        try await harness.stop()
    }

    @Test(.timeLimit(.minutes(2)))
    func rotationUnderLoadNeverSyncsOnTheLoop() async throws {
        let harness = try await LoopHarness.start(segmentBytes: 64 * 1024)
        defer { harness.cleanup() }
        let clients = try (0..<4).map { _ in try harness.connect() }
        for round in 0..<50 {
            for (index, client) in clients.enumerated() {
                for i in 0..<8 {
                    client.send(.append(records: [ArraySlice(repeating: UInt8(truncatingIfNeeded: round * 8 + i + index), count: 1000)],
                                        buffered: i % 2 == 1))
                }
            }
            for client in clients { _ = try client.receive(8) }
        }
        let status = harness.wal.status
        #expect(status.segments > 20, "only \(status.segments) segments: too few rotations to prove anything")
        #expect(status.lastLSN == 1600)
        let calls = harness.io.calls
        #expect(calls.syncsOnLoop == 0, "fdatasync ran on the event loop \(calls.syncsOnLoop) times")
        #expect(calls.directorySyncsOnLoop == 0, "a directory fsync ran on the event loop \(calls.directorySyncsOnLoop) times")
        #expect(calls.writesOnLoop > 0, "the loop itself never wrote: the records took another path")
        #expect(calls.syncs > 20)
        try await harness.stop()
    }

    /// docs/protocol.md: a REPLAY without FOLLOW ends at the durable LSN of the moment it was
    /// asked for. On a busy log it used to pick up every record made durable while it streamed.
    @Test(.timeLimit(.minutes(1)))
    func aReplayEndsAtTheDurableLSNOfItsRequest() async throws {
        let harness = try await LoopHarness.start()
        defer { harness.cleanup() }
        let writer = try harness.connect()
        let payload = ArraySlice([UInt8](repeating: 7, count: 10_000))
        for _ in 0..<20 { writer.send(.append(records: [payload], buffered: false)) }
        _ = try writer.receive(20)
        // The reader's buffers hold a few KiB: the replay cannot finish before more is appended.
        let reader = try harness.connect(receiveBuffer: 4096)
        reader.send(.replay(from: 1, maxCount: 0, follow: false))
        try await Task.sleep(for: .milliseconds(100))
        for _ in 0..<20 { writer.send(.append(records: [payload], buffered: false)) }
        _ = try writer.receive(20)
        let replies = try reader.receive(21)
        #expect(replies.last == .end(nextLSN: 21))
        #expect(replies.dropLast().allSatisfy { if case .record = $0 { true } else { false } })
        try await harness.stop()
    }

    /// A plain REPLAY whose client stops reading holds its segments like a follower does, and
    /// is dropped like one past max_follower_hold_bytes: retention moves on.
    @Test(.timeLimit(.minutes(1)))
    func aReplayThatStopsReadingIsDroppedAndReleasesItsSegments() async throws {
        let harness = try await LoopHarness.start(segmentBytes: 64 * 1024)
        defer { harness.cleanup() }
        let writer = try harness.connect()
        let payload = ArraySlice([UInt8](repeating: 9, count: 4000))
        // More than the 2 MiB a stream may queue before it waits for the client to read.
        for _ in 0..<15 {
            for _ in 0..<50 { writer.send(.append(records: [payload], buffered: false)) }
            _ = try writer.receive(50)
        }
        let stuck = try harness.connect(receiveBuffer: 4096)
        stuck.send(.replay(from: 1, maxCount: 0, follow: false))
        // Retention and the hold limit change only once the replay is streaming (its first
        // bytes wait in the client's socket): changed earlier, retention could delete LSN 1
        // before the REPLAY was read (OUT_OF_RANGE), or the lag check (every 500 ms) drop the
        // stream before it was counted here.
        let streaming = ContinuousClock.now + .seconds(10)
        while !(stuck.available() > 0) && ContinuousClock.now < streaming { try await Task.sleep(for: .milliseconds(10)) }
        #expect((stuck.available() > 0), "the replay never started")
        #expect(harness.server.connectionCount == 2)
        var holdLimited = harness.server.options
        holdLimited.maxFollowerHoldBytes = 256 * 1024
        harness.server.update(holdLimited)
        var limited = harness.wal.options
        limited.maxSegments = 3
        try harness.wal.update(limited)
        for _ in 0..<200 { writer.send(.append(records: [payload], buffered: false)) }
        _ = try writer.receive(200)
        let deadline = ContinuousClock.now + .seconds(10)
        while harness.server.connectionCount > 1 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(harness.server.connectionCount == 1, "the stuck replay is still open")
        // Retention runs at the next rotation.
        for _ in 0..<20 { writer.send(.append(records: [payload], buffered: false)) }
        _ = try writer.receive(20)
        #expect(harness.wal.status.firstLSN > 1, "retention is still held at LSN 1")
        #expect(harness.wal.status.segments <= 3)
        try await harness.stop()
    }

    /// The soak's stall: a follow stream that stopped at a half-full output waits for room. A
    /// FEEDBACK read in the same turn as the room appeared sent the whole output itself and
    /// disarmed the write event, and nothing pumped the stream again until the next durable
    /// event: after the last append, never. The client here answers every read with FEEDBACK
    /// at once, so the server often sees both in one turn.
    @Test(.timeLimit(.minutes(1)))
    func aFollowStreamReachesTheEndWhileItsClientSendsFeedback() async throws {
        let harness = try await LoopHarness.start(maxOutputBytes: 32 * 1024)
        defer { harness.cleanup() }
        let writer = try harness.connect()
        let payload = ArraySlice([UInt8](repeating: 4, count: 2000))
        for _ in 0..<30 {
            for _ in 0..<100 { writer.send(.append(records: [payload], buffered: false)) }
            _ = try writer.receive(100)
        }
        // Appends have stopped: only a stream's own pumps can bring its follower to LSN 3000.
        // Ten followers one after the other: the turn that shows the stall is a race.
        for round in 0..<10 {
            let follower = try harness.connect()
            follower.send(.replay(from: 1, maxCount: 0, follow: true))
            var next: UInt64 = 1
            while next <= 3000 {
                let replies: [Response]
                do {
                    replies = try follower.receiveOnce()
                } catch {
                    throw HarnessError("follower \(round) stalled at LSN \(next) of 3000: \(error)")
                }
                for reply in replies {
                    guard case .record(let lsn, let body) = reply, lsn == next, body == payload else {
                        throw HarnessError("expected record \(next), got \(reply)")
                    }
                    next += 1
                }
                follower.send(.feedback(durableLSN: next - 1))
            }
            #expect(next == 3001)
        }
        try await harness.stop()
    }

    /// docs/protocol.md drops a stream that falls behind "because its client does not read". A
    /// follow client that reads but sends no FEEDBACK (`walctl replay --follow`) was measured
    /// from where it started: dropped once the log had grown by `max_follower_hold_bytes`
    /// while it kept up, and holding retention until then.
    @Test(.timeLimit(.minutes(1)))
    func aFollowClientThatReadsWithoutFeedbackIsNotDroppedAndDoesNotHoldRetention() async throws {
        let harness = try await LoopHarness.start(segmentBytes: 64 * 1024, maxFollowerHoldBytes: 256 * 1024)
        defer { harness.cleanup() }
        var limited = harness.wal.options
        limited.maxSegments = 3
        try harness.wal.update(limited)
        let writer = try harness.connect()
        let tail = try harness.connect()
        tail.send(.replay(from: 1, maxCount: 0, follow: true))
        let payload = ArraySlice([UInt8](repeating: 6, count: 4000))
        var next: UInt64 = 1
        var appended: UInt64 = 0
        // Longer than the grace a follower gets for its first FEEDBACK, and many times the hold limit.
        let until = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < until {
            for _ in 0..<20 { writer.send(.append(records: [payload], buffered: false)) }
            appended += UInt64(try writer.receive(20).count)
            while next <= appended {
                for reply in try tail.receiveOnce() {
                    guard case .record(let lsn, let body) = reply, lsn == next, body == payload else {
                        throw HarnessError("the tail got \(reply), expected record \(next)")
                    }
                    next += 1
                }
            }
        }
        #expect(appended * 4000 > 4 * 256 * 1024)
        #expect(harness.server.connectionCount == 2, "the tail that kept up was dropped")
        // Retention follows the tail (its hold moves with each lag check, every 500 ms).
        #expect(harness.wal.status.firstLSN > appended / 2, "the tail still holds retention: \(harness.wal.status)")
        try await harness.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func anAppendRefusedForLackOfSpaceNeverAppearsAndItsLSNGoesToTheNext() async throws {
        let io = SimulatedFileIO()
        let harness = try await LoopHarness.start(io: io, segmentBytes: 128 * 1024, preallocate: false)
        defer { harness.cleanup() }
        let client = try harness.connect()
        client.send(.append(records: [ArraySlice("kept".utf8)], buffered: false))
        #expect(try client.receive(1) == [.appended(firstLSN: 1, count: 1)])
        io.setCapacity(io.usedBytes + 1000)
        client.send(.append(records: [ArraySlice(repeating: 0xAB, count: 4000)], buffered: false))
        guard case .error(.noSpace, _) = try client.receive(1).first else { throw HarnessError("expected NO_SPACE") }
        client.send(.info)
        guard case .info(let json) = try client.receive(1).first else { throw HarnessError("no INFO") }
        #expect(json.contains("\"last_lsn\":1,"), "the refused append is counted: \(json)")
        io.setCapacity(nil)
        client.send(.append(records: [ArraySlice("next".utf8)], buffered: false))
        #expect(try client.receive(1) == [.appended(firstLSN: 2, count: 1)])
        try await harness.stop()
        // Whatever the disk kept of the refused write, it is not a record: every power cut
        // leaves exactly "kept" and "next".
        for seed in UInt64(1)...20 {
            var rng = SeededGenerator(seed: seed)
            var options = harness.options
            options.io = io.powerCut(using: &rng)
            let reopened = try await WAL.open(options)
            var payloads: [[UInt8]] = []
            try reopened.replay(from: 1) { _, payload in payloads.append(payload) }
            #expect(payloads == [Array("kept".utf8), Array("next".utf8)], "seed \(seed)")
            try await reopened.close()
        }
    }
}

// MARK: Harness

/// SplitMix64: a small seeded generator, so a failing power cut can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A FileIO over another that can hold every fdatasync, and counts which calls ran on an
/// event loop.
final class WatchedFileIO: FileIO {
    struct Calls {
        var syncs = 0
        var syncsOnLoop = 0
        var directorySyncsOnLoop = 0
        var writesOnLoop = 0
    }

    private let base: any FileIO
    private let state = WALMutex<(stall: Bool, stalled: Int, calls: Calls)>((false, 0, Calls()))

    init(base: any FileIO) { self.base = base }

    var calls: Calls { state.withLock { $0.calls } }

    func stallSyncs() { state.withLock { $0.stall = true } }
    func releaseSyncs() { state.withLock { $0.stall = false } }

    func waitUntilASyncIsStalled() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while state.withLock({ $0.stalled }) == 0 {
            guard ContinuousClock.now < deadline else { throw HarnessError("no fdatasync started within 10 s") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    func syncData(_ handle: IOHandle, path: String) throws {
        let onLoop = WAL.isOnAnEventLoop
        state.withLock { s in
            s.calls.syncs += 1
            if onLoop { s.calls.syncsOnLoop += 1 }
        }
        if state.withLock({ $0.stall }) {
            state.withLock { $0.stalled += 1 }
            while state.withLock({ $0.stall }) { usleep(1000) }
            state.withLock { $0.stalled -= 1 }
        }
        try base.syncData(handle, path: path)
    }

    func syncDirectory(_ directory: String) throws {
        if WAL.isOnAnEventLoop { state.withLock { $0.calls.directorySyncsOnLoop += 1 } }
        try base.syncDirectory(directory)
    }

    func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        if WAL.isOnAnEventLoop { state.withLock { $0.calls.writesOnLoop += 1 } }
        try base.write(handle, bytes, at: offset, path: path)
    }

    func open(_ path: String, mode: OpenMode) throws -> IOHandle { try base.open(path, mode: mode) }
    func close(_ handle: IOHandle) { base.close(handle) }
    func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        try base.read(handle, into: buffer, at: offset, path: path)
    }
    func size(_ handle: IOHandle, path: String) throws -> Int { try base.size(handle, path: path) }
    func truncate(_ handle: IOHandle, to size: Int, path: String) throws { try base.truncate(handle, to: size, path: path) }
    func rename(_ source: String, to destination: String) throws { try base.rename(source, to: destination) }
    func remove(_ path: String) throws { try base.remove(path) }
    func list(_ directory: String) throws -> [String] { try base.list(directory) }
    func fileType(_ path: String) throws -> FileType { try base.fileType(path) }
    func createDirectory(_ directory: String) throws { try base.createDirectory(directory) }
    func lock(_ path: String) throws -> IOHandle { try base.lock(path) }
    func unlock(_ handle: IOHandle) { base.unlock(handle) }
}

/// A WAL in a temporary directory (real files unless given another FileIO) and a server for it.
struct LoopHarness {
    let wal: WAL
    let server: WALServer
    let io: WatchedFileIO
    let options: WALOptions
    let directory: String

    static func start(io base: (any FileIO)? = nil, segmentBytes: Int = 16 << 20, preallocate: Bool = true,
                      maxFollowerHoldBytes: Int = 1 << 30, maxOutputBytes: Int? = nil) async throws -> LoopHarness {
        let directory = base == nil ? FileManager.default.temporaryDirectory.appendingPathComponent("wald-loop-\(UUID())").path : "/wal"
        let io = WatchedFileIO(base: base ?? PosixFileIO())
        var options = WALOptions(directory: directory)
        options.io = io
        options.maxSegmentBytes = segmentBytes
        options.preallocate = preallocate
        options.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let wal = try await WAL.open(options)
        var serverOptions = ServerOptions()
        serverOptions.listen = []
        serverOptions.maxFollowerHoldBytes = maxFollowerHoldBytes
        if let maxOutputBytes { serverOptions.maxOutputBytes = maxOutputBytes }
        serverOptions.logger = options.logger
        let server = WALServer(wal: wal, options: serverOptions)
        var plain = options
        plain.io = base ?? PosixFileIO()
        return LoopHarness(wal: wal, server: server, io: io, options: plain, directory: directory)
    }

    /// A client on a new socketpair; `receiveBuffer` shrinks its receive buffer (and the
    /// server's send buffer) so output really queues in the server.
    func connect(receiveBuffer: Int32? = nil) throws -> TestClient {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { throw HarnessError("socketpair: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        guard server.serve(connectedSocket: fds[0], peer: "test") else { throw HarnessError("server full") }
        return TestClient(fd: fds[1])
    }

    func stop() async throws {
        io.releaseSyncs()
        await server.shutdown(timeout: .seconds(2))
        try await wal.close()
    }

    func cleanup() {
        io.releaseSyncs()
        if directory != "/wal" { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A blocking binary-protocol client on one end of a socketpair (10 s read timeout).
final class TestClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) {
        self.fd = fd
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    /// Sends one request frame; without `wait`, gives up when the socket buffer is full.
    func send(_ request: Request, wait: Bool = true) {
        var frame: [UInt8] = []
        BinaryCodec.encode(request, into: &frame)
        var offset = 0
        while offset < frame.count {
            let n = frame[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | (wait ? 0 : Int32(MSG_DONTWAIT))) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Bytes waiting to be read.
    func available() -> Int {
        var count: Int32 = 0
        _ = ioctl(fd, UInt(FIONREAD), &count)
        return Int(count) + buffer.count
    }

    /// One read(2) (blocking until something arrives), then every whole frame buffered.
    func receiveOnce() throws -> [Response] {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        let n = read(fd, &chunk, chunk.count)
        guard n > 0 else { throw HarnessError("read returned \(n) (errno \(errno))") }
        buffer.append(contentsOf: chunk[0..<n])
        var responses: [Response] = []
        while let (frame, used) = try BinaryCodec.nextFrame(in: buffer[...]) {
            responses.append(try BinaryCodec.decodeResponse(frame))
            buffer.removeFirst(used)
        }
        return responses
    }

    /// Reads `count` response frames.
    func receive(_ count: Int) throws -> [Response] {
        var responses: [Response] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while responses.count < count {
            if let (frame, used) = try BinaryCodec.nextFrame(in: buffer[...]) {
                responses.append(try BinaryCodec.decodeResponse(frame))
                buffer.removeFirst(used)
                continue
            }
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { throw HarnessError("read returned \(n) (errno \(errno)) after \(responses.count) of \(count) replies") }
            buffer.append(contentsOf: chunk[0..<n])
        }
        return responses
    }
}
