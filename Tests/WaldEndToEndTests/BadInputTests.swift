// Clients that misbehave: garbage, silence, a replay they never read, bad arguments, frames
// cut off mid-way. Each gets the answer docs/protocol.md gives, while a background writer on
// another connection keeps getting acknowledgements, and nothing of theirs reaches the log.
import Foundation
import Testing
import WALClient
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct BadInputTests {
    /// Opcodes of the documented responses.
    static let responseOpcodes: Set<UInt8> = [0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0xFF]

    @Test(.timeLimit(.minutes(1)))
    func randomBinaryGarbageGetsOnlyDocumentedRepliesAndAppendsNothing() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let writer = try await BackgroundWriter.start(endpoint)
        await writer.expectProgress("before the garbage")

        for seed in UInt64(1)...6 {
            var random = SeededGenerator(seed: seed)
            var garbage: [UInt8]
            if seed % 2 == 1 {
                // Unstructured: 0x00 and then anything (usually announces a frame that never completes).
                garbage = [0] + (0..<Int.random(in: 1000...65536, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                // Frames with plausible lengths but random opcodes and bodies.
                garbage = []
                for _ in 0..<200 {
                    let body = (0..<Int.random(in: 0...40, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                    garbage += frame(UInt8.random(in: 0...255, using: &random), body)
                }
            }
            let c = try RawConnection(port: wald.port)
            c.send(garbage)
            shutdown(c.fd, Int32(SHUT_WR))
            let (bytes, closed) = readUntilClosed(c.fd)
            #expect(closed, "seed \(seed): the server neither closed the connection nor answered for 20 s")
            let (frames, rest) = splitFrames(bytes)
            #expect(rest == 0, "seed \(seed): \(rest) bytes after the last whole reply frame")
            for reply in frames {
                #expect(Self.responseOpcodes.contains(reply.opcode), "seed \(seed): reply opcode \(reply.opcode) is not documented")
                if reply.opcode == 0xFF {
                    let code = reply.body.count >= 2 ? errorCode(reply.body) : 0
                    #expect((1...8).contains(code), "seed \(seed): error code \(code) is not documented")
                }
                #expect(reply.opcode != 0x81, "seed \(seed): garbage was appended")
            }
            await writer.expectProgress("after garbage seed \(seed)")
        }

        let acked = await writer.stop()
        let records = try await replayAll(endpoint)
        expectLog(records, holds: acked, "after binary garbage")
        #expect(records.count == acked.count, "the log holds \(records.count - acked.count) records the writer did not send")
    }

    @Test(.timeLimit(.minutes(1)))
    func textGarbageIsAnsweredLineByLineWithBadRequestAndAppendsNothing() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let writer = try await BackgroundWriter.start(endpoint)
        await writer.expectProgress("before the garbage")

        let letters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        for seed in UInt64(11)...13 {
            var random = SeededGenerator(seed: seed)
            var garbage: [UInt8] = []
            let lines = 300
            for _ in 0..<lines {
                // A letter, then random bytes other than the line end (they may be any byte,
                // including invalid UTF-8 and NUL), then "\n".
                garbage.append(letters.randomElement(using: &random)!)
                for _ in 0..<Int.random(in: 0...300, using: &random) {
                    var byte = UInt8.random(in: 0...255, using: &random)
                    if byte == 10 { byte = 11 }
                    garbage.append(byte)
                }
                garbage.append(10)
            }
            let c = try RawConnection(port: wald.port)
            c.send(garbage)
            shutdown(c.fd, Int32(SHUT_WR))
            let (bytes, closed) = readUntilClosed(c.fd)
            #expect(closed, "seed \(seed): the connection was not closed after the client's end of input")
            let answered = splitLines(bytes)
            #expect(answered.count == lines, "seed \(seed): \(answered.count) reply lines for \(lines) unknown commands")
            let unexpected = answered.filter { !$0.hasPrefix("ERR BAD_REQUEST ") }
            #expect(unexpected.isEmpty, "seed \(seed): replies other than ERR BAD_REQUEST: \(unexpected.prefix(3))")
            await writer.expectProgress("after text garbage seed \(seed)")
        }

        // The same connection stays usable after an unknown command.
        let c = try RawConnection(port: wald.port)
        c.send("Xyzzy \u{1}\u{2}\nPING\n")
        #expect(c.readLine()?.hasPrefix("ERR BAD_REQUEST ") == true)
        #expect(c.readLine() == "PONG")

        let acked = await writer.stop()
        let records = try await replayAll(endpoint)
        expectLog(records, holds: acked, "after text garbage")
        #expect(records.count == acked.count, "the log holds \(records.count - acked.count) records the writer did not send")
    }

    @Test(.timeLimit(.minutes(1)))
    func silentClientStaysConnectedWithoutDisturbingOthers() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let silent = try RawConnection(port: wald.port)
        let writer = try await BackgroundWriter.start(endpoint)
        for round in 0..<4 {
            await writer.expectProgress("while a client says nothing (round \(round))", more: 20)
            #expect(isOpenAndQuiet(silent.fd), "the silent connection was answered or closed")
        }
        let probe = try await WALClient.connect(endpoint)
        defer { probe.close() }
        #expect(try await probe.info().connections == 3)  // silent, writer, probe

        // It was kept: it can still speak.
        silent.send(frame(0x05, Array("late".utf8)))
        let pong = try #require(silent.readFrame())
        #expect(pong.opcode == 0x86 && pong.body == Array("late".utf8))
        let acked = await writer.stop()
        expectLog(try await replayAll(endpoint), holds: acked, "after the silent client")
    }

    @Test(.timeLimit(.minutes(2)))
    func clientThatNeverReadsItsReplayStallsAloneWithBoundedServerMemory() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let recordSize = 10_000
        let bigRecords = 2000  // 20 MB
        let filler = try await WALClient.connect(endpoint)
        for batch in 0..<(bigRecords / 100) {
            let records = (0..<100).map { bigPayload(batch * 100 + $0 + 1, size: recordSize) }
            let (first, _) = try await filler.append(batch: records)
            #expect(first == UInt64(batch * 100 + 1))
        }
        filler.close()
        let pid = wald.process.processIdentifier
        let rssBefore = residentKiB(pid: pid) ?? 0

        let writer = try await BackgroundWriter.start(endpoint)
        await writer.expectProgress("before the replay")

        let stuck = try RawConnection(port: wald.port)
        var small: Int32 = 16384
        setsockopt(stuck.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        stuck.send(frame(0x02, be64(1) + be64(0) + [0]))

        var peakKiB = rssBefore
        for round in 0..<10 {
            await writer.expectProgress("while a replay is not being read (round \(round))", more: 10)
            peakKiB = max(peakKiB, residentKiB(pid: pid) ?? 0)
        }
        // Others can also replay while that one is stuck.
        let other = try await WALClient.connect(endpoint)
        var seen = 0
        for try await record in other.replay(from: 1, count: 300) {
            #expect(record.payload == bigPayload(Int(record.lsn), size: recordSize))
            seen += 1
        }
        other.close()
        #expect(seen == 300)
        peakKiB = max(peakKiB, residentKiB(pid: pid) ?? 0)
        #expect(peakKiB < 200 * 1024, "wald grew to \(peakKiB / 1024) MiB (from \(rssBefore / 1024) MiB) while a client did not read its 20 MB replay")
        // The absolute bound alone would pass even if the whole replay were queued in memory
        // (20 MB); growth well below the replay's size shows the output is bounded.
        #expect(peakKiB - rssBefore < 16 * 1024,
                "wald grew by \((peakKiB - rssBefore) / 1024) MiB (\(rssBefore / 1024) → \(peakKiB / 1024) MiB) while a client did not read its 20 MB replay")

        // Nothing was dropped for the slow reader: it gets every record once it reads.
        let acked = await writer.stop()
        var next: UInt64 = 1
        var endLSN: UInt64 = 0
        while let reply = stuck.readFrame() {
            if reply.opcode == 0x83 { endLSN = readU64(reply.body); break }
            guard reply.opcode == 0x82 else {
                Issue.record("unexpected reply \(reply.opcode) in the replay at LSN \(next)")
                break
            }
            let lsn = readU64(reply.body)
            if lsn != next { Issue.record("replay jumped from \(next) to \(lsn)"); break }
            let bytes = Array(reply.body[8...])
            let expected = lsn <= UInt64(bigRecords) ? bigPayload(Int(lsn), size: recordSize) : acked[lsn]
            if bytes != expected { Issue.record("replay LSN \(lsn) has other bytes"); break }
            next += 1
        }
        #expect(next > UInt64(bigRecords) && endLSN == next, "the slow replay ended at \(next) with END \(endLSN)")
    }

    @Test(.timeLimit(.minutes(2)))
    func pipelinedLargeFramesDuringAStalledFsyncHoldBoundedServerMemory() async throws {
        let fault = NSTemporaryDirectory() + "wald-fault-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: fault, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: fault) }
        let wald = try WaldProcess(environment: ["WALD_TEST_FAULT_FILE": fault])
        defer { wald.cleanup() }
        let pid = wald.process.processIdentifier
        let rssBefore = residentKiB(pid: pid) ?? 0
        try "stall".write(toFile: fault, atomically: false, encoding: .utf8)

        // 64 pipelined frames of 8 records of almost 1 MiB (512 MiB in all). The first waits
        // for the stalled fsync; the server must stop reading the rest instead of queueing it.
        let record = [UInt8](repeating: 0x61, count: (1 << 20) - 64)
        let big = appendFrame(Array(repeating: record, count: 8))
        let c = try RawConnection(port: wald.port)
        let fd = c.fd
        let senderDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { senderDone.signal() }
            for _ in 0..<64 {
                var sent = 0
                while sent < big.count {
                    let n = big.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, big.count - sent, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { return }
                    sent += n
                }
            }
        }
        var peakKiB = rssBefore
        for _ in 0..<16 {
            try await Task.sleep(for: .milliseconds(250))
            peakKiB = max(peakKiB, residentKiB(pid: pid) ?? 0)
        }
        #expect(peakKiB - rssBefore < 128 * 1024,
                "wald grew by \((peakKiB - rssBefore) / 1024) MiB (\(rssBefore / 1024) → \(peakKiB / 1024) MiB) while a client pipelined 512 MiB during a stalled fsync")
        shutdown(fd, Int32(SHUT_RDWR))  // ends the blocked send
        senderDone.wait()

        // Once the fsync goes through, the server serves others again.
        try "".write(toFile: fault, atomically: false, encoding: .utf8)
        let client = try await WALClient.connect(Endpoint.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        let (first, _) = try await client.append(batch: [Array("after".utf8)])
        #expect(first > 0)
    }

    /// A 10 KB-ish record for LSN `lsn`: its tag, then a fixed random block (cheap to build).
    private func bigPayload(_ lsn: Int, size: Int) -> [UInt8] {
        let tag = Array("big-\(lsn);".utf8)
        return tag + Self.block.prefix(size - tag.count)
    }

    private static let block = payload("block", size: 20_000)

    @Test(.timeLimit(.minutes(1)))
    func nonNumericLSNsInTextCommandsAreBadRequestsAndKeepTheConnection() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let writer = try await BackgroundWriter.start(endpoint)
        let c = try RawConnection(port: wald.port)
        for command in ["REPLAY abc", "REPLAY 1x", "REPLAY -1", "REPLAY 0x10", "REPLAY 1 many", "REPLAY ", "TRUNCATE abc",
                        "REPLAY 1 2 3 4"] {
            c.send(command + "\n")
            let reply = try #require(c.readLine(), "\(command): no reply")
            #expect(reply.hasPrefix("ERR BAD_REQUEST "), "\(command) → \(reply)")
            c.send("PING\n")
            #expect(c.readLine() == "PONG", "\(command): the connection did not stay usable")
        }
        // Too big for an LSN: an error line either way, and the connection stays.
        c.send("REPLAY 18446744073709551616\nPING\n")
        let overflow = try #require(c.readLine())
        #expect(overflow.hasPrefix("ERR BAD_REQUEST ") || overflow.hasPrefix("ERR OUT_OF_RANGE "), "overflowing LSN → \(overflow)")
        #expect(c.readLine() == "PONG")
        await writer.expectProgress("after bad REPLAY arguments")
        let acked = await writer.stop()
        let records = try await replayAll(endpoint)
        expectLog(records, holds: acked, "after bad arguments")
        #expect(records.count == acked.count)
    }

    @Test(.timeLimit(.minutes(1)))
    func connectionsCutMidFrameAppendNothingAndDisturbNoOne() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let writer = try await BackgroundWriter.start(endpoint)
        await writer.expectProgress("before the cut connections")

        let partialRecord = payload("PARTIAL", size: 1000)
        let fullFrame = appendFrame([partialRecord])
        let cuts: [(String, [UInt8], Bool)] = [
            ("binary header only", Array(fullFrame[0..<3]), false),
            ("binary APPEND half sent", Array(fullFrame[0..<(fullFrame.count / 2)]), false),
            ("binary APPEND missing its last byte", Array(fullFrame.dropLast()), false),
            ("binary APPEND missing its last byte, reset", Array(fullFrame.dropLast()), true),
            ("text APPEND without a line end", Array("APPEND PARTIAL text".utf8), false),
            ("text APPEND without a line end, reset", Array("APPEND PARTIAL text".utf8), true),
        ]
        // Resets that arrive together with the partial bytes, several times: each must be
        // noticed and the connection forgotten.
        let resets = (0..<10).map { ("reset after a partial frame #\($0)", Array(fullFrame.prefix(100 + $0)), true) }
        for (name, bytes, reset) in cuts + resets {
            let c = try RawConnection(port: wald.port)
            c.send(bytes)
            if reset {
                var abort = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, socklen_t(MemoryLayout<linger>.size))
            }
            _ = consume c  // closes the socket (RST with the zero linger)
            await writer.expectProgress("after \(name)")
        }
        let probe = try await WALClient.connect(endpoint)
        defer { probe.close() }
        // Closed connections are forgotten (the count may lag the close for a moment).
        var connections: UInt64 = 0
        for _ in 0..<1000 {
            connections = try await probe.info().connections
            if connections == 2 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(connections == 2, "INFO still counts \(connections) connections; only the writer and this one are open")

        let acked = await writer.stop()
        let records = try await replayAll(endpoint)
        expectLog(records, holds: acked, "after connections cut mid-frame")
        let partial = records.filter { $0.payload.starts(with: Array("PARTIAL".utf8)) }
        #expect(partial.isEmpty, "\(partial.count) records from cut-off frames were appended, e.g. LSN \(partial.first?.lsn ?? 0)")
        #expect(records.count == acked.count)
    }

    /// Found by `wald-fuzz session`: a REPLAY FOLLOW whose end of input arrives in the same read
    /// (the client half-closes at once) left the follow stream, its connection slot and its
    /// segment hold open forever. The end of input ends a follow stream in either order.
    @Test(.timeLimit(.minutes(1)))
    func followRequestWithItsEndOfInputInTheSameReadIsClosed() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        for attempt in 0..<5 {
            let c = try RawConnection(port: wald.port, timeoutSeconds: 10)
            c.send(attempt % 2 == 0 ? "APPEND x\nREPLAY 0 0 FOLLOW\n" : "REPLAY 0 0 FOLLOW\nPING\n")
            shutdown(c.fd, Int32(SHUT_WR))
            var chunk = [UInt8](repeating: 0, count: 65536)
            var result = 1
            while result > 0 { result = chunk.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, 65536, 0) } }
            #expect(result == 0, "attempt \(attempt): the server kept the half-closed follow stream open (recv: \(result), errno \(errno))")
        }
    }
}
