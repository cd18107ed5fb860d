// The client side of the wire's edges: WALClient and walctl against a server that answers
// with numbers that cannot be (an APPENDED whose LSNs run past 2^64 − 1), requests that
// cannot be one frame, and walctl flags out of range. Each is a clear error, never a trap.
import Foundation
import Testing
import WALClient
#if canImport(Glibc)
import Glibc
#endif

/// A one-connection server on 127.0.0.1 that answers every frame it reads with `reply`.
final class LyingServer: @unchecked Sendable {
    // @unchecked: `fd` and `port` are set in init and only read afterwards; the thread owns the rest.
    let fd: Int32
    let port: UInt16

    init(reply: [UInt8]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 4) == 0 else { throw RawError.connect(errno) }
        port = UInt16(bigEndian: address.sin_port)
        let listener = fd
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
                    _ = reply.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
            }
        }.start()
    }

    deinit { close(fd) }
}

@Suite(.serialized) struct ClientEdgeTests {
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
