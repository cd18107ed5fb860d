// Arithmetic at the wire's edges against the real binary: a log whose only segment starts at
// the last LSNs there are (2^64 − 1, 2^64 − 2), written by hand from docs/format.md, refuses
// the append that has no LSN left by name and keeps serving; requests carrying 0, 2^32 ± 1,
// 2^63 and 2^64 − 1 in every u64 field get documented answers and change nothing.
import Foundation
import Testing

/// CRC32C (Castagnoli, reflected 0x82F63B78), bit by bit as docs/format.md defines it.
func crc32c(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return crc ^ 0xFFFF_FFFF
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
private func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

/// A data directory holding one empty segment that starts at `firstLSN` (docs/format.md, "Header").
func makeLog(startingAt firstLSN: UInt64) throws -> String {
    let directory = NSTemporaryDirectory() + "wald-e2e-edge-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
    var header = Array("WALDSEG".utf8) + [0] + le16(1) + le16(64) + le32(0)
    header += (0..<16).map { UInt8($0 * 17 & 0xFF) } + le64(firstLSN) + le64(0) + le64(0) + le32(0)
    header += le32(crc32c(header))
    let digits = String(firstLSN)
    let name = "wal-" + String(repeating: "0", count: 20 - digits.count) + digits + ".wal"
    #expect(FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(header)))
    return directory
}

@Suite(.serialized) struct LSNEdgeTests {
    static let exhausted = "leaves no LSN for another record"

    private func expectError(_ reply: (opcode: UInt8, body: [UInt8])?, code: UInt16, containing text: String,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        guard let reply else {
            Issue.record("no reply", sourceLocation: sourceLocation)
            return
        }
        let message = String(decoding: reply.body.dropFirst(2), as: UTF8.self)
        #expect(reply.opcode == 0xFF && errorCode(reply.body) == code && message.contains(text),
                "expected error \(code) saying \"\(text)\", got 0x\(String(reply.opcode, radix: 16)) \(message)",
                sourceLocation: sourceLocation)
    }

    private func expectPong(_ c: RawConnection, sourceLocation: SourceLocation = #_sourceLocation) {
        c.send(frame(0x05, Array("alive".utf8)))
        let reply = c.readFrame()
        #expect(reply?.opcode == 0x86 && reply?.body == Array("alive".utf8), "no PONG", sourceLocation: sourceLocation)
    }

    @Test(.timeLimit(.minutes(1)))
    func aLogWithNoLSNLeftRefusesAppendsByNameAndKeepsServing() throws {
        let directory = try makeLog(startingAt: .max)
        let wald = try WaldProcess(dataDirectory: directory)
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(appendFrame([Array("no room".utf8)]))
        expectError(c.readFrame(), code: 5, containing: Self.exhausted)
        expectPong(c)
        c.send(appendFrame([[1], [2], [3]], buffered: true))
        expectError(c.readFrame(), code: 5, containing: Self.exhausted)
        expectPong(c)

        let t = try RawConnection(port: wald.port)
        t.send("APPEND no room either\nPING\nINFO\n")
        let refused = try #require(t.readLine())
        #expect(refused.hasPrefix("ERR UNAVAILABLE the log is full: its last LSN 18446744073709551614 ") && refused.contains(Self.exhausted),
                "\(refused)")
        #expect(t.readLine() == "PONG")
        let info = try #require(t.readLine())
        #expect(info.contains("\"first_lsn\":18446744073709551615,\"last_lsn\":18446744073709551614,"), "\(info)")

        // After a restart it is the same log, still with nothing in it.
        #expect(wald.stop() == 0)
        let again = try WaldProcess(dataDirectory: directory)
        defer { again.stop() }
        let r = try RawConnection(port: again.port)
        r.send("REPLAY 0\nAPPEND x\nPING\n")
        #expect(r.readLine() == "END 18446744073709551615")
        #expect(r.readLine()?.contains(Self.exhausted) == true)
        #expect(r.readLine() == "PONG")
    }

    @Test(.timeLimit(.minutes(1)))
    func theLastLSNGoesToOneRecordAndNeverToAPartOfABatch() throws {
        let directory = try makeLog(startingAt: .max - 1)
        let wald = try WaldProcess(dataDirectory: directory)
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        // Two records for one LSN: the batch is refused whole.
        c.send(appendFrame([Array("first".utf8), Array("second".utf8)]))
        expectError(c.readFrame(), code: 5, containing: Self.exhausted)
        c.send(appendFrame([Array("last".utf8)]))
        let appended = try #require(c.readFrame())
        #expect(appended.opcode == 0x81 && readU64(appended.body) == .max - 1, "\(appended)")
        c.send(appendFrame([Array("one too many".utf8)]))
        expectError(c.readFrame(), code: 5, containing: Self.exhausted)
        expectPong(c)

        // Every u64 field at its edges on this log: documented answers, nothing appended.
        let t = try RawConnection(port: wald.port)
        t.send("REPLAY 18446744073709551614 18446744073709551615\nREPLAY 18446744073709551615\nREPLAY 0 18446744073709551615\n"
               + "TRUNCATE 18446744073709551615\nTRUNCATE 18446744073709551614\nINFO\n")
        #expect(t.readLine() == "RECORD 18446744073709551614 4")
        #expect(t.readLine() == "last")
        #expect(t.readLine() == "END 18446744073709551615")
        #expect(t.readLine() == "END 18446744073709551615")
        #expect(t.readLine() == "RECORD 18446744073709551614 4")
        #expect(t.readLine() == "last")
        #expect(t.readLine() == "END 18446744073709551615")
        #expect(t.readLine() == "OK 18446744073709551614")
        #expect(t.readLine() == "OK 18446744073709551614")
        let info = try #require(t.readLine())
        #expect(info.contains("\"first_lsn\":18446744073709551614,\"last_lsn\":18446744073709551614,"), "\(info)")

        // A follower at the end: FEEDBACK beyond the durable LSN is refused, the stream closed.
        let f = try RawConnection(port: wald.port)
        f.send(frame(0x02, be64(.max) + be64(.max) + [1]))
        f.send(frame(0x07, be64(.max)))
        expectError(f.readFrame(), code: 1, containing: "beyond the durable LSN 18446744073709551614")
        #expect(f.isClosedByPeer())
        expectPong(c)
    }

    @Test(.timeLimit(.minutes(1)), arguments: [UInt64(0), 1, 4_294_967_295, 4_294_967_296, 4_294_967_297, 1 << 63, .max - 1, .max])
    func everyU64FieldAtItsEdgesGetsADocumentedAnswer(value: UInt64) throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send(appendFrame([Array("one".utf8)]) + appendFrame([Array("two".utf8)]))
        #expect(c.readFrame()?.opcode == 0x81)
        #expect(c.readFrame()?.opcode == 0x81)
        // REPLAY from `value` (then END or OUT_OF_RANGE), REPLAY from 1 with maxCount `value`.
        c.send(frame(0x02, be64(value) + be64(1) + [0]))
        var replies: [UInt8] = []
        while let reply = c.readFrame() {
            replies.append(reply.opcode)
            if reply.opcode != 0x82 { break }
        }
        let inLog = value <= 3
        #expect(replies.last == (inLog ? 0x83 : 0xFF), "REPLAY from \(value): \(replies)")
        c.send(frame(0x02, be64(1) + be64(value) + [0]))
        var count = 0
        while let reply = c.readFrame(), reply.opcode == 0x82 { count += 1 }
        #expect(count == (value == 0 ? 2 : Int(min(value, 2))), "REPLAY with maxCount \(value) sent \(count) records")
        // TRUNCATE before `value`: a no-op up to durable + 1, OUT_OF_RANGE beyond.
        c.send(frame(0x06, be64(value)))
        let truncated = try #require(c.readFrame())
        #expect(truncated.opcode == (value <= 3 ? 0x87 : 0xFF), "TRUNCATE \(value) answered 0x\(String(truncated.opcode, radix: 16))")
        // FEEDBACK outside a follow stream: BAD_REQUEST, the connection stays.
        c.send(frame(0x07, be64(value)))
        expectError(c.readFrame(), code: 1, containing: "FEEDBACK")
        // A follow stream from `value` with maxCount `value`, FEEDBACK `value` on it, then a PING.
        let f = try RawConnection(port: wald.port)
        f.send(frame(0x02, be64(value) + be64(value) + [1]) + frame(0x07, be64(value)) + frame(0x05))
        if value <= 2 {
            // It streams (all, or `value` records), takes the FEEDBACK, refuses the PING and closes.
            var records = 0
            var reply = f.readFrame()
            while reply?.opcode == 0x82 {
                records += 1
                reply = f.readFrame()
            }
            #expect(records == (value == 0 ? 2 : Int(value)), "follow from \(value) sent \(records) records")
            expectError(reply, code: 1, containing: "only FEEDBACK")
            #expect(f.isClosedByPeer())
        } else {
            // Beyond the log: OUT_OF_RANGE, so no stream; the FEEDBACK is then out of place.
            expectError(f.readFrame(), code: 3, containing: "LSN \(value) is out of range")
            expectError(f.readFrame(), code: 1, containing: "FEEDBACK is only valid on a follow stream")
            #expect(f.readFrame()?.opcode == 0x86)
        }
        expectPong(c)
        c.send(frame(0x04))
        let info = try #require(c.readFrame())
        #expect(String(decoding: info.body, as: UTF8.self).contains("\"first_lsn\":1,\"last_lsn\":2,"))
    }
}
