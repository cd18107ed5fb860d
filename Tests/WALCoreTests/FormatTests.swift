// The on-disk format as pure functions: CRC32C (hardware and portable paths), the segment
// header, the record frame, segment file names and log identities.
import Testing
@testable import WALCore

@Suite struct CRC32CTests {
    /// Published CRC32C check values (RFC 3720 appendix B.4 and the usual "123456789").
    static let vectors: [(name: String, bytes: [UInt8], crc: UInt32)] = [
        ("123456789", Array("123456789".utf8), 0xE306_9283),
        ("32 zero bytes", [UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ("32 0xFF bytes", [UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ("0..31 ascending", (0..<32).map { UInt8($0) }, 0x46DD_794E),
        ("31..0 descending", (0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
    ]

    @Test(arguments: 0..<vectors.count)
    func hardwarePathMatchesKnownVector(_ index: Int) {
        let vector = Self.vectors[index]
        #expect(CRC32C.checksum(vector.bytes) == vector.crc, "\(vector.name)")
    }

    @Test(arguments: 0..<vectors.count)
    func softwarePathMatchesKnownVector(_ index: Int) {
        let vector = Self.vectors[index]
        let crc = vector.bytes.withUnsafeBytes { CRC32C.softwareChecksum($0) }
        #expect(crc == vector.crc, "\(vector.name)")
    }

    @Test func emptyInputHasChecksumZero() {
        #expect(CRC32C.checksum([]) == 0)
        #expect([UInt8]().withUnsafeBytes { CRC32C.softwareChecksum($0) } == 0)
    }

    /// The C code switches to three interleaved 4 KiB stripes at 12 KiB: cover lengths on both
    /// sides of every boundary, odd tails, and unaligned starts.
    @Test func hardwareMatchesSoftwareOnRandomBuffersOfManyLengths() {
        var rng = SplitMix64(seed: 0xC0FFEE)
        var lengths = Array(0...80) + [255, 256, 257, 1023, 4095, 4096, 4097, 8191, 8192, 8200]
        lengths += [12_287, 12_288, 12_289, 12_295, 12_296, 16_384, 24_575, 24_576, 24_577, 36_871, 65_536, 100_003]
        let big = (0..<(100_003 + 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        big.withUnsafeBytes { all in
            for length in lengths {
                for start in [0, 1, 3, 7] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let seed = UInt32(truncatingIfNeeded: rng.next())
                    #expect(CRC32C.checksum(slice) == CRC32C.softwareChecksum(slice), "length \(length) start \(start)")
                    #expect(CRC32C.checksum(slice, continuing: seed) == CRC32C.softwareChecksum(slice, continuing: seed),
                            "length \(length) start \(start) continuing \(seed)")
                }
            }
        }
    }

    @Test func continuingEqualsChecksumOfConcatenation() {
        var rng = SplitMix64(seed: 42)
        let bytes = (0..<40_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let whole = CRC32C.checksum(bytes)
        for split in [0, 1, 9, 4096, 12_288, 12_289, 20_000, 39_999, 40_000] {
            let a = Array(bytes[..<split]), b = Array(bytes[split...])
            #expect(CRC32C.checksum(b, continuing: CRC32C.checksum(a)) == whole, "split \(split)")
            let software = a.withUnsafeBytes { ra in
                b.withUnsafeBytes { rb in CRC32C.softwareChecksum(rb, continuing: CRC32C.softwareChecksum(ra)) }
            }
            #expect(software == whole, "software split \(split)")
        }
    }

    @Test func hardwareInstructionIsUsedOnX86() {
        #if arch(x86_64)
        // Every x86-64 machine this runs on has SSE4.2; if not, the hardware tests above only test the fallback.
        #expect(CRC32C.hardwareAvailable)
        #endif
    }
}

@Suite struct SegmentHeaderTests {
    static let logID = LogID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0ff")!
    static let header = SegmentHeader(logID: logID, firstLSN: 1234, previousFirstLSN: 567, createdMillis: 1_700_000_000_123)

    @Test func encodeDecodeRoundTrips() throws {
        let bytes = Self.header.encoded()
        #expect(bytes.count == SegmentHeader.size)
        #expect(Array(bytes[0..<8]) == SegmentHeader.magic)
        #expect(try SegmentHeader.decode(bytes) == Self.header)
    }

    @Test func decodeIgnoresBytesAfterTheHeader() throws {
        #expect(try SegmentHeader.decode(Self.header.encoded() + [1, 2, 3]) == Self.header)
    }

    @Test func shortInputIsTooShort() {
        let bytes = Array(Self.header.encoded().prefix(63))
        #expect(throws: SegmentHeader.DecodeError.tooShort(63)) { try SegmentHeader.decode(bytes) }
        #expect(throws: SegmentHeader.DecodeError.tooShort(0)) { try SegmentHeader.decode([]) }
    }

    @Test func wrongMagicIsBadMagic() {
        var bytes = Self.header.encoded()
        bytes[0] = UInt8(ascii: "X")
        #expect(throws: SegmentHeader.DecodeError.badMagic) { try SegmentHeader.decode(bytes) }
        #expect(throws: SegmentHeader.DecodeError.badMagic) { try SegmentHeader.decode([UInt8](repeating: 0, count: 64)) }
    }

    @Test func otherVersionIsUnsupported() {
        for version: UInt8 in [0, 4] {
            var bytes = Self.header.encoded()
            bytes[8] = version
            #expect(throws: SegmentHeader.DecodeError.unsupportedVersion(UInt16(version))) { try SegmentHeader.decode(bytes) }
        }
    }

    @Test func versionOneIsStillRead() throws {
        var old = Self.header
        old.version = 1
        let decoded = try SegmentHeader.decode(old.encoded())
        #expect(decoded.version == 1 && decoded.layout == .v1)
        #expect(try SegmentHeader.decode(Self.header.encoded()).layout == .v2)
    }

    /// Version 3 keeps version 2's frames and carries the log's generation at bytes 56..<60;
    /// a version 2 header (whose reserved bytes there are zero) is generation 0.
    @Test func versionThreeCarriesTheGenerationAndVersionTwoIsGenerationZero() throws {
        var header = Self.header
        header.generation = 0x0102_0304
        let bytes = header.encoded()
        #expect(Array(bytes[8..<10]) == [3, 0] && Array(bytes[56..<60]) == [4, 3, 2, 1])
        let decoded = try SegmentHeader.decode(bytes)
        #expect(decoded.generation == 0x0102_0304 && decoded.layout == .v2)
        var old = SegmentHeader(logID: header.logID, firstLSN: 9, previousFirstLSN: 1, createdMillis: 0, version: 2)
        old.generation = 7  // a version 2 header has no place for it
        #expect(try SegmentHeader.decode(old.encoded()).generation == 0)
    }

    /// A well-formed header naming first LSN 0 made open and every walctl command trap on
    /// `firstLSN - 1`; LSNs start at 1, so it is a damaged header.
    @Test func firstLSNZeroIsADamagedHeader() {
        var zero = Self.header
        zero.firstLSN = 0
        #expect(throws: SegmentHeader.DecodeError.firstLSNZero) { try SegmentHeader.decode(zero.encoded()) }
    }

    @Test func otherHeaderSizeIsRejected() {
        var bytes = Self.header.encoded()
        bytes[10] = 128
        #expect(throws: SegmentHeader.DecodeError.badHeaderSize(128)) { try SegmentHeader.decode(bytes) }
    }

    @Test func flippedBitIsChecksumMismatch() {
        var bytes = Self.header.encoded()
        bytes[33] ^= 0x04  // inside firstLSN
        let stored = UInt32(bytes[60]) | UInt32(bytes[61]) << 8 | UInt32(bytes[62]) << 16 | UInt32(bytes[63]) << 24
        let computed = CRC32C.checksum(Array(bytes[0..<60]))
        #expect(throws: SegmentHeader.DecodeError.checksumMismatch(stored: stored, computed: computed)) {
            try SegmentHeader.decode(bytes)
        }
    }
}

/// Version 1 frames (16-byte header), as segments written before version 2 hold them.
@Suite struct RecordFrameTests {
    static func frame(lsn: UInt64, _ payload: [UInt8]) -> [UInt8] {
        var buffer: [UInt8] = []
        payload.withUnsafeBytes { RecordFrame.append(lsn: lsn, committed: 0, payload: $0, to: &buffer, layout: .v1) }
        return buffer
    }

    static func decode(_ bytes: [UInt8], at offset: Int = 0, expected: UInt64?, max: Int = 1 << 20) -> RecordFrame.Decoded {
        bytes.withUnsafeBytes { RecordFrame.decode($0, at: offset, expectedLSN: expected, maxPayload: max, layout: .v1) }
    }

    @Test func roundTripsAPayload() {
        let payload: [UInt8] = Array("hello, log".utf8)
        let bytes = Self.frame(lsn: 77, payload)
        #expect(bytes.count == RecordFrame.Layout.v1.headerSize + payload.count)
        guard case .record(let lsn, let range, let next) = Self.decode(bytes, expected: 77) else {
            Issue.record("not a record")
            return
        }
        #expect(lsn == 77)
        #expect(Array(bytes[range]) == payload)
        #expect(next == bytes.count)
        // With no expected LSN (the corruption search), the same frame decodes too.
        #expect(Self.decode(bytes, expected: nil) == .record(lsn: 77, payload: 16..<26, next: 26))
    }

    @Test func roundTripsAnEmptyPayload() {
        let bytes = Self.frame(lsn: 1, [])
        #expect(bytes.count == RecordFrame.Layout.v1.headerSize)
        #expect(Self.decode(bytes, expected: 1) == .record(lsn: 1, payload: 16..<16, next: 16))
    }

    @Test func consecutiveFramesDecodeAtTheirOffsets() {
        let bytes = Self.frame(lsn: 5, [1, 2, 3]) + Self.frame(lsn: 6, []) + Self.frame(lsn: 7, [9])
        #expect(Self.decode(bytes, at: 0, expected: 5) == .record(lsn: 5, payload: 16..<19, next: 19))
        #expect(Self.decode(bytes, at: 19, expected: 6) == .record(lsn: 6, payload: 35..<35, next: 35))
        #expect(Self.decode(bytes, at: 35, expected: 7) == .record(lsn: 7, payload: 51..<52, next: 52))
    }

    @Test func shortHeaderNeedsMore() {
        let bytes = Self.frame(lsn: 3, [1, 2, 3, 4])
        #expect(Self.decode(Array(bytes.prefix(15)), expected: 3) == .needMore(bytes: 16))
        #expect(Self.decode([], expected: 3) == .needMore(bytes: 16))
    }

    @Test func shortPayloadNeedsMoreWithTheFrameSize() {
        let bytes = Self.frame(lsn: 3, [UInt8](repeating: 7, count: 100))
        #expect(Self.decode(Array(bytes.prefix(50)), expected: 3) == .needMore(bytes: 116))
    }

    @Test func zeroHeaderIsZeroes() {
        #expect(Self.decode([UInt8](repeating: 0, count: 64), expected: 9) == .invalid(.zeroes))
    }

    @Test func lengthAboveMaximumIsLengthTooLarge() {
        let bytes = Self.frame(lsn: 3, [UInt8](repeating: 7, count: 100))
        #expect(Self.decode(bytes, expected: 3, max: 99) == .invalid(.lengthTooLarge(100)))
        #expect(Self.decode(bytes, expected: 3, max: 100) == .record(lsn: 3, payload: 16..<116, next: 116))
    }

    @Test func flippedPayloadBitIsChecksumMismatch() {
        var bytes = Self.frame(lsn: 3, Array("payload".utf8))
        let stored = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        bytes[20] ^= 0x10
        let computed = CRC32C.checksum(Array(bytes[4...]))
        #expect(computed != stored)
        #expect(Self.decode(bytes, expected: 3) == .invalid(.checksumMismatch(stored: stored, computed: computed)))
    }

    @Test func validFrameWithOtherLSNIsUnexpectedLSN() {
        let bytes = Self.frame(lsn: 8, [1, 2])
        #expect(Self.decode(bytes, expected: 9) == .invalid(.unexpectedLSN(found: 8, expected: 9)))
    }

    @Test func damagedFrameWithOtherLSNReportsChecksum() {
        // A stale frame from an older write is damaged too: the checksum is the better reason.
        var bytes = Self.frame(lsn: 8, [1, 2])
        bytes[17] ^= 1
        guard case .invalid(.checksumMismatch) = Self.decode(bytes, expected: 9) else {
            Issue.record("expected checksumMismatch, got \(Self.decode(bytes, expected: 9))")
            return
        }
    }

    @Test func checksumCoversTheLSN() {
        // Rewriting only the LSN field must not produce a frame that passes for another LSN.
        var bytes = Self.frame(lsn: 8, [1, 2])
        bytes[8] = 9
        guard case .invalid(.checksumMismatch) = Self.decode(bytes, expected: 9) else {
            Issue.record("a frame with a rewritten LSN decoded as \(Self.decode(bytes, expected: 9))")
            return
        }
    }
}

@Suite struct SegmentNameTests {
    @Test func makeZeroPadsToTwentyDigits() {
        #expect(SegmentName.make(prefix: "wal-", firstLSN: 1) == "wal-00000000000000000001.wal")
        #expect(SegmentName.make(prefix: "x", firstLSN: UInt64.max) == "x18446744073709551615.wal")
    }

    @Test func parseRoundTrips() {
        for lsn: UInt64 in [0, 1, 42, 1_000_000_007, UInt64.max] {
            #expect(SegmentName.parse(SegmentName.make(prefix: "wal-", firstLSN: lsn), prefix: "wal-") == lsn)
        }
    }

    @Test func namesSortInLSNOrder() {
        let lsns: [UInt64] = [9, 10, 100, 2, 99_999]
        let names = lsns.map { SegmentName.make(prefix: "wal-", firstLSN: $0) }
        #expect(names.sorted().map { SegmentName.parse($0, prefix: "wal-")! } == lsns.sorted())
    }

    @Test(arguments: [
        "other-00000000000000000001.wal",  // wrong prefix
        "wal-00000000000000000001.wal.broken",  // set aside by repair
        "wal-00000000000000000001.tmp",
        "wal-0000000000000000001.wal",  // 19 digits
        "wal-000000000000000000001.wal",  // 21 digits
        "wal-0000000000000000000x.wal",
        "wal-+0000000000000000001.wal",
        "wal-99999999999999999999.wal",  // overflows UInt64
        "wal-.wal",
        "LOCK",
    ])
    func parseRejects(_ name: String) {
        #expect(SegmentName.parse(name, prefix: "wal-") == nil)
    }
}

@Suite struct LogIDTests {
    @Test func stringRoundTrips() {
        for _ in 0..<50 {
            let id = LogID.random()
            #expect(LogID(id.description) == id)
            #expect(LogID(id.description.uppercased()) == id)
        }
    }

    @Test func descriptionIsLowercaseRFC4122() {
        let id = LogID(bytes: Array(0..<16))!
        #expect(id.description == "00010203-0405-0607-0809-0a0b0c0d0e0f")
    }

    @Test func randomIsVersion4() {
        let id = LogID.random()
        #expect(id.bytes[6] >> 4 == 4)
        #expect(id.bytes[8] >> 6 == 0b10)
    }

    @Test(arguments: [
        "", "00010203-0405-0607-0809-0a0b0c0d0e0", "00010203-0405-0607-0809-0a0b0c0d0e0f0",
        "0001020304050607080900a0b0c0d0e0f000", "00010203-0405-0607-0809-0a0b0c0d0e0g",
        "000102030405060708090a0b0c0d0e0f",
        "+0010203-0405-0607-0809-0a0b0c0d0e0f",  // a sign is not a hex digit
        "000102030405060708090a0b0c0d0e0f----",  // dashes in the wrong places
        "0001020-30405-0607-0809-0a0b0c0d0e0f",
    ])
    func parseRejects(_ text: String) {
        #expect(LogID(text) == nil)
    }

    @Test func bytesMustBeSixteen() {
        #expect(LogID(bytes: Array(repeating: 0, count: 15)) == nil)
        #expect(LogID(bytes: Array(repeating: 0, count: 17)) == nil)
    }
}

/// Version 2 frames: a 24-byte header whose committed LSN is inside the checksum.
@Suite struct RecordFrameV2Tests {
    static func frame(lsn: UInt64, committed: UInt64, _ payload: [UInt8]) -> [UInt8] {
        var buffer: [UInt8] = []
        payload.withUnsafeBytes { RecordFrame.append(lsn: lsn, committed: committed, payload: $0, to: &buffer) }
        return buffer
    }

    static func decode(_ bytes: [UInt8], expected: UInt64?) -> RecordFrame.Decoded {
        bytes.withUnsafeBytes { RecordFrame.decode($0, at: 0, expectedLSN: expected, maxPayload: 1 << 20, layout: .v2) }
    }

    @Test func roundTripsAPayloadAndItsCommittedLSN() {
        let bytes = Self.frame(lsn: 9, committed: 7, Array("abc".utf8))
        #expect(RecordFrame.headerSize == 24 && bytes.count == 27)
        #expect(Self.decode(bytes, expected: 9) == .record(lsn: 9, payload: 24..<27, next: 27))
        #expect(bytes.withUnsafeBytes { RecordFrame.committed(in: $0, at: 0, layout: .v2) } == 7)
        #expect(bytes.withUnsafeBytes { RecordFrame.committed(in: $0, at: 0, layout: .v1) } == nil)
    }

    @Test func theCommittedLSNIsCoveredByTheChecksum() {
        var bytes = Self.frame(lsn: 9, committed: 7, [1, 2, 3])
        bytes[16] ^= 0x01
        guard case .invalid(.checksumMismatch) = Self.decode(bytes, expected: 9) else {
            Issue.record("a changed committed LSN still decodes")
            return
        }
    }

    @Test func aCommittedLSNNotBelowTheRecordsOwnIsInvalid() {
        let bytes = Self.frame(lsn: 9, committed: 9, [1])
        #expect(Self.decode(bytes, expected: 9) == .invalid(.committedNotBelowLSN(committed: 9, lsn: 9)))
    }

    @Test func aZeroHeaderIsZeroes() {
        #expect(Self.decode([UInt8](repeating: 0, count: 24), expected: 1) == .invalid(.zeroes))
    }
}
