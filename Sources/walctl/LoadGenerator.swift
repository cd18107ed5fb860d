// A closed-loop append load for benchmarks (`walctl bench`): C connections with P appends
// in flight on each, driven by one thread with poll(2) like redis-benchmark, so the client
// spends as little CPU as possible on the machine it shares with the server.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import WALClient
import WALProtocol
import WALSystem

public struct LoadResult: Sendable {
    public var completed: UInt64 = 0
    public var errors: UInt64 = 0
    public var seconds: Double = 0
    /// Latency of each acknowledged append, in microseconds.
    public var latenciesMicros: [UInt32] = []
    public var firstError: String?
}

public enum LoadGenerator {
    /// Runs until `count` appends completed (when non-nil) or `duration` elapsed.
    /// `progress` is called about every 500 ms with (completed, elapsed seconds). With a
    /// `timeout`, connecting and each wait for a reply are bounded: a server that stops
    /// answering ends the run with every append in flight counted as an error.
    public static func run(
        endpoint: Endpoint, token: String?, clients: Int, pipeline: Int, size: Int, buffered: Bool,
        count: UInt64?, duration: Double?, timeout: Duration? = nil, progress: (UInt64, Double) -> Void
    ) throws -> LoadResult {
        var frame: [UInt8] = []
        let payload = ArraySlice((0..<max(size, 0)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let request = Request.append(records: [payload], buffered: buffered)
        let length = BinaryCodec.encodedLength(of: request)
        guard length <= ProtocolLimits.maxFrameLength else {
            throw WALClientError.requestTooLarge(bytes: length, limit: ProtocolLimits.maxFrameLength)
        }
        BinaryCodec.encode(request, into: &frame)

        struct Peer {
            var fd: Int32
            var sent: [UInt64] = []  // send times (ns) of requests in flight, FIFO
            var sentHead = 0
            var input: [UInt8] = []
        }
        var peers: [Peer] = []
        defer { for peer in peers { Sockets.close(peer.fd) } }
        for _ in 0..<clients {
            let fd = try WALClient.openSocket(endpoint, timeout: timeout)
            if let token {
                var auth: [UInt8] = []
                BinaryCodec.encode(Request.auth(token: ArraySlice(token.utf8)), into: &auth)
                _ = Sockets.sendAll(fd, auth)
                // Read the OK (9 bytes: length 1 + opcode, or an error frame).
                var reply = [UInt8](repeating: 0, count: 5)
                _ = reply.withUnsafeMutableBytes { Sockets.receive(fd, into: $0) }
            }
            peers.append(Peer(fd: fd))
        }
        var result = LoadResult()
        result.latenciesMicros.reserveCapacity(Int(min(count ?? 1_000_000, 50_000_000)))
        let start = now()
        // A duration that is no number of seconds, or one beyond a year, cannot overflow the clock.
        let deadline = duration.map { start + UInt64(($0.isFinite ? min(max($0, 0), 31_536_000) : 0) * 1e9) }
        var issued: UInt64 = 0
        func mayIssue() -> Bool {
            if let count { return issued < count }
            return now() < deadline!
        }
        // Fill every pipeline.
        for index in peers.indices {
            var burst: [UInt8] = []
            for _ in 0..<pipeline where mayIssue() {
                burst.append(contentsOf: frame)
                peers[index].sent.append(now())
                issued += 1
            }
            _ = Sockets.sendAll(peers[index].fd, burst)
        }
        var pollSet = peers.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var lastProgress = start
        var lastReply = start
        let timeoutNanos = timeout.map { UInt64($0.components.seconds) * 1_000_000_000 + UInt64($0.components.attoseconds / 1_000_000_000) }
        var inFlight = Int(issued)
        while inFlight > 0 {
            let ready = poll(&pollSet, nfds_t(pollSet.count), 100)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { break }
            if let timeoutNanos, now() - lastReply >= timeoutNanos {
                result.errors += UInt64(inFlight)
                result.firstError = result.firstError
                    ?? "no reply within \(WALClient.seconds(timeout!)) s; \(inFlight) appends in flight given up"
                break
            }
            for index in pollSet.indices where pollSet[index].revents != 0 {
                pollSet[index].revents = 0
                let n: Int
                switch Sockets.read(peers[index].fd, into: buffer) {
                case .bytes(let count): n = count
                case .wouldBlock: continue
                case .endOfFile, .failed: n = 0
                }
                if n == 0 {
                    // Connection lost: everything in flight on it failed.
                    let lost = peers[index].sent.count - peers[index].sentHead
                    result.errors += UInt64(lost)
                    inFlight -= lost
                    result.firstError = result.firstError ?? "connection closed by server"
                    peers[index].sentHead = peers[index].sent.count
                    pollSet[index].fd = -1
                    continue
                }
                peers[index].input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                lastReply = now()
                var consumed = 0
                var replies: [UInt8] = []
                while let (reply, used) = try? BinaryCodec.nextFrame(in: peers[index].input[consumed...]) {
                    consumed += used
                    let sentAt = peers[index].sent[peers[index].sentHead]
                    peers[index].sentHead += 1
                    inFlight -= 1
                    let t = now()
                    if reply.opcode == Opcode.appended.rawValue {
                        result.completed += 1
                        result.latenciesMicros.append(UInt32(min((t - sentAt) / 1000, UInt64(UInt32.max))))
                    } else {
                        result.errors += 1
                        if result.firstError == nil, let response = try? BinaryCodec.decodeResponse(reply),
                           case .error(let code, let message) = response {
                            result.firstError = "\(code.name): \(message)"
                        }
                    }
                    if mayIssue() {
                        replies.append(contentsOf: frame)
                        peers[index].sent.append(t)
                        issued += 1
                        inFlight += 1
                    }
                }
                if consumed > 0 { peers[index].input.removeFirst(consumed) }
                if peers[index].sentHead > 4096 {
                    peers[index].sent.removeFirst(peers[index].sentHead)
                    peers[index].sentHead = 0
                }
                if !replies.isEmpty && !Sockets.sendAll(peers[index].fd, replies) {
                    pollSet[index].fd = -1
                }
            }
            let t = now()
            if t - lastProgress >= 500_000_000 {
                lastProgress = t
                progress(result.completed, Double(t - start) / 1e9)
            }
        }
        result.seconds = Double(now() - start) / 1e9
        return result
    }

    private static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}
