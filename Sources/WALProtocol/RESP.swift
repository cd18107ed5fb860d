// Redis's protocol (RESP2, and RESP3 after HELLO 3), as far as a server of one stream needs
// it: requests are arrays of bulk strings (`*N\r\n` then N × `$len\r\n…\r\n`), read where they
// lie; replies are encoded straight into the connection's output. Limits and error texts
// follow Redis's networking.c, so client libraries see what they expect.

/// Parses RESP requests in place.
public enum RESPParser {
    /// One request found at the start of a buffer.
    public enum Parsed: Equatable, Sendable {
        /// The request's arguments, as ranges of the buffer, and the bytes it took.
        case command(consumed: Int)
        /// More bytes are needed.
        case needMore
        /// Not RESP (the connection closes, as Redis does): the message for `-ERR`.
        case error(String)
    }

    /// Most arguments in one request (Redis allows 1024 × 1024; no wald command needs more than a few).
    public static let maxArguments = 4096

    /// Parses the request at the start of `bytes`, writing its arguments' ranges into `arguments`
    /// (cleared first). `maxBulk` bounds each argument (the largest record plus room).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, maxBulk: Int, arguments: inout [Range<Int>]
    ) -> Parsed {
        arguments.removeAll(keepingCapacity: true)
        guard !bytes.isEmpty else { return .needMore }
        guard bytes[0] == UInt8(ascii: "*") else {
            return .error("Protocol error: expected '*', got '\(printable(bytes[0]))'")
        }
        var position = 1
        guard let (count, after) = number(bytes, from: position, limit: 20) else {
            return lineEnd(bytes, from: position) == nil && bytes.count - position < 32
                ? .needMore : .error("Protocol error: invalid multibulk length")
        }
        guard count >= 0, count <= maxArguments else {
            return .error(count > maxArguments ? "Protocol error: too many arguments (\(count), at most \(maxArguments))"
                                               : "Protocol error: invalid multibulk length")
        }
        position = after
        for _ in 0..<count {
            guard position < bytes.count else { return .needMore }
            guard bytes[position] == UInt8(ascii: "$") else {
                return .error("Protocol error: expected '$', got '\(printable(bytes[position]))'")
            }
            guard let (length, start) = number(bytes, from: position + 1, limit: 20) else {
                return lineEnd(bytes, from: position + 1) == nil && bytes.count - position < 32
                    ? .needMore : .error("Protocol error: invalid bulk length")
            }
            guard length >= 0, length <= maxBulk else { return .error("Protocol error: invalid bulk length") }
            // `length` may be anything up to `maxBulk` (Int.max included): no arithmetic on it
            // that can overflow.
            guard length <= bytes.count - start - 2 else { return .needMore }
            guard bytes[start + length] == 13, bytes[start + length + 1] == 10 else {
                return .error("Protocol error: bulk string of \(length) bytes is not followed by CRLF")
            }
            arguments.append(start..<(start + length))
            position = start + length + 2
        }
        return .command(consumed: position)
    }

    /// The decimal number at `from` ended by CRLF, and the offset after the CRLF; nil when
    /// there is no complete, valid line (the caller tells "need more" from "invalid").
    private static func number(_ bytes: UnsafeRawBufferPointer, from start: Int, limit: Int) -> (Int, Int)? {
        guard let end = lineEnd(bytes, from: start), end > start, end - start <= limit else { return nil }
        var negative = false
        var index = start
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        guard index < end else { return nil }
        var value = 0
        while index < end {
            let digit = Int(bytes[index]) - 48
            guard digit >= 0, digit <= 9 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (plus, overflow2) = times.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { return nil }
            value = plus
            index += 1
        }
        return (negative ? -value : value, end + 2)
    }

    /// Offset of the CR of the first CRLF at or after `start`.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index + 1 < bytes.count {
            if bytes[index] == 13 && bytes[index + 1] == 10 { return index }
            index += 1
        }
        return nil
    }

    private static func printable(_ byte: UInt8) -> String {
        byte >= 0x20 && byte < 0x7F ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}

/// Encodes RESP replies. `version` 2 or 3 picks the shapes that differ (null, map, verbatim).
public struct RESPWriter {
    public var version: Int

    public init(version: Int = 2) {
        self.version = version
    }

    public func simple(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "+"))
        out.append(contentsOf: text.utf8)
        crlf(&out)
    }

    /// `-<code> <message>`: `ERR` unless another code (READONLY, NOAUTH, WRONGPASS, NOPROTO).
    public func error(_ message: String, code: String = "ERR", into out: inout [UInt8]) {
        out.append(UInt8(ascii: "-"))
        out.append(contentsOf: code.utf8)
        out.append(32)
        // No CR or LF may end up inside the line (the message may carry client text).
        for byte in message.utf8 { out.append(byte == 13 || byte == 10 ? 32 : byte) }
        crlf(&out)
    }

    public func integer(_ value: Int, into out: inout [UInt8]) {
        out.append(UInt8(ascii: ":"))
        out.append(contentsOf: String(value).utf8)
        crlf(&out)
    }

    public func bulk(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        header(UInt8(ascii: "$"), bytes.count, &out)
        out.append(contentsOf: bytes)
        crlf(&out)
    }

    public func bulk(_ text: String, into out: inout [UInt8]) {
        var text = text
        text.withUTF8 { bulk(UnsafeRawBufferPointer($0), into: &out) }
    }

    /// A missing value: RESP2 `$-1`, RESP3 `_`.
    public func null(into out: inout [UInt8]) {
        out.append(contentsOf: version >= 3 ? Array("_\r\n".utf8) : Array("$-1\r\n".utf8))
    }

    /// A missing array (XREAD with nothing to return): RESP2 `*-1`, RESP3 `_`.
    public func nullArray(into out: inout [UInt8]) {
        out.append(contentsOf: version >= 3 ? Array("_\r\n".utf8) : Array("*-1\r\n".utf8))
    }

    public func array(_ count: Int, into out: inout [UInt8]) {
        header(UInt8(ascii: "*"), count, &out)
    }

    /// A map of `pairs` entries: RESP3 `%`, RESP2 a flat array of twice as many elements.
    public func map(_ pairs: Int, into out: inout [UInt8]) {
        if version >= 3 { header(UInt8(ascii: "%"), pairs, &out) } else { header(UInt8(ascii: "*"), pairs * 2, &out) }
    }

    /// Text meant for people (INFO): RESP3 verbatim `=…txt:`, RESP2 a bulk string.
    public func verbatim(_ text: String, into out: inout [UInt8]) {
        guard version >= 3 else { return bulk(text, into: &out) }
        header(UInt8(ascii: "="), text.utf8.count + 4, &out)
        out.append(contentsOf: "txt:".utf8)
        out.append(contentsOf: text.utf8)
        crlf(&out)
    }

    private func header(_ type: UInt8, _ count: Int, _ out: inout [UInt8]) {
        out.append(type)
        out.append(contentsOf: String(count).utf8)
        crlf(&out)
    }

    private func crlf(_ out: inout [UInt8]) {
        out.append(13)
        out.append(10)
    }
}
