// The text encoding, for people with `nc`: one command per line (`\n` or `\r\n`), replies
// end with `\r\n`. Chosen when a connection's first byte is an ASCII letter.

public enum TextCodec {
    /// Finds the next complete line in `buffer`. Returns nil when no line end has arrived yet;
    /// throws TOO_LARGE (closing) when a line exceeds `maxLineLength`.
    public static func nextLine(
        in buffer: ArraySlice<UInt8>, maxLineLength: Int = ProtocolLimits.maxLineLength
    ) throws(ProtocolError) -> (line: ArraySlice<UInt8>, consumed: Int)? {
        guard let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.count > maxLineLength + 1 {
                throw ProtocolError(.tooLarge, "line longer than \(maxLineLength) bytes", closesConnection: true)
            }
            return nil
        }
        var end = newline
        if end > buffer.startIndex && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end - buffer.startIndex <= maxLineLength else {
            throw ProtocolError(.tooLarge, "line longer than \(maxLineLength) bytes", closesConnection: true)
        }
        return (buffer[buffer.startIndex..<end], newline - buffer.startIndex + 1)
    }

    /// Every command `parse` knows, as the unknown-command error lists them.
    public static let commands = ["PING", "APPEND", "APPENDAT", "REPLAY", "SYNC", "INFO", "TRUNCATE", "AUTH", "METRICS",
                                  "PROMOTE", "QUIT"]

    /// Parses one command line. Unknown commands and bad arguments are BAD_REQUEST and keep
    /// the connection open.
    public static func parse(_ line: ArraySlice<UInt8>) throws(ProtocolError) -> Request {
        let space = line.firstIndex(of: UInt8(ascii: " ")) ?? line.endIndex
        let command = String(decoding: line[line.startIndex..<space], as: UTF8.self).uppercased()
        let rest = space < line.endIndex ? line[(space + 1)...] : line[line.endIndex...]
        let words = rest.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        func bad(_ message: String) -> ProtocolError { ProtocolError(.badRequest, message, closesConnection: false) }
        func number(_ text: String, _ what: String) throws(ProtocolError) -> UInt64 {
            if let value = UInt64(text) { return value }
            // Only decimal digits, yet no u64: say that the number is too large, not that it is no number.
            if !text.isEmpty && text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
                throw bad("\(what) \(quoted(text)) is out of range: the largest allowed is \(UInt64.max)")
            }
            throw bad("\(what) must be a non-negative integer, got '\(quoted(text))'")
        }
        switch command {
        case "APPEND":
            return .append(records: [ArraySlice(rest)], buffered: false)
        case "APPENDAT":
            // APPENDAT <lsn> <rest of line>: appended only as LSN <lsn>.
            let space = rest.firstIndex(of: UInt8(ascii: " "))
            let word = String(decoding: rest[rest.startIndex..<(space ?? rest.endIndex)], as: UTF8.self)
            guard !word.isEmpty else { throw bad("usage: APPENDAT <lsn> <rest of line>") }
            let lsn = try number(word, "lsn")
            let payload = space.map { rest[($0 + 1)...] } ?? rest[rest.endIndex...]
            return .append(records: [ArraySlice(payload)], buffered: false, expectedLSN: lsn)
        case "REPLAY":
            guard !words.isEmpty, words.count <= 3 else { throw bad("usage: REPLAY <from> [<count>] [FOLLOW]") }
            let from = try number(words[0], "from")
            var count: UInt64 = 0
            var follow = false
            var index = 1
            if index < words.count && words[index].uppercased() != "FOLLOW" {
                count = try number(words[index], "count")
                index += 1
            }
            if index < words.count && words[index].uppercased() == "FOLLOW" {
                follow = true
                index += 1
            }
            guard index == words.count else { throw bad("usage: REPLAY <from> [<count>] [FOLLOW]") }
            return .replay(from: from, maxCount: count, follow: follow)
        case "SYNC": return try noArguments(.sync, words, "SYNC")
        case "INFO": return try noArguments(.info, words, "INFO")
        case "PING": return .ping(ArraySlice(rest))
        case "TRUNCATE":
            guard words.count == 1 else { throw bad("usage: TRUNCATE <before>") }
            return .truncate(before: try number(words[0], "before"))
        case "AUTH":
            return .auth(token: ArraySlice(rest))
        case "QUIT": return try noArguments(.quit, words, "QUIT")
        case "METRICS": return try noArguments(.metrics, words, "METRICS")
        case "PROMOTE": return try noArguments(.promote, words, "PROMOTE")
        default:
            throw bad("unknown command '\(quoted(command))'; the commands are \(commands.joined(separator: ", "))")
        }
    }

    /// Client text echoed in an error reply: at most 32 characters, and every character outside
    /// printable ASCII as `\xNN` (UTF-8 bytes), so a reply never carries the client's control
    /// bytes (terminal escapes, CR, NUL) back to whoever reads it.
    static func quoted(_ text: String) -> String {
        var out = ""
        for (index, character) in text.enumerated() {
            if index == 32 { return out + "…" }
            for byte in character.utf8 {
                if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                    out.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    out += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
                }
            }
        }
        return out
    }

    private static func noArguments(_ request: Request, _ words: [String], _ name: String) throws(ProtocolError) -> Request {
        guard words.isEmpty else { throw ProtocolError(.badRequest, "\(name) takes no arguments", closesConnection: false) }
        return request
    }

    /// Appends the text form of `response`.
    public static func encode(_ response: Response, into out: inout [UInt8]) {
        switch response {
        case .appended(let first, _): line("OK \(first)", &out)
        case .record(let lsn, let payload):
            line("RECORD \(lsn) \(payload.count)", &out)
            out.append(contentsOf: payload)
            out.append(contentsOf: [13, 10])
        case .end(let next): line("END \(next)", &out)
        case .synced(let lsn): line("SYNCED \(lsn)", &out)
        case .info(let json): line(json, &out)
        case .pong: line("PONG", &out)
        case .truncated(let first): line("OK \(first)", &out)
        case .ok: line("OK", &out)
        case .promoted(let last): line("OK \(last)", &out)
        case .error(let code, let message): line("ERR \(code.name) \(message)", &out)
        case .bye: line("BYE", &out)
        case .metrics(let text):
            out.append(contentsOf: text.utf8)
            line("# EOF", &out)
        }
    }

    /// Appends a RECORD reply without building a `Response` (the replay hot path).
    public static func encodeRecord(lsn: UInt64, payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        line("RECORD \(lsn) \(payload.count)", &out)
        out.append(contentsOf: payload)
        out.append(contentsOf: [13, 10])
    }

    private static func line(_ text: String, _ out: inout [UInt8]) {
        out.append(contentsOf: text.utf8)
        out.append(contentsOf: [13, 10])
    }
}
