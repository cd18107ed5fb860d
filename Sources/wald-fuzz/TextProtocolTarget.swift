// Target `text`: the input is what a person (or a program) types into `nc`. Walks it line by
// line like a text connection does and parses each line. Properties: no crash; a line is
// never longer than the limit and never contains its terminator; input without a line end is
// refused once it exceeds the limit (so a connection's buffer stays bounded); a parsed
// request, written back as a canonical command line, parses to the same request.
import WALProtocol

enum TextProtocolTarget {
    /// A small configured limit, so the fuzzer reaches both sides of it.
    static let maxLineLength = 256

    static func run(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let rest = bytes[offset...]
            let found: (line: ArraySlice<UInt8>, consumed: Int)?
            do {
                found = try TextCodec.nextLine(in: rest, maxLineLength: maxLineLength)
            } catch {
                invariant(error.code == .tooLarge && error.closesConnection, "unexpected line error \(error)")
                invariant(rest.count > maxLineLength, "a line within the limit was refused")
                return
            }
            guard let (line, consumed) = found else {
                invariant(!rest.contains(10), "no line found although a line end is buffered")
                invariant(rest.count <= maxLineLength + 1, "\(rest.count) bytes buffered without a line end and not refused")
                return
            }
            invariant(line.count <= maxLineLength, "line of \(line.count) bytes over the limit")
            invariant(!line.contains(10), "line contains its terminator")
            invariant(line.startIndex == offset && consumed >= line.count + 1 && consumed <= line.count + 2,
                      "line bounds disagree with what was consumed")
            invariant(bytes[offset + consumed - 1] == 10, "consumed does not end at the line end")
            offset += consumed
            check(line)
        }
    }

    private static func check(_ line: ArraySlice<UInt8>) {
        let request: Request
        do {
            request = try TextCodec.parse(line)
        } catch {
            invariant(error.code == .badRequest && !error.closesConnection, "a bad command must keep the connection: \(error)")
            return
        }
        let canonical: [UInt8]
        switch request {
        case .append(let records, _, let expectedLSN):
            invariant(records.count == 1, "a text APPEND carries one record")
            canonical = Array((expectedLSN.map { "APPENDAT \($0) " } ?? "APPEND ").utf8) + records[0]
        case .replay(let from, let count, let follow):
            canonical = Array("REPLAY \(from) \(count)\(follow ? " FOLLOW" : "")".utf8)
        case .sync: canonical = Array("SYNC".utf8)
        case .info: canonical = Array("INFO".utf8)
        case .ping(let bytes): canonical = Array("PING ".utf8) + bytes
        case .truncate(let before): canonical = Array("TRUNCATE \(before)".utf8)
        case .auth(let token): canonical = Array("AUTH ".utf8) + token
        case .quit: canonical = Array("QUIT".utf8)
        case .metrics: canonical = Array("METRICS".utf8)
        case .promote: canonical = Array("PROMOTE".utf8)
        case .feedback: invariant(false, "FEEDBACK has no text form but was parsed from text"); return
        }
        do {
            let again = try TextCodec.parse(canonical[...])
            invariant(again == request, "text round trip changed \(request) into \(again)")
        } catch {
            invariant(false, "canonical line for \(request) does not parse: \(error)")
        }
    }
}
