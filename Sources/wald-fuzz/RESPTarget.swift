// Target `resp`: the bytes a Redis client sends. Walks them request by request like a RESP
// connection does, with a small argument limit so both sides of it are reached. Properties:
// no crash; a parsed request consumed no more than was there, its arguments lie in order
// inside it, each right after its `$<length>\r\n` and right before a CRLF; every proper prefix
// of a parsed request is "need more" (a request split across reads parses the same); "need
// more" never lasts: the same bytes followed by one argument's worth of digits are an error,
// so a connection's buffer stays bounded; the arguments written back canonically parse to the same arguments.
import WALProtocol

enum RESPTarget {
    static let maxBulk = 512

    static func run(_ bytes: [UInt8]) {
        var arguments: [Range<Int>] = []
        // No limit at all (what a caller checking for a whole request might pass): no overflow.
        _ = bytes.withUnsafeBytes { RESPParser.parse($0, maxBulk: Int.max, arguments: &arguments) }
        var offset = 0
        while offset < bytes.count {
            let rest = Array(bytes[offset...])
            let parsed = rest.withUnsafeBytes { RESPParser.parse($0, maxBulk: maxBulk, arguments: &arguments) }
            switch parsed {
            case .error(let message):
                invariant(message.hasPrefix("Protocol error: "), "a RESP error that is not a protocol error: \(message)")
                return
            case .needMore:
                checkNeedMoreIsBounded(rest)
                return
            case .command(let consumed):
                invariant(consumed > 0 && consumed <= rest.count, "consumed \(consumed) of \(rest.count) bytes")
                check(rest, consumed: consumed, arguments: arguments)
                offset += consumed
            }
        }
    }

    private static func check(_ bytes: [UInt8], consumed: Int, arguments: [Range<Int>]) {
        var previousEnd = 0
        for range in arguments {
            invariant(range.lowerBound >= previousEnd && range.upperBound + 2 <= consumed, "argument \(range) out of order or bounds")
            invariant(range.count <= maxBulk, "argument of \(range.count) bytes over the limit")
            invariant(bytes[range.upperBound] == 13 && bytes[range.upperBound + 1] == 10, "argument not followed by CRLF")
            invariant(range.lowerBound >= 4 && bytes[range.lowerBound - 2] == 13 && bytes[range.lowerBound - 1] == 10,
                      "argument not preceded by its header's CRLF")
            previousEnd = range.upperBound + 2
        }
        invariant(arguments.isEmpty ? consumed >= 4 : previousEnd == consumed, "bytes after the last argument were consumed")
        let values = arguments.map { Array(bytes[$0]) }

        // Every proper prefix waits for more (at most 64 cut points, spread over the request).
        let step = max(1, consumed / 64)
        var scratch: [Range<Int>] = []
        for cut in stride(from: 0, to: consumed, by: step) {
            let prefix = Array(bytes[..<cut])
            let again = prefix.withUnsafeBytes { RESPParser.parse($0, maxBulk: maxBulk, arguments: &scratch) }
            invariant(again == .needMore, "a \(cut)-byte prefix of a \(consumed)-byte request parsed as \(again)")
        }

        // Canonical form: `*<n>` then `$<len>` and the bytes of each argument.
        var canonical = Array("*\(values.count)\r\n".utf8)
        for value in values { canonical += Array("$\(value.count)\r\n".utf8) + value + [13, 10] }
        let reparsed = canonical.withUnsafeBytes { RESPParser.parse($0, maxBulk: maxBulk, arguments: &scratch) }
        invariant(reparsed == .command(consumed: canonical.count), "canonical form parsed as \(reparsed)")
        invariant(scratch.map { Array(canonical[$0]) } == values, "canonical form changed the arguments")
    }

    /// A buffer the parser waits on, followed by more than one argument's worth of digits (no
    /// CRLF), is an error: a header line has grown past its limit, a digit stands where `$`
    /// or a CRLF must, or a line count is not a number. So no client keeps a connection
    /// waiting on an ever-growing buffer.
    private static func checkNeedMoreIsBounded(_ rest: [UInt8]) {
        var scratch: [Range<Int>] = []
        let longer = rest + [UInt8](repeating: UInt8(ascii: "7"), count: maxBulk + 40)
        let parsed = longer.withUnsafeBytes { RESPParser.parse($0, maxBulk: maxBulk, arguments: &scratch) }
        if case .error = parsed { return }
        invariant(false, "\(rest.count) buffered bytes and \(maxBulk + 40) digits still parse as \(parsed)")
    }
}
