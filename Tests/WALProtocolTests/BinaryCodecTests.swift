// The binary codec at the edges of its fields: every u64 round-trips, and a sender can tell a
// request's frame length before encoding it (the u32 length fields cannot hold 4 GiB).
import Testing

@testable import WALProtocol

@Suite struct BinaryCodecEdgeTests {
    static let edges: [UInt64] = [0, 1, 4_294_967_295, 4_294_967_296, 4_294_967_297, 1 << 63, .max - 1, .max]

    private func roundTrip(_ request: Request) throws -> Request {
        var bytes: [UInt8] = []
        BinaryCodec.encode(request, into: &bytes)
        let (frame, used) = try #require(try BinaryCodec.nextFrame(in: bytes[...]))
        #expect(used == bytes.count && bytes.count == 4 + BinaryCodec.encodedLength(of: request))
        return try BinaryCodec.decodeRequest(frame)
    }

    @Test(arguments: edges)
    func everyU64FieldRoundTripsAtItsEdges(value: UInt64) throws {
        for request in [Request.replay(from: value, maxCount: value, follow: true), .replay(from: value, maxCount: 0, follow: false),
                        .truncate(before: value), .feedback(durableLSN: value)] {
            #expect(try roundTrip(request) == request)
        }
        var bytes: [UInt8] = []
        BinaryCodec.encode(Response.appended(firstLSN: value, count: .max), into: &bytes)
        let (frame, _) = try #require(try BinaryCodec.nextFrame(in: bytes[...]))
        #expect(try BinaryCodec.decodeResponse(frame) == .appended(firstLSN: value, count: .max))
    }

    @Test func theEncodedLengthOfEveryRequestIsWhatEncodeWrites() throws {
        let requests: [Request] = [
            .append(records: [[1, 2, 3], [], [4]], buffered: true), .replay(from: 1, maxCount: 2, follow: false), .sync, .info,
            .ping([9, 9]), .truncate(before: 3), .feedback(durableLSN: 4), .auth(token: Array("s3cret".utf8)[...]), .promote,
        ]
        for request in requests { #expect(try roundTrip(request) == request) }
        #expect(BinaryCodec.encodedLength(of: .quit) == 0 && BinaryCodec.encodedLength(of: .metrics) == 0)
    }

    @Test func anAppendOverTheFrameLimitIsKnownToBeSoWithoutEncodingIt() {
        let record = ArraySlice([UInt8](repeating: 0, count: 1 << 20))
        let request = Request.append(records: Array(repeating: record, count: 16), buffered: false)
        #expect(BinaryCodec.encodedLength(of: request) == 6 + 16 * (4 + (1 << 20)))
        #expect(BinaryCodec.encodedLength(of: request) > ProtocolLimits.maxFrameLength)
    }

    @Test(arguments: [UInt32(0), 1, .max])
    func anAppendCountThatTheBodyCannotHoldIsRefusedBeforeAllocating(count: UInt32) {
        let body: [UInt8] = [0] + withUnsafeBytes(of: count.bigEndian, Array.init)
        #expect(throws: ProtocolError.self) { try BinaryCodec.decodeRequest(Frame(opcode: 0x01, body: body[...])) }
    }
}
