// The binary encoding: frames of `u32 length` (big-endian, bytes that follow) + `u8 opcode`
// + body. Decoding is incremental and never allocates more than the frame limit allows.

/// Why bytes could not be decoded. `closesConnection` is true for framing errors, after
/// which the stream cannot be resynchronised.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String
    public let closesConnection: Bool

    public init(_ code: ErrorCode, _ message: String, closesConnection: Bool) {
        self.code = code
        self.message = message
        self.closesConnection = closesConnection
    }

    public var description: String { "\(code.name): \(message)" }
}

/// A complete frame found in a buffer.
public struct Frame: Sendable, Equatable {
    public let opcode: UInt8
    public let body: ArraySlice<UInt8>

    public init(opcode: UInt8, body: ArraySlice<UInt8>) {
        self.opcode = opcode
        self.body = body
    }
}

public enum BinaryCodec {
    /// Finds the frame starting at `buffer[offset...]`. Returns nil when more bytes are needed,
    /// and the frame plus the offset after it otherwise. Throws for a length over `maxFrameLength`
    /// or zero (a frame needs at least its opcode).
    public static func nextFrame(
        in buffer: ArraySlice<UInt8>, maxFrameLength: Int = ProtocolLimits.maxFrameLength
    ) throws(ProtocolError) -> (frame: Frame, consumed: Int)? {
        guard buffer.count >= 4 else { return nil }
        let start = buffer.startIndex
        let length = Int(readU32(buffer, at: start))
        guard length >= 1 else { throw ProtocolError(.badRequest, "frame length 0 has no opcode", closesConnection: true) }
        guard length <= maxFrameLength else {
            throw ProtocolError(.tooLarge, "frame of \(length) bytes exceeds the limit of \(maxFrameLength)", closesConnection: true)
        }
        guard buffer.count >= 4 + length else { return nil }
        let opcode = buffer[start + 4]
        let body = buffer[(start + 5)..<(start + 4 + length)]
        return (Frame(opcode: opcode, body: body), 4 + length)
    }

    // MARK: Requests

    /// Decodes a request frame. Unknown opcodes and bodies that do not match their fields are
    /// framing errors; an APPEND with count 0 is a bad request that keeps the connection.
    public static func decodeRequest(_ frame: Frame) throws(ProtocolError) -> Request {
        var body = BodyReader(frame.body)
        switch Opcode(rawValue: frame.opcode) {
        case .append:
            let flags = try body.u8("flags")
            let expected = flags & 2 == 2 ? try body.u64("expectedLSN") : nil
            let count = try body.u32("count")
            // Each record needs at least its 4-byte length: bound the array before allocating.
            guard Int(count) <= body.remaining / 4 else {
                throw ProtocolError(.badRequest, "APPEND count \(count) is larger than the body holds", closesConnection: true)
            }
            var records: [ArraySlice<UInt8>] = []
            records.reserveCapacity(Int(count))
            for index in 0..<Int(count) {
                let length = try body.u32("length of record \(index)")
                records.append(try body.bytes(Int(length), "record \(index)"))
            }
            try body.expectEnd("APPEND")
            guard count > 0 else { throw ProtocolError(.badRequest, "APPEND with count 0", closesConnection: false) }
            return .append(records: records, buffered: flags & 1 == 1, expectedLSN: expected)
        case .replay:
            let from = try body.u64("fromLSN")
            let maxCount = try body.u64("maxCount")
            let flags = try body.u8("flags")
            try body.expectEnd("REPLAY")
            return .replay(from: from, maxCount: maxCount, follow: flags & 1 == 1)
        case .sync:
            try body.expectEnd("SYNC")
            return .sync
        case .info:
            try body.expectEnd("INFO")
            return .info
        case .ping:
            return .ping(frame.body)
        case .truncate:
            let before = try body.u64("beforeLSN")
            try body.expectEnd("TRUNCATE")
            return .truncate(before: before)
        case .feedback:
            let lsn = try body.u64("durableLSN")
            try body.expectEnd("FEEDBACK")
            return .feedback(durableLSN: lsn)
        case .auth:
            return .auth(token: frame.body)
        case .promote:
            try body.expectEnd("PROMOTE")
            return .promote
        default:
            throw ProtocolError(.badRequest, "unknown opcode 0x\(String(frame.opcode, radix: 16))", closesConnection: true)
        }
    }

