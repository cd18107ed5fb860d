// The frame around every record on disk (docs/format.md, "Record frame"):
//
//   u32 crc32c   of bytes 4 ..< 16+length (length, LSN and payload)
//   u32 length   payload bytes
//   u64 lsn
//   payload
//
// The LSN is inside the checksum, so a zeroed preallocated tail or a stale frame from an
// older write can never pass for the record the reader expects next.

public enum RecordFrame {
    public static let headerSize = 16

    /// Bytes one record of `payloadCount` bytes occupies on disk.
    @inlinable public static func encodedSize(payloadCount: Int) -> Int { headerSize + payloadCount }

    /// Appends the frame for `payload` with `lsn` to `buffer`.
    @inlinable
    public static func append(lsn: UInt64, payload: UnsafeRawBufferPointer, to buffer: inout [UInt8]) {
        let start = buffer.count
        let total = headerSize + payload.count
        // Header then payload, each one copy (no zero-fill first: this runs once per record);
        // the checksum is patched in last.
        var header = (UInt32(0), UInt32(payload.count).littleEndian, lsn.littleEndian)
        withUnsafeBytes(of: &header) { buffer.append(contentsOf: $0) }
        if payload.count > 0 { buffer.append(contentsOf: payload) }
        buffer.withUnsafeMutableBytes { out in
            let frame = UnsafeMutableRawBufferPointer(rebasing: out[start..<(start + total)])
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: frame[4...]))
            frame.storeLE(crc, at: 0)
        }
    }

    /// What `decode` found at an offset.
    public enum Decoded: Equatable, Sendable {
        /// A valid record: its LSN, where its payload lies in the buffer, and where the next frame starts.
        case record(lsn: UInt64, payload: Range<Int>, next: Int)
        /// The buffer ends inside the frame: at least `bytes` from the offset are needed to decide.
        case needMore(bytes: Int)
        /// Not a valid record.
        case invalid(Invalid)
    }

    public enum Invalid: Equatable, Sendable, CustomStringConvertible {
        /// The 16 header bytes are all zero: the unwritten (preallocated) end of a segment.
        case zeroes
        case lengthTooLarge(UInt32)
        case checksumMismatch(stored: UInt32, computed: UInt32)
        case unexpectedLSN(found: UInt64, expected: UInt64)

        public var description: String {
            switch self {
            case .zeroes: "zero-filled (no record)"
            case .lengthTooLarge(let n): "record length \(n) exceeds the maximum"
            case .checksumMismatch(let s, let c): "record checksum mismatch (stored \(hex(s)), computed \(hex(c)))"
            case .unexpectedLSN(let f, let e): "record has LSN \(f), expected \(e)"
            }
        }
    }

    /// Decodes the frame at `offset` in `buffer`. `expectedLSN` nil accepts any LSN (used
    /// when searching for valid data after damage); `maxPayload` bounds the length field so a
    /// corrupt length never makes a reader allocate or skip beyond it.
    @inlinable
    public static func decode(
        _ buffer: UnsafeRawBufferPointer, at offset: Int, expectedLSN: UInt64?, maxPayload: Int
    ) -> Decoded {
        let available = buffer.count - offset
        guard available >= headerSize else { return .needMore(bytes: headerSize) }
        let stored = buffer.loadLE(UInt32.self, at: offset)
        let length = buffer.loadLE(UInt32.self, at: offset + 4)
        let lsn = buffer.loadLE(UInt64.self, at: offset + 8)
        if stored == 0 && length == 0 && lsn == 0 { return .invalid(.zeroes) }
        guard Int(length) <= maxPayload else { return .invalid(.lengthTooLarge(length)) }
        if let expectedLSN, lsn != expectedLSN {
            // Check the LSN before the checksum only when the length is plausible, so a
            // torn frame reports the more useful "checksum" reason when the LSN is intact.
            let total = headerSize + Int(length)
            if available >= total {
                let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + total)]))
                if computed == stored { return .invalid(.unexpectedLSN(found: lsn, expected: expectedLSN)) }
                return .invalid(.checksumMismatch(stored: stored, computed: computed))
            }
            return .invalid(.unexpectedLSN(found: lsn, expected: expectedLSN))
        }
        let total = headerSize + Int(length)
        guard available >= total else { return .needMore(bytes: total) }
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + total)]))
        guard computed == stored else { return .invalid(.checksumMismatch(stored: stored, computed: computed)) }
        return .record(lsn: lsn, payload: (offset + headerSize)..<(offset + total), next: offset + total)
    }
}
