// Every binary request and response, against the real wald binary, with raw frames built
// from docs/protocol.md.
import Foundation
import Testing

@Suite(.serialized) struct BinaryProtocolTests {
    @Test func appendReplaySyncInfoPingTruncateAnswerAsDocumented() throws {
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "4096"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)

        c.send(appendFrame([Array("hello".utf8), Array("abc".utf8)]))
        var reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x81)
        #expect(readU64(reply.body) == 1)
        #expect(reply.body[8..<12] == [0, 0, 0, 2])

        c.send(appendFrame([Array("buffered".utf8)], buffered: true))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x81 && readU64(reply.body) == 3)

        c.send(frame(0x03))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x84 && readU64(reply.body) == 3)

        c.send(frame(0x02, be64(0) + be64(0) + [0]))
        var records: [(UInt64, [UInt8])] = []
        while let r = c.readFrame(), r.opcode == 0x82 { records.append((readU64(r.body), Array(r.body[8...]))) }
        #expect(records.map(\.0) == [1, 2, 3])
        #expect(records.map(\.1) == [Array("hello".utf8), Array("abc".utf8), Array("buffered".utf8)])

        c.send(frame(0x02, be64(2) + be64(1) + [0]))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x82 && readU64(reply.body) == 2)
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x83 && readU64(reply.body) == 3)

        c.send(frame(0x04))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x85)
        let info = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
        #expect(info["version"] is String)
        #expect((info["log_id"] as? String)?.count == 36)
        #expect((info["first_lsn"] as? Int) == 1)
        #expect((info["last_lsn"] as? Int) == 3)
        #expect((info["durable_lsn"] as? Int) == 3)
        #expect((info["segments"] as? Int) == 1)
        #expect((info["bytes"] as? Int ?? 0) > 0)
        #expect((info["connections"] as? Int) == 1)
        #expect((info["role"] as? String) == "primary")

        c.send(frame(0x05, Array("hi".utf8)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x86 && reply.body == Array("hi".utf8))

        c.send(frame(0x08, Array("anything".utf8)))
        #expect(c.readFrame()?.opcode == 0x88)

        c.send(frame(0x06, be64(1)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x87 && readU64(reply.body) == 1)

        c.send(frame(0x09))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x89 && readU64(reply.body) == 3)
    }

    @Test func pipelinedRequestsAreAnsweredInRequestOrder() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        var burst: [UInt8] = []
        var expected: [UInt8] = []
        for i in 0..<50 {
            switch i % 5 {
            case 0: burst += appendFrame([[UInt8(i)]]); expected.append(0x81)
            case 1: burst += frame(0x05, [UInt8(i)]); expected.append(0x86)
            case 2: burst += appendFrame([[UInt8(i)]], buffered: true); expected.append(0x81)
            case 3: burst += frame(0x04); expected.append(0x85)
            default: burst += frame(0x03); expected.append(0x84)
            }
        }
        c.send(burst)
        var seen: [UInt8] = []
        var lsns: [UInt64] = []
        for _ in expected {
            let r = try #require(c.readFrame())
            seen.append(r.opcode)
            if r.opcode == 0x81 { lsns.append(readU64(r.body)) }
        }
        #expect(seen == expected)
        #expect(lsns == Array(1...20))
    }

    @Test func appendWithCountZeroIsBadRequestAndKeepsTheConnection() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(frame(0x01, [0] + be32(0)))
        let reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 1)
        c.send(frame(0x05))
        #expect(c.readFrame()?.opcode == 0x86)
    }

    @Test func oversizeRecordIsTooLargeWritesNothingAndKeepsTheConnection() throws {
        let wald = try WaldProcess(arguments: ["--max-record-bytes", "1024"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(appendFrame([[1], [UInt8](repeating: 7, count: 1025)]))
        var reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 2)
        c.send(appendFrame([[2]]))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x81 && readU64(reply.body) == 1)
    }

    @Test func frameLengthOverTheLimitIsTooLargeAndCloses() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        // A first byte of 0x01 would not even select the binary protocol: start with a PING.
        c.send(frame(0x05))
        #expect(c.readFrame()?.opcode == 0x86)
        c.send(be32(0x0100_0000) + [0x01])
        let reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 2)
        #expect(c.readFrame() == nil)
    }

    @Test(arguments: [
        ("unknown opcode", frame(0x42, [1, 2, 3])),
        ("replay body too short", frame(0x02, [0, 0, 0, 0, 0])),
        ("sync body too long", frame(0x03, [1])),
        ("count larger than body", frame(0x01, [0] + be32(3) + be32(1) + [9])),
        ("record length past the body", frame(0x01, [0] + be32(1) + be32(100) + [1, 2])),
    ])
    func framingErrorsAreBadRequestAndClose(name: String, bytes: [UInt8]) throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(bytes)
        let reply = try #require(c.readFrame(), "\(name)")
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 1, "\(name)")
        #expect(c.readFrame() == nil, "\(name): connection should be closed")
        // The server still serves others and wrote nothing.
        let other = try RawConnection(port: wald.port)
        other.send(frame(0x04))
        let info = try #require(other.readFrame())
        #expect(String(decoding: info.body, as: UTF8.self).contains("\"last_lsn\":0"))
    }

    @Test func replayOutOfRangeNamesTheFirstAvailableLSN() throws {
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "256"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        for i in 0..<20 {
            c.send(appendFrame([[UInt8](repeating: UInt8(i), count: 60)]))
            _ = c.readFrame()
        }
        c.send(frame(0x02, be64(22) + be64(0) + [0]))
        var reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 3)
        c.send(frame(0x02, be64(21) + be64(0) + [0]))
        #expect(c.readFrame()?.opcode == 0x83)  // last + 1: empty replay, END 21

        c.send(frame(0x06, be64(10)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x87)
        let first = readU64(reply.body)
        #expect(first > 1 && first <= 10)
        c.send(frame(0x02, be64(1) + be64(0) + [0]))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 3)
        #expect(String(decoding: reply.body[2...], as: UTF8.self).contains("first available LSN is \(first)"))
        c.send(frame(0x02, be64(0) + be64(1) + [0]))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x82 && readU64(reply.body) == first)
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x83 && readU64(reply.body) == first + 1)

        c.send(frame(0x06, be64(100)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 3)
        c.send(frame(0x06, be64(1)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x87 && readU64(reply.body) == first)
    }

    @Test func followStreamDeliversLaterRecordsAndOnlyAcceptsFeedback() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let writer = try RawConnection(port: wald.port)
        writer.send(appendFrame([[1]]))
        _ = writer.readFrame()
        let follower = try RawConnection(port: wald.port)
        follower.send(frame(0x02, be64(1) + be64(0) + [1]))
        var reply = try #require(follower.readFrame())
        #expect(reply.opcode == 0x82 && readU64(reply.body) == 1)
        for i in 2...40 {
            writer.send(appendFrame([[UInt8(i)]], buffered: i % 2 == 0))
            _ = writer.readFrame()
        }
        for lsn in UInt64(2)...40 {
            reply = try #require(follower.readFrame(), "waiting for LSN \(lsn)")
            #expect(reply.opcode == 0x82 && readU64(reply.body) == lsn && reply.body[8...] == [UInt8(lsn)])
        }
        follower.send(frame(0x07, be64(40)))  // FEEDBACK: no reply
        follower.send(frame(0x05))
        reply = try #require(follower.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 1)
        #expect(follower.readFrame() == nil)
    }

    /// Found by the session fuzzer: FEEDBACK with an LSN near 2^64 overflowed the follower hold
    /// arithmetic and crashed wald. A follower cannot be durable beyond this server.
    @Test func feedbackBeyondTheDurableLSNIsRefusedAndTheServerStaysUp() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let writer = try RawConnection(port: wald.port)
        writer.send(appendFrame([[1], [2]]))
        #expect(writer.readFrame()?.opcode == 0x81)
        for claimed in [UInt64.max, UInt64.max - 1, 3] {
            let follower = try RawConnection(port: wald.port)
            follower.send(frame(0x02, be64(1) + be64(0) + [1]))
            for lsn in UInt64(1)...2 { #expect(try #require(follower.readFrame()).opcode == 0x82, "LSN \(lsn)") }
            follower.send(frame(0x07, be64(claimed)))
            let reply = try #require(follower.readFrame(), "no reply to FEEDBACK \(claimed)")
            #expect(reply.opcode == 0xFF && errorCode(reply.body) == 1)
            #expect(follower.readFrame() == nil)
        }
        writer.send(frame(0x05))
        #expect(writer.readFrame()?.opcode == 0x86, "wald did not survive the FEEDBACK frames")
    }

    @Test func tokenIsRequiredBeforeAnythingButAuthPingAndQuit() throws {
        let wald = try WaldProcess(arguments: ["--auth-token", "s3cret"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(appendFrame([[1]]))
        var reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 7)
        c.send(frame(0x05))
        #expect(c.readFrame()?.opcode == 0x86)
        c.send(frame(0x08, Array("wrong".utf8)))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == 7)
        c.send(frame(0x08, Array("s3cret".utf8)))
        #expect(c.readFrame()?.opcode == 0x88)
        c.send(appendFrame([[1]]))
        reply = try #require(c.readFrame())
        #expect(reply.opcode == 0x81 && readU64(reply.body) == 1)
    }

    @Test func connectionsOverTheLimitGetBusyAndAreClosed() throws {
        let wald = try WaldProcess(arguments: ["--max-connections", "2"])
        defer { wald.cleanup() }
        let a = try RawConnection(port: wald.port)
        let b = try RawConnection(port: wald.port)
        a.send(frame(0x05))
        b.send(frame(0x05))
        #expect(a.readFrame()?.opcode == 0x86)
        #expect(b.readFrame()?.opcode == 0x86)
        let c = try RawConnection(port: wald.port)
        #expect(c.readLine() == "ERR BUSY too many connections")
        #expect(c.readLine() == nil)
    }
}
