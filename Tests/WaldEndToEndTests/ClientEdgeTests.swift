// The client side of the wire's edges: WALClient and walctl against a server that answers
// with numbers that cannot be (an APPENDED whose LSNs run past 2^64 − 1), requests that
// cannot be one frame, and walctl flags out of range. Each is a clear error, never a trap.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A one-connection server on 127.0.0.1 that answers every frame it reads with `reply`.
final class LyingServer: @unchecked Sendable {
    // @unchecked: `socket` and `port` are set in init and only read afterwards; the thread owns the rest.
    private let socket: SilentListener
    let port: UInt16

    /// With `byteInterval`, the reply goes out one byte at a time, that far apart (a slow link).
    init(reply: [UInt8], byteInterval: Duration? = nil) throws {
        socket = try SilentListener()
        port = socket.port
        let listener = socket.fd
        Thread {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            defer { close(client) }
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(client, &chunk, chunk.count, 0)
                if n <= 0 { return }
                pending += chunk[0..<n]
                while pending.count >= 4 {
                    let size = Int(pending[0]) << 24 | Int(pending[1]) << 16 | Int(pending[2]) << 8 | Int(pending[3])
                    guard pending.count >= 4 + size else { break }
                    pending.removeFirst(4 + size)
                    if let byteInterval {
                        for byte in reply {
                            Thread.sleep(forTimeInterval: Double(byteInterval / .milliseconds(1)) / 1000)
                            _ = withUnsafeBytes(of: byte) { send(client, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                        }
                        continue
                    }
                    _ = reply.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
            }
        }.start()
    }
}

@Suite(.serialized) struct ClientEdgeTests {
    /// A follow stream only waits, so a peer that vanished without a FIN or RST (power lost, a
    /// NAT that forgot the flow) was waited for for ever: TCP keepalive now ends it in ~25 s.
    @Test(.timeLimit(.minutes(1)))
    func clientConnectionsProbeAVanishedPeerWithKeepalive() throws {
        let listener = try SilentListener()
        let fd = try WALClient.connectSocket(.tcp(host: "127.0.0.1", port: listener.port), token: nil)
        defer { close(fd) }
        func option(_ level: Int32, _ name: Int32) -> Int32 {
            var value: Int32 = -1
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, level, name, &value, &size)
            return value
        }
        #expect(option(SOL_SOCKET, SO_KEEPALIVE) == 1)
        let tcp = Int32(IPPROTO_TCP)
        #expect(option(tcp, TCP_KEEPIDLE) == 10 && option(tcp, TCP_KEEPINTVL) == 5 && option(tcp, TCP_KEEPCNT) == 3)
    }

    /// The reply timeout measures silence: a reply still arriving, byte by byte, past the
    /// timeout is not cut (a large record over a slow link used to time out mid-frame).
    @Test(.timeLimit(.minutes(1)))
    func aReplyThatKeepsArrivingIsNotTimedOut() async throws {
        let echo = Array("ok".utf8)
        // PONG with the echo: 7 bytes, 300 ms apart (longer than the client's 250 ms receive
        // timeout, so it looks at the clock between them): 2.1 s against a 1 s timeout.
        let server = try LyingServer(reply: frame(0x86, echo), byteInterval: .milliseconds(300))
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: server.port), timeout: .seconds(1))
        defer { client.close() }
        let started = ContinuousClock.now
        #expect(try await client.ping(echo) == echo)
        #expect(ContinuousClock.now - started > .seconds(1), "the reply came faster than the timeout: this proves nothing")
    }

    @Test(.timeLimit(.minutes(1)))
    func anAppendedReplyWhoseLSNsRunPastTheLastIsAProtocolViolationNotATrap() async throws {
        // APPENDED first 2^64 − 1, count 2: the second LSN would be 2^64.
        let server = try LyingServer(reply: frame(0x81, be64(.max) + be32(2)))
        let result = try runTool("walctl", ["append", "--server", "127.0.0.1:\(server.port)", "a", "b"], timeout: 20)
        #expect(result.exitedNormally, "walctl trapped (signal \(result.status)): \(result.stderr)")
        #expect(result.status == 1 && result.stdout.isEmpty, "walctl exited \(result.status) printing \(result.stdout)")
        #expect(result.stderr.contains("protocol violation") && result.stderr.contains("18446744073709551615"), "\(result.stderr)")
    }

    @Test(.timeLimit(.minutes(1)))
    func anAppendedReplyForAnotherCountIsAProtocolViolation() async throws {
        let server = try LyingServer(reply: frame(0x81, be64(7) + be32(5)))
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: server.port))
        defer { client.close() }
        await #expect(throws: WALClientError.self) { try await client.append(batch: [[1], [2]]) }
        do {
            _ = try await client.append(batch: [[1], [2]])
        } catch let error as WALClientError {
            guard case .protocolViolation(let text) = error else {
                Issue.record("expected a protocol violation, got \(error)")
                return
            }
            #expect(text.contains("count 5") && text.contains("2 records"), "\(text)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aRequestTooLargeForOneFrameFailsInTheClientAndTheConnectionStays() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        let huge = [UInt8](repeating: 7, count: 17 << 20)
        do {
            try await client.append(huge)
            Issue.record("a 17 MiB append was acknowledged")
        } catch let error as WALClientError {
            guard case .requestTooLarge(let bytes, let limit) = error else {
                Issue.record("expected requestTooLarge, got \(error)")
                return
            }
            #expect(bytes > limit && limit == 16_777_215)
        }
        #expect(try await client.append(Array("still connected".utf8)) == 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func aCallWhoseFrameTheServerRefusesMidSendFailsOnceAndTheClientLives() async throws {
        // The server's frame limit is 1 MiB: it answers TOO_LARGE from the length field and closes
        // while the client is still sending 8 MiB. The reply and the failed send both reach the
        // call; it used to be resumed twice, which kills the process.
        let wald = try WaldProcess(arguments: ["--max-frame-bytes", "1MiB", "--max-record-bytes", "512KiB"])
        defer { wald.cleanup() }
        for _ in 0..<5 {
            let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
            defer { client.close() }
            do {
                try await client.append([UInt8](repeating: 1, count: 8 << 20))
                Issue.record("an 8 MiB frame was accepted under a 1 MiB limit")
            } catch let error as WALClientError {
                switch error {
                case .server(code: .tooLarge, _), .connectionClosed: break
                default: Issue.record("unexpected \(error)")
                }
            }
        }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        #expect(try await client.append(Array("fits".utf8)) == 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func walctlAppendSplitsStdinIntoFramesThatFit() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        // 1000 lines of 20 KiB: 20 MiB, more than one frame may carry.
        let path = NSTemporaryDirectory() + "wald-e2e-lines-\(UUID().uuidString)"
        let line = String(repeating: "y", count: 20 * 1024) + "\n"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(String(repeating: line, count: 1000).utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try runTool("walctl", ["append", "--server", "127.0.0.1:\(wald.port)"], timeout: 60,
                                 standardInput: FileHandle(forReadingAtPath: path))
        #expect(result.status == 0, "walctl append exited \(result.status): \(result.stderr)")
        #expect(result.stdout.split(separator: "\n") == (1...1000).map { Substring("\($0)") })
    }

    @Test(arguments: [["--duration", "-1"], ["--duration", "nan"], ["--duration", "1e300"], ["--duration", "0"],
                      ["--count", "5", "--size", "16777216"]])
    func walctlBenchRefusesFlagsOutOfRangeBeforeConnecting(flags: [String]) throws {
        let arguments = ["bench", "--server", "127.0.0.1:9", "--clients", "1", "--pipeline", "1"]
            + (flags.contains("--size") ? [] : ["--size", "10"]) + flags
        let result = try runTool("walctl", arguments, timeout: 20)
        #expect(result.exitedNormally, "walctl bench \(flags) trapped (signal \(result.status)): \(result.stderr)")
        #expect(result.status == 64, "walctl bench \(flags) exited \(result.status): \(result.stderr)")
        #expect(result.stderr.contains(flags.contains("--size") ? "--size" : "--duration"), "\(result.stderr)")
    }
}

