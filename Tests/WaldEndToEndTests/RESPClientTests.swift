// Redis clients nobody here wrote, against real wald processes on loopback: redis-py (RESP2,
// RESP3 and its own default) through Tests/RESP/redis_py_client.py, redis-cli, and
// redis-benchmark; and conditional appends (an expected LSN) racing over the binary and text
// protocols. `make test` installs redis-tools and a virtualenv with redis-py (.build-venv);
// without them these tests fail and say how to get them.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

private func endpoint(_ wald: WaldProcess) -> Endpoint { .tcp(host: "127.0.0.1", port: wald.port) }

/// The package root, from this file's path (Tests/WaldEndToEndTests/RESPClientTests.swift).
private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// A program the tests need: `WALD_TEST_<NAME>` if set, else the first of `candidates` that
/// exists; nil (and the test fails saying how to install it) when none does.
private func requireProgram(_ variable: String, _ candidates: [String]) throws -> String {
    if let path = ProcessInfo.processInfo.environment[variable] { return path }
    if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
    Issue.record("none of \(candidates) exists: run `make test` (it installs redis-tools and .build-venv with redis-py) or set \(variable)")
    throw CancellationError()
}

@Suite(.serialized) struct RESPClientTests {
    /// The redis-py script, once per protocol setting, against a primary, a follower of it and
    /// a wald with an auth token. It checks ~20 behaviours and prints one line per check.
    @Test(.timeLimit(.minutes(3)))
    func redisPyDrivesWaldOverRESP2AndRESP3() async throws {
        let python = try requireProgram("WALD_TEST_PYTHON", [packageRoot.path + "/.build-venv/bin/python3"])
        let primary = try WaldProcess()
        defer { primary.cleanup() }
        let follower = try WaldProcess(arguments: ["--follow", primary.address])
        defer { follower.cleanup() }
        let locked = try WaldProcess(arguments: ["--auth-token", "s3cret-token"])
        defer { locked.cleanup() }
        let script = packageRoot.path + "/Tests/RESP/redis_py_client.py"
        for proto in ["3", "2", "0"] {
            let run = try runProgram(python, [script, "--port", "\(primary.port)", "--follower-port", "\(follower.port)",
                                             "--auth-port", "\(locked.port)", "--token", "s3cret-token", "--protocol", proto],
                                     timeout: 60)
            #expect(run.status == 0 && !run.timedOut && run.stdout.hasSuffix("all checks passed\n"),
                    "redis_py_client.py --protocol \(proto) failed:\n\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count >= 12, "\(run.stdout)")
        }
        // What redis-py wrote is what a WALClient reads: every record a `data` value, in LSN order.
        let records = try await replayAll(endpoint(primary))
        #expect(records.first?.payload == Array("first record".utf8))
        #expect(records.map(\.lsn) == Array(1...UInt64(records.count)))
    }

    /// redis-cli as someone would type it, output compared to what Redis prints for a stream.
    @Test(.timeLimit(.minutes(1)))
    func redisCliAppendsReadsAndReportsErrors() async throws {
        let cli = try requireProgram("WALD_TEST_REDIS_CLI", ["/usr/bin/redis-cli"])
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        func run(_ arguments: String...) throws -> String {
            let result = try runProgram(cli, ["-p", "\(wald.port)"] + arguments, timeout: 20)
            #expect(result.status == 0 && !result.timedOut, "redis-cli \(arguments): \(result.stderr)")
            return result.stdout
        }
        #expect(try run("PING") == "PONG\n")
        #expect(try run("XADD", "wal", "*", "data", "hello") == "1-0\n")
        #expect(try run("XADD", "wal", "*", "data", "two words") == "2-0\n")
        #expect(try run("XADD", "wal", "3-0", "data", "exactly three") == "3-0\n")
        #expect(try run("XLEN", "wal") == "3\n")
        #expect(try run("XRANGE", "wal", "-", "+") == "1-0\ndata\nhello\n2-0\ndata\ntwo words\n3-0\ndata\nexactly three\n")
        #expect(try run("XREVRANGE", "wal", "+", "-", "COUNT", "1") == "3-0\ndata\nexactly three\n")
        #expect(try run("XREAD", "COUNT", "1", "STREAMS", "wal", "1") == "wal\n2-0\ndata\ntwo words\n")
        // Errors go to stdout with an ERR prefix in redis-cli's raw mode; nothing is written.
        #expect(try run("XADD", "wal", "3-0", "data", "again").hasPrefix("ERR The ID specified in XADD is equal or smaller"))
        #expect(try run("XADD", "queue", "*", "data", "x").hasPrefix("ERR "))
        #expect(try run("SET", "k", "v").hasPrefix("ERR unknown command 'SET'"))
        #expect(try run("XLEN", "wal") == "3\n")
        let records = try await replayAll(endpoint(wald))
        #expect(records.map(\.payload) == ["hello", "two words", "exactly three"].map { Array($0.utf8) })
    }

