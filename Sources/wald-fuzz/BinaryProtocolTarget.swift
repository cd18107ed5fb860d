// Target `binary`: the input is a byte stream as a client (requests) or a server (responses)
// would send it. Walks it frame by frame like a connection does and decodes each frame both
// as a request and as a response. Properties: no crash; a length over the limit is refused
// from the 4 length bytes alone (nothing is buffered or allocated for it); a frame never
// exceeds the limit; whatever decodes re-encodes to something that decodes to the same value.
import WALProtocol

enum BinaryProtocolTarget {
    /// A small configured limit, so the fuzzer reaches both sides of it.
    static let maxFrameLength = 4096

    static func run(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let rest = bytes[offset...]
            let declared = rest.count >= 4 ? Int(rest[offset]) << 24 | Int(rest[offset + 1]) << 16
                | Int(rest[offset + 2]) << 8 | Int(rest[offset + 3]) : nil
            let found: (frame: Frame, consumed: Int)?
            do {
                found = try BinaryCodec.nextFrame(in: rest, maxFrameLength: maxFrameLength)
            } catch {
                invariant(error.closesConnection, "a framing error must close the connection: \(error)")
                invariant(declared.map { $0 == 0 || $0 > maxFrameLength } ?? false,
                          "nextFrame refused the legal length \(String(describing: declared)): \(error)")
                return
            }
            guard let (frame, consumed) = found else {
                // More bytes needed: only for a legal length whose frame has not fully arrived.
                if let declared {
                    invariant(declared >= 1 && declared <= maxFrameLength, "nextFrame waits for an illegal length \(declared)")
                    invariant(rest.count < 4 + declared, "nextFrame waits although the frame of \(declared) bytes is complete")
                }
                return
            }
            invariant(consumed == 5 + frame.body.count && consumed == 4 + declared!, "frame bounds disagree with its length")
            invariant(frame.body.count < maxFrameLength, "frame body of \(frame.body.count) bytes over the limit")
            invariant(frame.body.startIndex == offset + 5 && frame.opcode == bytes[offset + 4], "frame body is not where the frame is")
            offset += consumed
            checkRequest(frame)
            checkResponse(frame)
        }
    }

    private static func checkRequest(_ frame: Frame) {
        let request: Request
        do {
            request = try BinaryCodec.decodeRequest(frame)
        } catch {
            // Only APPEND with count 0 is a request error that keeps the connection.
            if !error.closesConnection {
                invariant(frame.opcode == Opcode.append.rawValue && error.code == .badRequest, "unexpected non-closing error \(error)")
            }
            return
        }
        if case .append(let records, _, let expectedLSN) = request {
            invariant(!records.isEmpty, "APPEND with no records decoded")
            invariant(records.reduce(0) { $0 + 4 + $1.count } + 5 + (expectedLSN == nil ? 0 : 8) == frame.body.count,
                      "APPEND records do not add up to the body")
        }
        var encoded: [UInt8] = []
        BinaryCodec.encode(request, into: &encoded)
        do {
            guard let (again, used) = try BinaryCodec.nextFrame(in: encoded[...]) else {
                invariant(false, "re-encoded request is not a whole frame")
                return
            }
            invariant(used == encoded.count, "re-encoded request has trailing bytes")
            let decoded = try BinaryCodec.decodeRequest(again)
            invariant(decoded == request, "request round trip changed \(request) into \(decoded)")
        } catch {
            invariant(false, "re-encoded request \(request) does not decode: \(error)")
        }
    }

    private static func checkResponse(_ frame: Frame) {
        guard let response = try? BinaryCodec.decodeResponse(frame) else { return }
        var encoded: [UInt8] = []
        BinaryCodec.encode(response, into: &encoded)
        do {
            guard let (again, used) = try BinaryCodec.nextFrame(in: encoded[...]) else {
                invariant(false, "re-encoded response is not a whole frame")
                return
            }
            invariant(used == encoded.count, "re-encoded response has trailing bytes")
            let decoded = try BinaryCodec.decodeResponse(again)
            invariant(decoded == response, "response round trip changed \(response) into \(decoded)")
        } catch {
            invariant(false, "re-encoded response \(response) does not decode: \(error)")
        }
    }
}