    /// The length field of the frame `encode` would write for `request` (opcode and body), so a
    /// sender can refuse a request over `ProtocolLimits.maxFrameLength` before encoding it: the
    /// u32 lengths of a frame cannot hold 4 GiB or more. 0 for text-only requests.
    public static func encodedLength(of request: Request) -> Int {
        switch request {
        case .append(let records, _, let expected): 1 + 1 + (expected == nil ? 0 : 8) + 4 + records.reduce(0) { $0 + 4 + $1.count }
        case .replay: 1 + 8 + 8 + 1
        case .sync, .info, .promote: 1
        case .ping(let bytes): 1 + bytes.count
        case .truncate, .feedback: 1 + 8
        case .auth(let token): 1 + token.count
        case .quit, .metrics: 0
        }
    }

    /// Appends the frame for `request` (text-only requests are not encodable and are skipped).
    /// The request must fit one frame (`encodedLength(of:)` at most `maxFrameLength`).
    public static func encode(_ request: Request, into out: inout [UInt8]) {
        let start = beginFrame(&out)
        switch request {
        case .append(let records, let buffered, let expected):
            out.append(Opcode.append.rawValue)
            out.append((buffered ? 1 : 0) | (expected == nil ? 0 : 2))
            if let expected { appendU64(expected, &out) }
            appendU32(UInt32(records.count), &out)
            for record in records {
                appendU32(UInt32(record.count), &out)
                out.append(contentsOf: record)
            }
        case .replay(let from, let maxCount, let follow):
            out.append(Opcode.replay.rawValue)
            appendU64(from, &out)
            appendU64(maxCount, &out)
            out.append(follow ? 1 : 0)
        case .sync: out.append(Opcode.sync.rawValue)
        case .info: out.append(Opcode.info.rawValue)
        case .ping(let bytes):
            out.append(Opcode.ping.rawValue)
            out.append(contentsOf: bytes)
        case .truncate(let before):
            out.append(Opcode.truncate.rawValue)
            appendU64(before, &out)
        case .feedback(let lsn):
            out.append(Opcode.feedback.rawValue)
            appendU64(lsn, &out)
        case .auth(let token):
            out.append(Opcode.auth.rawValue)
            out.append(contentsOf: token)
        case .promote: out.append(Opcode.promote.rawValue)
        case .quit, .metrics:
            out.removeSubrange(start...)
            return
        }
        endFrame(&out, start)
    }

    // MARK: Responses

    /// Appends the frame for `response` (text-only responses become nothing).
    public static func encode(_ response: Response, into out: inout [UInt8]) {
        let start = beginFrame(&out)
        switch response {
        case .appended(let first, let count):
            out.append(Opcode.appended.rawValue)
            appendU64(first, &out)
            appendU32(count, &out)
        case .record(let lsn, let payload):
            out.append(Opcode.record.rawValue)
            appendU64(lsn, &out)
            out.append(contentsOf: payload)
        case .end(let next):
            out.append(Opcode.end.rawValue)
            appendU64(next, &out)
        case .synced(let lsn):
            out.append(Opcode.synced.rawValue)
            appendU64(lsn, &out)
        case .info(let json):
            out.append(Opcode.infoReply.rawValue)
            out.append(contentsOf: json.utf8)
        case .pong(let bytes):
            out.append(Opcode.pong.rawValue)
            out.append(contentsOf: bytes)
        case .truncated(let first):
            out.append(Opcode.truncated.rawValue)
            appendU64(first, &out)
        case .ok: out.append(Opcode.ok.rawValue)
        case .promoted(let last):
            out.append(Opcode.promoted.rawValue)
            appendU64(last, &out)
        case .error(let code, let message):
            out.append(Opcode.error.rawValue)
            out.append(UInt8(code.rawValue >> 8))
            out.append(UInt8(code.rawValue & 0xFF))
            out.append(contentsOf: message.utf8)
        case .bye, .metrics:
            out.removeSubrange(start...)
            return
        }
        endFrame(&out, start)
    }