    /// redis-benchmark's XADD test, pipelined and with 16 connections: every request becomes one
    /// record holding the value, nothing lost or doubled.
    @Test(.timeLimit(.minutes(2)))
    func redisBenchmarkXADDLandsEveryRequestOnce() async throws {
        let benchmark = try requireProgram("WALD_TEST_REDIS_BENCHMARK", ["/usr/bin/redis-benchmark"])
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let value = String(repeating: "v", count: 100)
        let result = try runProgram(benchmark, ["-p", "\(wald.port)", "-n", "3000", "-c", "16", "-P", "4", "-q",
                                                "XADD", "wal", "*", "data", value], timeout: 90)
        #expect(result.status == 0 && !result.timedOut, "redis-benchmark: \(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("requests per second"), "\(result.stdout)")
        #expect(!result.stderr.contains("Could not fetch server CONFIG"), "CONFIG GET is what redis-benchmark asks first")
        let records = try await replayAll(endpoint(wald))
        #expect(records.count == 3000)
        #expect(records.allSatisfy { $0.payload == Array(value.utf8) })
    }

    /// 8 binary-protocol clients each append batches of 3 at the LSN they last saw: exactly one
    /// wins each LSN, every loser is told the next LSN, and the log is the winners' batches.
    @Test(.timeLimit(.minutes(1)))
    func conditionalAppendsRacingOverTheBinaryProtocolHaveOneWinnerEach() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let won = Locked<[UInt64: [[UInt8]]]>([:])
        let conflicts = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    let client = try await WALClient.connect(endpoint(wald))
                    defer { client.close() }
                    var next = try await client.info().lastLSN + 1
                    for round in 0..<25 {
                        let batch = (0..<3).map { Array("w\(writer) r\(round) #\($0)".utf8) }
                        do {
                            let (first, count) = try await client.append(batch: batch, expectedLSN: next)
                            #expect(first == next && count == 3)
                            won.withLock { #expect($0.updateValue(batch, forKey: first) == nil, "LSN \(first) won twice") }
                            next = first + 3
                        } catch WALClientError.server(code: .conflict, let message) {
                            conflicts.withLock { $0 += 1 }
                            // The message names the log's next LSN: try there.
                            let words = message.split(separator: " ")
                            let at = try #require(words.firstIndex(of: "is"), Comment(rawValue: message))
                            next = try #require(UInt64(words[at + 1].trimmingCharacters(in: .punctuationCharacters)), Comment(rawValue: message))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let winners = won.withLock { $0 }
        #expect(winners.count >= 25, "too few winners: \(winners.count)")
        #expect(conflicts.withLock { $0 } > 0, "8 racing writers never conflicted")
        let records = try await replayAll(endpoint(wald))
        #expect(records.count == 3 * winners.count, "a loser's batch was written")
        for (first, batch) in winners {
            #expect(records[Int(first - 1)..<Int(first + 2)].map(\.payload) == batch, "batch at \(first)")
        }
    }

    /// APPENDAT over the text protocol, and the retry that makes it worth having: the same
    /// request sent twice appends once.
    @Test(.timeLimit(.minutes(1)))
    func appendAtOverTheTextProtocolAppendsARetryOnce() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("APPENDAT 1 first\nAPPENDAT 1 first\nAPPENDAT 5 far\nAPPENDAT 2\nAPPENDAT x y\nAPPEND plain\n")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "ERR CONFLICT the append expected LSN 1 but the log's next LSN is 2; nothing was written")
        #expect(c.readLine() == "ERR CONFLICT the append expected LSN 5 but the log's next LSN is 2; nothing was written")
        #expect(c.readLine() == "OK 2")
        #expect(c.readLine()?.hasPrefix("ERR BAD_REQUEST lsn must be a non-negative integer") == true)
        #expect(c.readLine() == "OK 3")
        let records = try await replayAll(endpoint(wald))
        #expect(records.map(\.payload) == [Array("first".utf8), [], Array("plain".utf8)])
    }

