// The frame around every record on disk (docs/format.md, "Record frame"). Version 2 (every
// segment written now):
//
//   u32 crc32c     of bytes 4 ..< 24+length (length, LSN, committed and payload)
//   u32 length     payload bytes
//   u64 lsn
//   u64 committed  the durable LSN the writer knew when it encoded this record (< lsn)
//   payload
//
// Version 1 (segments written before) has no committed field: a 16-byte header.
//
// The LSN is inside the checksum, so a zeroed preallocated tail or a stale frame from an
// older write can never pass for the record the reader expects next. `committed` is the
// commit point Raft and PostgreSQL carry in their records: a valid record proves which
// earlier LSNs had been acknowledged as durable, so recovery can tell a torn tail (records
// nobody was promised) from damage to acknowledged ones.

public enum RecordFrame {
    /// The header layout of one segment format version.
    public struct Layout: Sendable, Equatable {
        public let version: UInt16
        /// Bytes before the payload.
        public let headerSize: Int

        public static let v1 = Layout(version: 1, headerSize: 16)
        public static let v2 = Layout(version: 2, headerSize: 24)
        /// What new segments are written in.
        public static let current = v2

        /// The layout of a segment header's version, or nil for one this code does not know.
        public static func of(version: UInt16) -> Layout? {
            switch version {
            case 1: v1
            case 2, 3: v2  // version 3 changed only the segment header (the generation)
            default: nil
            }
        }

        /// Whether frames carry the committed LSN.
        public var hasCommitted: Bool { version >= 2 }
    }

    /// Header bytes of a frame in the current layout.
    public static let headerSize = Layout.current.headerSize

    /// Bytes one record of `payloadCount` bytes occupies on disk in the current layout.
    @inlinable public static func encodedSize(payloadCount: Int) -> Int { headerSize + payloadCount }

    /// Appends the frame for `payload` with `lsn` to `buffer`; `committed` is the durable LSN
    /// known now (v2 only; must be below `lsn`).
    @inlinable
    public static func append(lsn: UInt64, committed: UInt64, payload: UnsafeRawBufferPointer, to buffer: inout [UInt8],
                              layout: Layout = .current) {
        let start = buffer.count
        let total = layout.headerSize + payload.count
        // Header then payload, each one copy (no zero-fill first: this runs once per record);
        // the checksum is patched in last.
        if layout.hasCommitted {
            var header = (UInt32(0), UInt32(payload.count).littleEndian, lsn.littleEndian, committed.littleEndian)
            withUnsafeBytes(of: &header) { buffer.append(contentsOf: $0) }
        } else {
            var header = (UInt32(0), UInt32(payload.count).littleEndian, lsn.littleEndian)
            withUnsafeBytes(of: &header) { buffer.append(contentsOf: $0) }
        }
        if payload.count > 0 { buffer.append(contentsOf: payload) }
        buffer.withUnsafeMutableBytes { out in
            let frame = UnsafeMutableRawBufferPointer(rebasing: out[start..<(start + total)])
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: frame[4...]))
            frame.storeLE(crc, at: 0)
        }
    }

    /// The committed LSN stored in the (valid) v2 frame at `offset`; nil for v1 frames.
    @inlinable
    public static func committed(in buffer: UnsafeRawBufferPointer, at offset: Int, layout: Layout) -> UInt64? {
        guard layout.hasCommitted, buffer.count - offset >= layout.headerSize else { return nil }
        return buffer.loadLE(UInt64.self, at: offset + 16)
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
        /// A v2 frame that claims a durable LSN at or beyond its own: never written by wald.
        case committedNotBelowLSN(committed: UInt64, lsn: UInt64)

        public var description: String {
            switch self {
            case .zeroes: "zero-filled (no record)"
            case .lengthTooLarge(let n): "record length \(n) exceeds the maximum"
            case .checksumMismatch(let s, let c): "record checksum mismatch (stored \(hex(s)), computed \(hex(c)))"
            case .unexpectedLSN(let f, let e): "record has LSN \(f), expected \(e)"
            case .committedNotBelowLSN(let c, let l): "record at LSN \(l) claims LSN \(c) was durable before it"
            }
        }
    }

    /// Decodes the frame at `offset` in `buffer`, laid out as `layout`. `expectedLSN` nil
    /// accepts any LSN (used when searching for valid data after damage); `maxPayload` bounds
    /// the length field so a corrupt length never makes a reader allocate or skip beyond it.
    /// A v2 frame whose committed LSN is not below its own LSN is invalid.
    @inlinable
    public static func decode(
        _ buffer: UnsafeRawBufferPointer, at offset: Int, expectedLSN: UInt64?, maxPayload: Int, layout: Layout
    ) -> Decoded {
        let headerSize = layout.headerSize
        let available = buffer.count - offset
        guard available >= headerSize else { return .needMore(bytes: headerSize) }
        let stored = buffer.loadLE(UInt32.self, at: offset)
        let length = buffer.loadLE(UInt32.self, at: offset + 4)
        let lsn = buffer.loadLE(UInt64.self, at: offset + 8)
        let committed = layout.hasCommitted ? buffer.loadLE(UInt64.self, at: offset + 16) : 0
        if stored == 0 && length == 0 && lsn == 0 && committed == 0 { return .invalid(.zeroes) }
        guard Int(length) <= maxPayload else { return .invalid(.lengthTooLarge(length)) }
        let total = headerSize + Int(length)
        if let expectedLSN, lsn != expectedLSN {
            // Check the LSN before the checksum only when the length is plausible, so a
            // torn frame reports the more useful "checksum" reason when the LSN is intact.
            if available >= total {
                let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + total)]))
                if computed == stored { return .invalid(.unexpectedLSN(found: lsn, expected: expectedLSN)) }
                return .invalid(.checksumMismatch(stored: stored, computed: computed))
            }
            return .invalid(.unexpectedLSN(found: lsn, expected: expectedLSN))
        }
        guard available >= total else { return .needMore(bytes: total) }
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + total)]))
        guard computed == stored else { return .invalid(.checksumMismatch(stored: stored, computed: computed)) }
        if layout.hasCommitted && committed >= lsn { return .invalid(.committedNotBelowLSN(committed: committed, lsn: lsn)) }
        return .record(lsn: lsn, payload: (offset + headerSize)..<(offset + total), next: offset + total)
    }
}