    /// Appends a RECORD frame without building a `Response` (the replay hot path).
    public static func encodeRecord(lsn: UInt64, payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        appendU32(UInt32(9 + payload.count), &out)
        out.append(Opcode.record.rawValue)
        appendU64(lsn, &out)
        out.append(contentsOf: payload)
    }

    /// Decodes a response frame (client side).
    public static func decodeResponse(_ frame: Frame) throws(ProtocolError) -> Response {
        var body = BodyReader(frame.body)
        let response: Response
        switch Opcode(rawValue: frame.opcode) {
        case .appended: response = .appended(firstLSN: try body.u64("firstLSN"), count: try body.u32("count"))
        case .record: return .record(lsn: try body.u64("lsn"), payload: body.rest())
        case .end: response = .end(nextLSN: try body.u64("nextLSN"))
        case .synced: response = .synced(durableLSN: try body.u64("durableLSN"))
        case .infoReply: return .info(json: String(decoding: frame.body, as: UTF8.self))
        case .pong: return .pong(frame.body)
        case .truncated: response = .truncated(firstLSN: try body.u64("firstLSN"))
        case .ok: response = .ok
        case .promoted: response = .promoted(lastLSN: try body.u64("lastLSN"))
        case .error:
            let raw = UInt16(try body.u8("code")) << 8 | UInt16(try body.u8("code"))
            let message = String(decoding: body.rest(), as: UTF8.self)
            return .error(ErrorCode(rawValue: raw) ?? .badRequest, message)
        default:
            throw ProtocolError(.badRequest, "unknown response opcode 0x\(String(frame.opcode, radix: 16))", closesConnection: true)
        }
        try body.expectEnd("response 0x\(String(frame.opcode, radix: 16))")
        return response
    }

    // MARK: Helpers

    private static func beginFrame(_ out: inout [UInt8]) -> Int {
        let start = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        return start
    }

    private static func endFrame(_ out: inout [UInt8], _ start: Int) {
        let length = UInt32(out.count - start - 4)
        out[start] = UInt8(length >> 24)
        out[start + 1] = UInt8((length >> 16) & 0xFF)
        out[start + 2] = UInt8((length >> 8) & 0xFF)
        out[start + 3] = UInt8(length & 0xFF)
    }

    @inline(__always) static func appendU32(_ value: UInt32, _ out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
    }

    @inline(__always) static func appendU64(_ value: UInt64, _ out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
    }

    static func readU32(_ bytes: ArraySlice<UInt8>, at index: Int) -> UInt32 {
        UInt32(bytes[index]) << 24 | UInt32(bytes[index + 1]) << 16 | UInt32(bytes[index + 2]) << 8 | UInt32(bytes[index + 3])
    }
}

