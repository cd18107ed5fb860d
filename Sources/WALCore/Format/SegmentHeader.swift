// The 64-byte header at the start of every segment file (docs/format.md, "Segment header").

/// Identifies a segment: which log it belongs to and which LSN it starts at.
public struct SegmentHeader: Equatable, Sendable {
    public static let size = 64
    public static let magic: [UInt8] = Array("WALDSEG".utf8) + [0]
    /// New segments are written in this version (3: version 2's record frames, and the log's
    /// generation in the header); versions 1 and 2 are still read (generation 0).
    public static let currentVersion: UInt16 = 3

    /// Format version: says how the segment's record frames are laid out.
    public var version: UInt16
    public var logID: LogID
    /// LSN of the first record the segment holds (or would hold, when empty).
    public var firstLSN: UInt64
    /// First LSN of the segment that preceded this one when it was created, 0 for the
    /// first segment of a log. Lets recovery notice a missing segment without scanning.
    public var previousFirstLSN: UInt64
    /// Creation time, milliseconds since the Unix epoch (informational).
    public var createdMillis: UInt64
    /// The log's generation when the segment was created (version 3; 0 before): every repair
    /// that cuts records raises it, so that LSNs handed out again after a repair can be told
    /// from the ones they replace. Never lower than an earlier segment's.
    public var generation: UInt32

    public init(logID: LogID, firstLSN: UInt64, previousFirstLSN: UInt64, createdMillis: UInt64,
                version: UInt16 = SegmentHeader.currentVersion, generation: UInt32 = 0) {
        self.version = version
        self.logID = logID
        self.firstLSN = firstLSN
        self.previousFirstLSN = previousFirstLSN
        self.createdMillis = createdMillis
        self.generation = version >= 3 ? generation : 0
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.withUnsafeMutableBytes { out in
            for (i, b) in Self.magic.enumerated() { out[i] = b }
            out.storeLE(version, at: 8)
            out.storeLE(UInt16(Self.size), at: 10)
            out.storeLE(UInt32(0), at: 12)
            for (i, b) in logID.bytes.enumerated() { out[16 + i] = b }
            out.storeLE(firstLSN, at: 32)
            out.storeLE(previousFirstLSN, at: 40)
            out.storeLE(createdMillis, at: 48)
            out.storeLE(version >= 3 ? generation : 0, at: 56)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: out[0..<60]))
            out.storeLE(crc, at: 60)
        }
        return bytes
    }

    /// Why a header could not be decoded.
    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case tooShort(Int)
        case badMagic
        case unsupportedVersion(UInt16)
        case badHeaderSize(UInt16)
        case checksumMismatch(stored: UInt32, computed: UInt32)
        /// LSNs start at 1: a header naming 0 was never written by wald.
        case firstLSNZero

        public var description: String {
            switch self {
            case .tooShort(let n): "segment header truncated (\(n) of \(SegmentHeader.size) bytes)"
            case .badMagic: "not a wald segment (bad magic)"
            case .unsupportedVersion(let v): "unsupported segment format version \(v)"
            case .badHeaderSize(let s): "unexpected segment header size \(s)"
            case .checksumMismatch(let s, let c):
                "segment header checksum mismatch (stored \(hex(s)), computed \(hex(c)))"
            case .firstLSNZero: "segment header says first LSN 0, but LSNs start at 1"
            }
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> SegmentHeader {
        guard bytes.count >= size else { throw .tooShort(bytes.count) }
        guard bytes.prefix(8).elementsEqual(magic) else { throw .badMagic }
        let version = bytes.loadLE(UInt16.self, at: 8)
        guard RecordFrame.Layout.of(version: version) != nil else { throw .unsupportedVersion(version) }
        let headerSize = bytes.loadLE(UInt16.self, at: 10)
        guard headerSize == size else { throw .badHeaderSize(headerSize) }
        let stored = bytes.loadLE(UInt32.self, at: 60)
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<60]))
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }
        let firstLSN = bytes.loadLE(UInt64.self, at: 32)
        guard firstLSN > 0 else { throw .firstLSNZero }
        return SegmentHeader(
            logID: LogID(bytes: Array(bytes[16..<32]))!,
            firstLSN: firstLSN,
            previousFirstLSN: bytes.loadLE(UInt64.self, at: 40),
            createdMillis: bytes.loadLE(UInt64.self, at: 48),
            version: version,
            generation: version >= 3 ? bytes.loadLE(UInt32.self, at: 56) : 0)
    }

    /// How this segment's record frames are laid out.
    public var layout: RecordFrame.Layout { RecordFrame.Layout.of(version: version) ?? .current }

    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> SegmentHeader {
        let result: Result<SegmentHeader, DecodeError> = bytes.withUnsafeBytes { raw in
            Result { () throws(DecodeError) in try decode(raw) }
        }
        return try result.get()
    }
}

func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
