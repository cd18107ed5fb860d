// walctl in pipes and with bytes that are not text, through the built binaries and real pipes:
// `replay --follow` writes each record as it arrives and says (with a non-zero status) when the
// stream drops, or reconnects; `replay` and `dump` print the same binary-safe formats; `append`
// takes stdin lines byte for byte; a failed batch says which LSNs went in.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A walctl (or other built tool) running in the background with its stdout on a real pipe
/// (WALTestSupport's `SpawnedChild`: posix_spawn and waitpid on this pid).
final class PipedTool: @unchecked Sendable {
    // @unchecked: used only from the test that owns it.
    let process: SpawnedChild
    private let output: Int32
    private let stderrPath = NSTemporaryDirectory() + "wald-e2e-piped-\(UUID().uuidString).err"
    private var received: [UInt8] = []

    init(_ name: String, _ arguments: [String]) throws {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SpawnError(description: "pipe: errno \(errno)") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let errorFD = open(stderrPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer {
            close(ends[1])
            if errorFD >= 0 { close(errorFD) }
        }
        guard errorFD >= 0 else {
            close(ends[0])
            throw SpawnError(description: "open \(stderrPath): errno \(errno)")
        }
        do {
            process = try SpawnedChild(
                buildProductsDirectory().appendingPathComponent(name).path, arguments,
                environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") && !$0.key.hasPrefix("WALCTL_") },
                outputFD: ends[1], errorFD: errorFD)
        } catch {
            close(ends[0])
            throw error
        }
        output = ends[0]
    }

    deinit { close(output) }

    var stderrText: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Reads the pipe until `lines` complete lines have arrived, or `seconds` pass; returns the lines so far.
    func readLines(_ lines: Int, seconds: Int32 = 20) -> [String] {
        let deadline = ContinuousClock.now + .seconds(Int(seconds))
        while received.filter({ $0 == 10 }).count < lines && ContinuousClock.now < deadline {
            var pfd = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            received += chunk[0..<n]
        }
        return String(decoding: received, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Waits for exit (SIGKILL after `seconds`); returns the status, nil when it had to be killed.
    func waitForExit(seconds: Double = 20) -> Int32? {
        process.waitUntilExit(seconds: seconds) ? process.terminationStatus : nil
    }

    func kill() {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: stderrPath)
    }
}

@Suite(.serialized) struct WalctlPipeTests {
    /// Into a pipe, records used to sit in stdio's 4 KiB buffer: nothing arrived for seconds.
    @Test(.timeLimit(.minutes(1)))
    func replayFollowIntoAPipeWritesEachRecordAsItArrivesAndFailsWhenTheServerStops() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        try await client.append(Array("before".utf8))
        let follow = try PipedTool("walctl", ["replay", "--server", wald.address, "--follow"])
        defer { follow.kill() }
        #expect(follow.readLines(1) == ["1\tbefore"])
        try await client.append(Array("live".utf8))
        #expect(follow.readLines(2) == ["1\tbefore", "2\tlive"], "the live record did not come through the pipe")
        #expect(follow.process.isRunning)
        // The server stops: the stream ends, and walctl must say so and fail, not exit 0.
        #expect(wald.stop(signal: SIGTERM) == 0)
        let status = follow.waitForExit()
        #expect(status == 1, "walctl replay --follow exited \(String(describing: status)) when the server stopped")
        #expect(follow.stderrText.contains("the follow stream ended after LSN 2") && follow.stderrText.contains("--from 3"),
                "\(follow.stderrText)")
    }

    @Test(.timeLimit(.minutes(1)))
    func replayFollowWithReconnectResumesAtTheNextLSNAfterARestart() async throws {
        let port = try freeLoopbackPort()
        let directory = NSTemporaryDirectory() + "wald-e2e-reconnect-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var wald = try WaldProcess(dataDirectory: directory, arguments: ["--listen", "127.0.0.1:\(port)"])
        try await WALClient.connect(.tcp(host: "127.0.0.1", port: port)).append(Array("one".utf8))
        let follow = try PipedTool("walctl", ["replay", "--server", "127.0.0.1:\(port)", "--follow", "--reconnect", "--timeout", "2"])
        defer { follow.kill() }
        #expect(follow.readLines(1) == ["1\tone"])
        #expect(wald.stop(signal: SIGTERM) == 0)
        wald = try WaldProcess(dataDirectory: directory, arguments: ["--listen", "127.0.0.1:\(port)"])
        defer { wald.cleanup() }
        try await WALClient.connect(.tcp(host: "127.0.0.1", port: port)).append(Array("two".utf8))
        #expect(follow.readLines(2) == ["1\tone", "2\ttwo"], "stderr: \(follow.stderrText)")
        #expect(follow.process.isRunning)
        #expect(follow.stderrText.contains("reconnecting to resume at LSN 2"), "\(follow.stderrText)")
    }