/// A TCP socket that listens but never accepts or answers: connects complete (the kernel's
/// backlog) and then nothing ever comes back.
final class SilentListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 16) == 0 else { throw RawError.connect(errno) }
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(fd) }
}

/// Serves one connection on 127.0.0.1: reads what the client sends for a moment, then sends
/// `reply` (in two pieces) and closes, or, with `hold`, stays open and silent until `release()`.
final class ScriptedPeer: @unchecked Sendable {
    // @unchecked: `socket` and `port` are set in init; the thread owns the accepted socket.
    let port: UInt16
    private let socket: SilentListener
    private let released = Locked(false)

    init(reply: [UInt8], hold: Bool) throws {
        socket = try SilentListener()
        port = socket.port
        let (listener, released) = (socket.fd, self.released)
        Thread {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            defer { close(client) }
            var pfd = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            var chunk = [UInt8](repeating: 0, count: 65536)
            if poll(&pfd, 1, 20) > 0 { _ = recv(client, &chunk, chunk.count, 0) }
            let half = reply.count / 2
            _ = reply[..<half].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            _ = reply[half...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            while hold && !released.withLock({ $0 }) { usleep(10_000) }
        }.start()
    }

    func release() { released.withLock { $0 = true } }

    deinit { release() }
}

@Suite struct ClientArbitraryBytesTests {
    /// Bytes a server could send: garbage, text, and runs of frames with real and made-up
    /// opcodes, right and wrong lengths, cut anywhere.
    static func serverBytes(_ rng: inout SeededGenerator) -> [UInt8] {
        let opcodes: [UInt8] = [0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0xFF, 0x00, 0x01, 0x7F]
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return random(Int.random(in: 0...64, using: &rng))
        case 1: return Array(["ERR BUSY too many connections\r\n", "+PONG\r\n", "-ERR unknown\r\n", "HTTP/1.0 200 OK\r\n\r\n"]
            .randomElement(using: &rng)!.utf8)
        default:
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let opcode = opcodes.randomElement(using: &rng)!
                var body: [UInt8]
                switch opcode {
                case 0x81: body = random(8) + [0, 0, 0, UInt8.random(in: 0...3, using: &rng)]
                case 0x82: body = [0, 0, 0, 0, 0, 0, 0, UInt8.random(in: 0...9, using: &rng)] + random(Int.random(in: 0...5, using: &rng))
                case 0x83, 0x84, 0x87, 0x89: body = random(Int.random(in: 7...9, using: &rng))
                case 0x85: body = Array("{\"last_lsn\":".utf8) + random(Int.random(in: 0...6, using: &rng))
                case 0xFF: body = [0, UInt8.random(in: 0...12, using: &rng)] + Array("no".utf8)
                default: body = random(Int.random(in: 0...12, using: &rng))
                }
                var length = UInt32(1 + body.count)
                if Int.random(in: 0..<8, using: &rng) == 0 { length = UInt32.random(in: 0...40, using: &rng) }
                if Int.random(in: 0..<16, using: &rng) == 0 { length = UInt32.random(in: 0...UInt32.max, using: &rng) }
                bytes += be32(length) + [opcode] + body
            }
            if Int.random(in: 0..<3, using: &rng) == 0 { bytes.removeLast(Int.random(in: 0...min(bytes.count, 9), using: &rng)) }
            return bytes
        }
    }

    /// Whatever a peer sends, every call on WALClient ends (returns or throws) once, and the
    /// process lives: no continuation resumed twice or never, no trap on a length, a count or
    /// an LSN, no hang (a silent peer meets the timeout).
    @Test(.timeLimit(.minutes(2)))
    func everyCallEndsOnceWhateverTheServerSends() async throws {
        let seed = testSeed()
        var rng = SeededGenerator(seed: seed)
        for iteration in 0..<150 {
            let silent = iteration % 25 == 24
            let peer = try ScriptedPeer(reply: silent ? [] : Self.serverBytes(&rng), hold: silent || Bool.random(using: &rng))
            defer { peer.release() }
            let client: WALClient
            do {
                client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: peer.port), timeout: .milliseconds(300))
            } catch {
                continue
            }
            let calls = Int.random(in: 1...6, using: &rng)
            let kinds = (0..<calls).map { _ in Int.random(in: 0..<7, using: &rng) }
            let ended = Locked(0)
            await withTaskGroup(of: Void.self) { group in
                for kind in kinds {
                    group.addTask {
                        switch kind {
                        case 0: _ = try? await client.ping([1, 2, 3])
                        case 1: _ = try? await client.append(batch: [[7], [8, 9]])
                        case 2: _ = try? await client.info()
                        case 3: _ = try? await client.sync()
                        case 4: _ = try? await client.truncate(before: 5)
                        case 5: do { for try await _ in client.replay(from: 1) {} } catch {}
                        default:
                            // A follow stream waits for records without a timeout: end it from here.
                            let stop = Task {
                                try? await Task.sleep(for: .milliseconds(400))
                                client.close()
                            }
                            do { for try await _ in client.follow(from: 1) {} } catch {}
                            stop.cancel()
                        }
                        ended.withLock { $0 += 1 }
                    }
                }
            }
            client.close()
            #expect(ended.withLock { $0 } == calls, "seed \(seed) iteration \(iteration)")
        }
    }
}