/// Reads big-endian fields from a frame body; running short is a framing error.
struct BodyReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    var remaining: Int { bytes.endIndex - position }

    mutating func u8(_ field: String) throws(ProtocolError) -> UInt8 {
        try need(1, field)
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32(_ field: String) throws(ProtocolError) -> UInt32 {
        try need(4, field)
        defer { position += 4 }
        return BinaryCodec.readU32(bytes, at: position)
    }

    mutating func u64(_ field: String) throws(ProtocolError) -> UInt64 {
        try need(8, field)
        let high = UInt64(BinaryCodec.readU32(bytes, at: position))
        let low = UInt64(BinaryCodec.readU32(bytes, at: position + 4))
        position += 8
        return high << 32 | low
    }

    mutating func bytes(_ count: Int, _ field: String) throws(ProtocolError) -> ArraySlice<UInt8> {
        try need(count, field)
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func rest() -> ArraySlice<UInt8> {
        defer { position = bytes.endIndex }
        return bytes[position...]
    }

    func expectEnd(_ message: String) throws(ProtocolError) {
        guard position == bytes.endIndex else {
            throw ProtocolError(.badRequest, "\(message) body has \(remaining) bytes more than its fields", closesConnection: true)
        }
    }

    private func need(_ count: Int, _ field: String) throws(ProtocolError) {
        guard remaining >= count else {
            throw ProtocolError(.badRequest, "frame body too short for \(field)", closesConnection: true)
        }
    }
}

// MARK: In place

/// Reads a request frame where it lies in a connection's input buffer, without copying: the
/// server's hot path (APPEND, PING). The checks and messages are those of `decodeRequest`.
public enum FrameView {
    /// The length field of the frame at the start of `bytes`, or nil when fewer than 4 bytes
    /// are there. Throws for a length of 0 or over `maxFrameLength` (the connection closes).
    public static func length(
        of bytes: UnsafeRawBufferPointer, maxFrameLength: Int
    ) throws(ProtocolError) -> Int? {
        guard bytes.count >= 4 else { return nil }
        let length = Int(readU32(bytes, at: 0))
        guard length >= 1 else { throw ProtocolError(.badRequest, "frame length 0 has no opcode", closesConnection: true) }
        guard length <= maxFrameLength else {
            throw ProtocolError(.tooLarge, "frame of \(length) bytes exceeds the limit of \(maxFrameLength)", closesConnection: true)
        }
        return length
    }

    /// An APPEND body (after the opcode) checked field by field: the records region holds
    /// exactly `count` × (`len:u32` `bytes`). Throws like `decodeRequest`.
    public static func append(
        body: UnsafeRawBufferPointer
    ) throws(ProtocolError) -> (buffered: Bool, expectedLSN: UInt64?, count: Int, records: UnsafeRawBufferPointer) {
        guard body.count >= 1 else { throw short("flags") }
        let flags = body[0]
        var position = 1
        var expected: UInt64?
        if flags & 2 == 2 {
            guard body.count >= 9 else { throw short("expectedLSN") }
            expected = UInt64(readU32(body, at: 1)) << 32 | UInt64(readU32(body, at: 5))
            position = 9
        }
        guard body.count >= position + 4 else { throw short("count") }
        let count = Int(readU32(body, at: position))
        let records = UnsafeRawBufferPointer(rebasing: body[(position + 4)...])
        // Each record needs at least its 4-byte length.
        guard count <= records.count / 4 else {
            throw ProtocolError(.badRequest, "APPEND count \(count) is larger than the body holds", closesConnection: true)
        }
        var offset = 0
        for index in 0..<count {
            guard records.count - offset >= 4 else { throw short("length of record \(index)") }
            let length = Int(readU32(records, at: offset))
            offset += 4
            guard records.count - offset >= length else { throw short("record \(index)") }
            offset += length
        }
        guard offset == records.count else {
            throw ProtocolError(.badRequest, "APPEND body has \(records.count - offset) bytes more than its fields", closesConnection: true)
        }
        guard count > 0 else { throw ProtocolError(.badRequest, "APPEND with count 0", closesConnection: false) }
        return (flags & 1 == 1, expected, count, records)
    }

    private static func short(_ field: String) -> ProtocolError {
        ProtocolError(.badRequest, "frame body too short for \(field)", closesConnection: true)
    }

    @inline(__always) static func readU32(_ bytes: UnsafeRawBufferPointer, at index: Int) -> UInt32 {
        UInt32(bytes[index]) << 24 | UInt32(bytes[index + 1]) << 16 | UInt32(bytes[index + 2]) << 8 | UInt32(bytes[index + 3])
    }
}

extension BinaryCodec {
    /// Appends an APPENDED frame (the durable-append hot path: no `Response` built).
    @inline(__always)
    public static func encodeAppended(firstLSN: UInt64, count: UInt32, into out: inout [UInt8]) {
        appendU32(13, &out)
        out.append(Opcode.appended.rawValue)
        appendU64(firstLSN, &out)
        appendU32(count, &out)
    }

    /// Appends a PONG frame echoing `payload`.
    public static func encodePong(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        appendU32(UInt32(1 + payload.count), &out)
        out.append(Opcode.pong.rawValue)
        out.append(contentsOf: payload)
    }
}