    /// Control bytes, newlines and invalid UTF-8 went to the terminal raw (U+FFFD for invalid
    /// UTF-8), breaking the one-line-per-record layout; replay's JSON lacked dump's crc32c.
    @Test(.timeLimit(.minutes(1)))
    func replayAndDumpPrintTheSameBinarySafeFormats() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let payloads: [[UInt8]] = [
            Array("plain text".utf8), Array("two\nlines".utf8), [0x1B] + Array("[2J".utf8), [0x61, 0xE9, 0x62],
            Array("hex:41".utf8), Array("tab\there".utf8), [], Array("naïve".utf8),
        ]
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        for record in payloads { try await client.append(record) }
        client.close()
        var replayed: [String: String] = [:]
        for format in ["text", "json", "hex", "raw"] {
            let result = try runTool("walctl", ["replay", "--server", wald.address, "--format", format])
            #expect(result.status == 0, "\(result.stderr)")
            replayed[format] = result.stdout
        }
        let text = try #require(replayed["text"]).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(text == ["1\tplain text", "2\thex:74776f0a6c696e6573", "3\thex:1b5b324a", "4\thex:61e962", "5\thex:6865783a3431",
                         "6\thex:7461620968657265", "7\t", "8\tnaïve", ""], "\(text)")
        let json = try #require(replayed["json"]).split(separator: "\n")
        #expect(json.count == payloads.count)
        for (line, expected) in zip(json, payloads) {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            #expect(Set(object.keys) == ["lsn", "size", "crc32c", "payload_base64"], "\(line)")
            #expect((object["size"] as? Int) == expected.count)
            #expect((object["payload_base64"] as? String).flatMap { Data(base64Encoded: $0) } == Data(expected), "\(line)")
            #expect((object["crc32c"] as? String)?.count == 10, "\(line)")
        }
        #expect(replayed["hex"]?.split(separator: "\n").dropFirst(3).first == "4\t61e962")
        let replayRaw = try rawOutput(["replay", "--server", wald.address, "--format", "raw"])
        #expect(replayRaw == payloads.flatMap { $0 })
        #expect(wald.stop(signal: SIGTERM) == 0)
        for format in ["text", "json", "hex"] {
            let dump = try runTool("walctl", ["dump", wald.dataDirectory, "--format", format])
            #expect(dump.status == 0, "\(dump.stderr)")
            #expect(dump.stdout == replayed[format], "dump --format \(format) differs from replay:\n\(dump.stdout)\n\(replayed[format] ?? "")")
        }
        #expect(try rawOutput(["dump", wald.dataDirectory, "--format", "raw"]) == replayRaw)
    }

    /// walctl's stdout as bytes (raw payloads are not text).
    private func rawOutput(_ arguments: [String]) throws -> [UInt8] {
        let path = NSTemporaryDirectory() + "wald-e2e-raw-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try runTool("walctl", arguments, standardOutput: FileHandle(forWritingAtPath: path))
        #expect(result.status == 0, "walctl \(arguments): \(result.stderr)")
        return Array(FileManager.default.contents(atPath: path) ?? Data())
    }

    /// In line mode `\xe9` was stored as `ef bf bd` (stdin decoded as UTF-8).
    @Test(.timeLimit(.minutes(1)))
    func appendTakesStdinLinesByteForByte() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let input: [UInt8] = [0x61, 0xE9, 0x0A, 0x62, 0x0D, 0x0A, 0x0A, 0x00, 0xFF, 0x0A, 0x6C, 0x61, 0x73, 0x74]
        let result = try runTool("walctl", ["append", "--server", wald.address], input: input)
        #expect(result.status == 0 && result.stdout == "1\n2\n3\n4\n5\n", "\(result.stdout) \(result.stderr)")
        let records = try await replayAll(.tcp(host: "127.0.0.1", port: wald.port))
        #expect(records.map(\.payload) == [[0x61, 0xE9], [0x62, 0x0D], [], [0x00, 0xFF], Array("last".utf8)])
        let raw = try runTool("walctl", ["append", "--server", wald.address, "--raw"], input: input)
        #expect(raw.status == 0 && raw.stdout == "6\n")
        #expect(try await replayAll(.tcp(host: "127.0.0.1", port: wald.port), from: 6).first?.payload == input)
    }

    /// Batches 1–1000 go in, the second batch holds a record over max_record_bytes: the error
    /// must say which LSNs were written and that nothing after them was.
    @Test(.timeLimit(.minutes(1)))
    func aFailureInTheMiddleOfAMultiBatchAppendSaysWhichLSNsWereWritten() async throws {
        let wald = try WaldProcess(arguments: ["--max-record-bytes", "1KiB"])
        defer { wald.cleanup() }
        var lines = (1...1500).map { "line \($0)" }
        lines[1199] = String(repeating: "z", count: 2000)
        let result = try runTool("walctl", ["append", "--server", wald.address], input: Array((lines.joined(separator: "\n") + "\n").utf8))
        #expect(result.status == 1)
        #expect(result.stdout.split(separator: "\n").count == 1000 && result.stdout.hasSuffix("1000\n"))
        #expect(result.stderr.contains("the first 1000 records were appended as LSN 1...1000"), "\(result.stderr)")
        #expect(result.stderr.contains("records 1001...1500 were not appended, nor any after them"), "\(result.stderr)")
        #expect(try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port)).info().lastLSN == 1000)
    }
}