    /// A client parked in XREAD BLOCK 0 that goes away is noticed at once (Redis frees a blocked
    /// client when it disconnects): its connection is gone without any append waking it.
    @Test(.timeLimit(.minutes(1)))
    func aClientThatLeavesWhileBlockedInXREADIsForgotten() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let info = try await WALClient.connect(endpoint(wald))
        defer { info.close() }
        let blockForever = "*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$3\r\nwal\r\n$1\r\n$\r\n"
        // Half-closed: the server closes without a reply.
        let halfClosed = try RawConnection(port: wald.port)
        halfClosed.send(blockForever)
        try await Task.sleep(for: .milliseconds(200))
        shutdown(halfClosed.fd, Int32(SHUT_WR))
        let (bytes, closed) = readUntilClosed(halfClosed.fd, idleSeconds: 10)
        #expect(closed && bytes.isEmpty, "half-closed while blocked: closed \(closed), \(bytes.count) bytes")
        // Gone entirely: the connection count drops back without an append.
        var gone: RawConnection? = try RawConnection(port: wald.port)
        gone!.send(blockForever)
        var counted: UInt64 = 0
        for _ in 0..<200 where counted != 2 {
            counted = try await info.info().connections
            if counted != 2 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(counted == 2)
        gone = nil  // close(2)
        var connections: UInt64 = 2
        for _ in 0..<100 where connections != 1 {
            try await Task.sleep(for: .milliseconds(50))
            connections = try await info.info().connections
        }
        #expect(connections == 1, "the blocked connection is still counted")
        #expect(try await info.info().lastLSN == 0)
    }

    /// A request larger than max_frame_bytes, even made of arguments that each fit, is refused
    /// with one error and the connection closes (it would otherwise wait for bytes never read).
    @Test(.timeLimit(.minutes(1)))
    func aRequestOverMaxFrameBytesIsRefusedAndCloses() async throws {
        let wald = try WaldProcess(arguments: ["--max-frame-bytes", "64KiB", "--max-record-bytes", "32KiB"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        let part = String(repeating: "x", count: 40_000)
        c.send("*3\r\n$4\r\nECHO\r\n$40000\r\n\(part)\r\n$40000\r\n\(part)\r\n")
        let (bytes, closed) = readUntilClosed(c.fd, idleSeconds: 10)
        #expect(String(decoding: bytes, as: UTF8.self) == "-ERR Protocol error: request larger than max_frame_bytes (65536 bytes)\r\n")
        #expect(closed)
        let other = try RawConnection(port: wald.port)
        other.send("*1\r\n$4\r\nPING\r\n")
        #expect(other.readLine() == "+PONG")
    }

    /// `resp_durability: buffered` starts RESP connections buffered: an XADD is answered once
    /// written although nothing is synced (flush interval 1 h); `CLIENT WALD-DURABILITY durable`
    /// makes the next one wait for an fdatasync, which covers both. A value that is neither is
    /// refused at start by name.
    @Test(.timeLimit(.minutes(1)))
    func respDurabilityBufferedAnswersOnceWritten() async throws {
        let wald = try WaldProcess(arguments: ["--resp-durability", "buffered", "--flush-interval", "1h"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("*5\r\n$4\r\nXADD\r\n$3\r\nwal\r\n$1\r\n*\r\n$4\r\ndata\r\n$3\r\none\r\n")
        #expect(c.readLine() == "$3")
        #expect(c.readLine() == "1-0")
        let info = try await WALClient.connect(endpoint(wald))
        defer { info.close() }
        #expect(try await info.info().durableLSN == 0, "a buffered XADD was synced although the flush interval is 1 h")
        c.send("*3\r\n$6\r\nCLIENT\r\n$15\r\nWALD-DURABILITY\r\n$7\r\ndurable\r\n")
        #expect(c.readLine() == "+OK")
        c.send("*5\r\n$4\r\nXADD\r\n$3\r\nwal\r\n$1\r\n*\r\n$4\r\ndata\r\n$3\r\ntwo\r\n")
        #expect(c.readLine() == "$3")
        #expect(c.readLine() == "2-0")
        #expect(try await info.info().durableLSN == 2)

        let directory = NSTemporaryDirectory() + "wald-e2e-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let refused = try runTool("wald", ["--data-dir", directory, "--listen", "127.0.0.1:0", "--resp-durability", "sometimes"],
                                  timeout: 30)
        #expect(refused.status != 0 && refused.stderr.contains("invalid --resp-durability \"sometimes\": expected durable or buffered"),
                "\(refused.stderr)")
    }
}
