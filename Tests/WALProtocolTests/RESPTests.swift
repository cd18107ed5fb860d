// RESP request parsing and reply encoding (docs/protocol.md, "RESP"), byte for byte against
// what Redis 7 sends and accepts (networking.c processMultibulkBuffer, the RESP3 spec).
import Testing
import WALProtocol

private func parse(_ text: String, maxBulk: Int = 1024) -> (RESPParser.Parsed, [String]) {
    var arguments: [Range<Int>] = []
    let bytes = Array(text.utf8)
    let parsed = bytes.withUnsafeBytes { RESPParser.parse($0, maxBulk: maxBulk, arguments: &arguments) }
    return (parsed, arguments.map { String(decoding: bytes[$0], as: UTF8.self) })
}

@Suite struct RESPParserTests {
    @Test func aRequestIsItsArgumentsAndTheBytesItTook() {
        let request = "*5\r\n$4\r\nXADD\r\n$3\r\nwal\r\n$1\r\n*\r\n$4\r\ndata\r\n$0\r\n\r\n"
        let (parsed, arguments) = parse(request + "*1\r\n$4\r\nPING\r\n")
        #expect(parsed == .command(consumed: request.utf8.count))
        #expect(arguments == ["XADD", "wal", "*", "data", ""])
    }

    @Test func everyProperPrefixOfARequestWaitsForMore() {
        let request = "*2\r\n$4\r\nECHO\r\n$12\r\nhello\r\nworld\r\n"
        #expect(parse(request).0 == .command(consumed: request.utf8.count))
        for cut in 0..<request.utf8.count {
            let prefix = String(decoding: Array(request.utf8)[..<cut], as: UTF8.self)
            #expect(parse(prefix).0 == .needMore, "\(cut) bytes")
        }
    }

    @Test func anEmptyArrayTakesItsBytesAndHasNoArguments() {
        let (parsed, arguments) = parse("*0\r\n")
        #expect(parsed == .command(consumed: 4))
        #expect(arguments.isEmpty)
    }

    @Test(arguments: [
        ("PING\r\n", "Protocol error: expected '*', got 'P'"),
        ("*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
        ("*x\r\n", "Protocol error: invalid multibulk length"),
        ("*-5\r\n", "Protocol error: invalid multibulk length"),
        ("*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$2000\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$3\r\nabcd\r\n", "Protocol error: bulk string of 3 bytes is not followed by CRLF"),
        ("*9999\r\n", "Protocol error: too many arguments (9999, at most 4096)"),
    ])
    func whatIsNotRESPIsAProtocolError(input: String, message: String) {
        #expect(parse(input).0 == .error(message))
    }

    /// A length up to Int.max is compared without arithmetic that could overflow.
    @Test func aBulkLengthAtIntMaxWaitsOrIsRefusedWithoutTrapping() {
        let request = "*1\r\n$\(Int.max)\r\nabc"
        #expect(parse(request, maxBulk: Int.max).0 == .needMore)
        #expect(parse(request).0 == .error("Protocol error: invalid bulk length"))
        #expect(parse("*1\r\n$\(Int.max)0\r\n", maxBulk: Int.max).0 == .error("Protocol error: invalid bulk length"))
    }

    /// A header line that never ends is refused once it is longer than any valid one: the
    /// buffer a client can make the server hold is bounded.
    @Test func aHeaderLineWithoutAnEndIsRefusedOnceTooLong() {
        #expect(parse("*1\r\n$" + String(repeating: "1", count: 20)).0 == .needMore)
        #expect(parse("*1\r\n$" + String(repeating: "1", count: 40)).0 == .error("Protocol error: invalid bulk length"))
        #expect(parse("*" + String(repeating: "1", count: 40)).0 == .error("Protocol error: invalid multibulk length"))
    }
}

@Suite struct RESPWriterTests {
    private func encode(_ version: Int, _ body: (RESPWriter, inout [UInt8]) -> Void) -> String {
        var out: [UInt8] = []
        body(RESPWriter(version: version), &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func theShapesThatDifferBetweenRESP2AndRESP3() {
        #expect(encode(2) { $0.null(into: &$1) } == "$-1\r\n")
        #expect(encode(3) { $0.null(into: &$1) } == "_\r\n")
        #expect(encode(2) { $0.nullArray(into: &$1) } == "*-1\r\n")
        #expect(encode(3) { $0.nullArray(into: &$1) } == "_\r\n")
        #expect(encode(2) { $0.map(2, into: &$1) } == "*4\r\n")
        #expect(encode(3) { $0.map(2, into: &$1) } == "%2\r\n")
        #expect(encode(2) { $0.verbatim("a:1", into: &$1) } == "$3\r\na:1\r\n")
        #expect(encode(3) { $0.verbatim("a:1", into: &$1) } == "=7\r\ntxt:a:1\r\n")
    }

    @Test func anErrorIsOneLineWhateverItsMessageCarries() {
        #expect(encode(2) { $0.error("bad\r\nthing", into: &$1) } == "-ERR bad  thing\r\n")
        #expect(encode(2) { $0.error("not here", code: "READONLY", into: &$1) } == "-READONLY not here\r\n")
    }

    @Test func bulkStringsCarryAnyBytes() {
        var out: [UInt8] = []
        let bytes: [UInt8] = [0, 13, 10, 255]
        bytes.withUnsafeBytes { RESPWriter().bulk($0, into: &out) }
        #expect(out == Array("$4\r\n".utf8) + bytes + [13, 10])
    }
}
