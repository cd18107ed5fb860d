// The text protocol's parser on its own: numeric arguments at and beyond the edges of a
// u64, and error messages that quote the client's text without its control bytes.
import Testing

@testable import WALProtocol

@Suite struct TextCodecNumberTests {
    private func parse(_ line: String) throws(ProtocolError) -> Request {
        try TextCodec.parse(ArraySlice(line.utf8))
    }

    private func error(_ line: String) -> ProtocolError? {
        do {
            _ = try parse(line)
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [UInt64(0), 1, 4_294_967_295, 4_294_967_296, 4_294_967_297, 1 << 63, UInt64.max - 1, UInt64.max])
    func everyU64IsAcceptedWhereANumberIsExpected(value: UInt64) throws {
        #expect(try parse("REPLAY \(value)") == .replay(from: value, maxCount: 0, follow: false))
        #expect(try parse("REPLAY 1 \(value)") == .replay(from: 1, maxCount: value, follow: false))
        #expect(try parse("REPLAY \(value) \(value) FOLLOW") == .replay(from: value, maxCount: value, follow: true))
        #expect(try parse("TRUNCATE \(value)") == .truncate(before: value))
    }

    @Test func aNumberThatDoesNotFitSaysSo() {
        let expected = "from 18446744073709551616 is out of range: the largest allowed is 18446744073709551615"
        #expect(error("REPLAY 18446744073709551616") == ProtocolError(.badRequest, expected, closesConnection: false))
    }

    @Test(arguments: [
        ("REPLAY 18446744073709551616", "from 18446744073709551616"),
        ("REPLAY 1 18446744073709551616", "count 18446744073709551616"),
        ("REPLAY 1 18446744073709551616 FOLLOW", "count 18446744073709551616"),
        ("TRUNCATE 18446744073709551616", "before 18446744073709551616"),
        ("REPLAY 99999999999999999999", "from 99999999999999999999"),
        ("REPLAY 000000000000000000000018446744073709551616", "from 00000000000000000000001844674407…"),
        ("TRUNCATE " + String(repeating: "9", count: 1000), "before " + String(repeating: "9", count: 32) + "…"),
    ])
    func everyNumericArgumentThatDoesNotFitNamesItselfAndTheLargestAllowed(line: String, start: String) throws {
        let failure = try #require(error(line))
        #expect(failure.code == .badRequest && !failure.closesConnection)
        #expect(failure.message == start + " is out of range: the largest allowed is 18446744073709551615")
    }

    @Test func leadingZerosStillParseWhenTheValueFits() throws {
        #expect(try parse("REPLAY 0000000000000000000000000018446744073709551615") == .replay(from: .max, maxCount: 0, follow: false))
    }

    @Test(arguments: [
        ("REPLAY -1", "from must be a non-negative integer, got '-1'"),
        ("REPLAY 1 x", "count must be a non-negative integer, got 'x'"),
        ("REPLAY 1x", "from must be a non-negative integer, got '1x'"),
        ("REPLAY 1 -5", "count must be a non-negative integer, got '-5'"),
        ("TRUNCATE 1e3", "before must be a non-negative integer, got '1e3'"),
        ("TRUNCATE 18446744073709551616x", "before must be a non-negative integer, got '18446744073709551616x'"),
        ("REPLAY \u{1B}[31m18446744073709551616", "from must be a non-negative integer, got '\\x1B[31m18446744073709551616'"),
    ])
    func textThatIsNotANumberIsStillReportedAsSuch(line: String, message: String) throws {
        let failure = try #require(error(line))
        #expect(failure.message == message)
    }

    @Test func outOfRangeMessagesCarryNoControlBytes() throws {
        // Full-width digits are numbers to Unicode but not to the protocol: they are escaped.
        let failure = try #require(error("REPLAY １８４４６７４４０７３７０９５５１６１６"))
        #expect(!failure.message.unicodeScalars.contains { $0.value < 0x20 || $0.value >= 0x7F && $0 != "…" })
        #expect(failure.message.hasPrefix("from must be a non-negative integer, got '\\xEF"))
    }
}

@Suite struct TextCommandListTests {
    /// The unknown-command hint left out METRICS and PROMOTE.
    @Test func theUnknownCommandHintListsEveryCommandTheParserKnows() throws {
        do {
            _ = try TextCodec.parse(ArraySlice("FROB".utf8))
            Issue.record("FROB parsed")
        } catch {
            #expect(error.message == "unknown command 'FROB'; the commands are " + TextCodec.commands.joined(separator: ", "))
        }
        // Every listed command is one the parser knows (its errors, if any, are about arguments)...
        for command in TextCodec.commands {
            do {
                _ = try TextCodec.parse(ArraySlice(command.utf8))
            } catch {
                #expect(!error.message.hasPrefix("unknown command"), "\(command) is listed but unknown")
            }
        }
        // ...and every request the text protocol can carry is listed.
        for word in ["PING", "APPEND", "APPENDAT", "REPLAY", "SYNC", "INFO", "TRUNCATE", "AUTH", "METRICS", "PROMOTE", "QUIT"] {
            #expect(TextCodec.commands.contains(word), "\(word) is missing from the hint")
        }
    }

    @Test func corruptionIsErrorCodeTen() {
        #expect(ErrorCode.corruption.rawValue == 10 && ErrorCode(name: "CORRUPTION") == .corruption)
    }
}
