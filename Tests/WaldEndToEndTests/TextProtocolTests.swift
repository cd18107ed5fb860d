// The text protocol, as someone typing into `nc` would use it.
import Foundation
import Testing

@Suite(.serialized) struct TextProtocolTests {
    @Test func ncSessionFromTheDocsWorks() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("PING\nappend hello world\r\nAPPEND second\nAPPEND \nREPLAY 1\n")
        #expect(c.readLine() == "PONG")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "OK 2")
        #expect(c.readLine() == "OK 3")
        #expect(c.readLine() == "RECORD 1 11")
        #expect(c.readLine() == "hello world")
        #expect(c.readLine() == "RECORD 2 6")
        #expect(c.readLine() == "second")
        #expect(c.readLine() == "RECORD 3 0")
        #expect(c.readLine() == "")
        #expect(c.readLine() == "END 4")
        c.send("REPLAY 2 1\nSYNC\nTRUNCATE 1\nREPLAY 9\nFROB x\nREPLAY abc\nINFO\nQUIT\n")
        #expect(c.readLine() == "RECORD 2 6")
        #expect(c.readLine() == "second")
        #expect(c.readLine() == "END 3")
        #expect(c.readLine() == "SYNCED 3")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine()?.hasPrefix("ERR OUT_OF_RANGE ") == true)
        #expect(c.readLine()?.hasPrefix("ERR BAD_REQUEST unknown command") == true)
        #expect(c.readLine()?.hasPrefix("ERR BAD_REQUEST ") == true)
        let info = try #require(c.readLine())
        #expect(info.hasPrefix("{") && info.contains("\"last_lsn\":3"))
        #expect(c.readLine() == "BYE")
        #expect(c.readLine() == nil)
    }

    @Test func errorRepliesNeverEchoTheClientsControlBytes() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        // An unknown command and a bad number carrying a terminal escape, CR, NUL, BEL and a
        // backslash: the replies show them as \xNN and are one printable line each.
        c.send("FR\u{1B}[2J\rOB\u{0}\n" + "REPLAY \u{1B}]0;x\u{7}\\1\n" + "Y" + String(repeating: "z", count: 100) + "\n" + "PING\n")
        let unknown = try #require(c.readLine())
        #expect(unknown == "ERR BAD_REQUEST unknown command 'FR\\x1B[2J\\x0DOB\\x00'; the commands are PING, APPEND, APPENDAT, REPLAY, SYNC, INFO, TRUNCATE, AUTH, METRICS, PROMOTE, QUIT")
        let number = try #require(c.readLine())
        #expect(number == "ERR BAD_REQUEST from must be a non-negative integer, got '\\x1B]0;x\\x07\\x5C1'")
        let long = try #require(c.readLine())
        #expect(long.hasPrefix("ERR BAD_REQUEST unknown command 'YZZZ") && long.contains("…'") && long.count < 180)
        #expect(c.readLine() == "PONG")
        for line in [unknown, number, long] {
            #expect(!line.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control byte in \(line.debugDescription)")
        }
    }

    @Test func numbersThatDoNotFitInSixtyFourBitsAreOutOfRangeAndChangeNothing() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("APPEND one\nREPLAY 18446744073709551616\nREPLAY 1 99999999999999999999 FOLLOW\nTRUNCATE 18446744073709551616\n"
               + "REPLAY 18446744073709551615\nREPLAY 1 18446744073709551615\nINFO\n")
        let largest = "the largest allowed is 18446744073709551615"
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "ERR BAD_REQUEST from 18446744073709551616 is out of range: \(largest)")
        #expect(c.readLine() == "ERR BAD_REQUEST count 99999999999999999999 is out of range: \(largest)")
        #expect(c.readLine() == "ERR BAD_REQUEST before 18446744073709551616 is out of range: \(largest)")
        // The largest u64 itself parses; it is an LSN the log does not hold, or no count limit.
        #expect(c.readLine()?.hasPrefix("ERR OUT_OF_RANGE LSN 18446744073709551615 is out of range") == true)
        #expect(c.readLine() == "RECORD 1 3")
        #expect(c.readLine() == "one")
        #expect(c.readLine() == "END 2")
        let info = try #require(c.readLine())
        #expect(info.contains("\"first_lsn\":1,\"last_lsn\":1,"), "\(info)")
    }

    @Test(.timeLimit(.minutes(1)))
    func aClientThatHalfClosesRightAfterADurableAppendGetsItsRepliesThenEOF() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        for round in 1...3 {
            let c = try RawConnection(port: wald.port)
            c.send("APPEND half-closed \(round)\nPING\n")
            shutdown(c.fd, Int32(SHUT_WR))
            let (bytes, closed) = readUntilClosed(c.fd, idleSeconds: 10)
            #expect(String(decoding: bytes, as: UTF8.self) == "OK \(round)\r\nPONG\r\n")
            #expect(closed, "wald kept the half-closed connection open")
        }
    }

    @Test func lineOverSixtyFourKiBIsTooLargeAndCloses() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("APPEND " + String(repeating: "x", count: 70 * 1024) + "\n")
        #expect(c.readLine()?.hasPrefix("ERR TOO_LARGE") == true)
        #expect(c.readLine() == nil)
    }

    @Test func firstByteThatIsNeitherZeroNorALetterIsRefused() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send([0xFF, 0x13, 0x37, 10])
        #expect(c.readLine()?.hasPrefix("ERR BAD_REQUEST") == true)
        #expect(c.readLine() == nil)
    }

    @Test func followInTextModeStreamsNewRecords() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let follower = try RawConnection(port: wald.port)
        follower.send("REPLAY 0 FOLLOW\n")
        let writer = try RawConnection(port: wald.port)
        writer.send("APPEND one\nAPPEND two\n")
        #expect(writer.readLine() == "OK 1")
        #expect(writer.readLine() == "OK 2")
        #expect(follower.readLine() == "RECORD 1 3")
        #expect(follower.readLine() == "one")
        #expect(follower.readLine() == "RECORD 2 3")
        #expect(follower.readLine() == "two")
    }
}
