// The messages of the wald wire protocol (docs/protocol.md), shared by the server, the
// client and walctl. Both the binary and the text encoding map onto these.

/// Error codes carried by ERROR frames (binary) and `ERR <NAME>` lines (text).
public enum ErrorCode: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case badRequest = 1
    case tooLarge = 2
    case outOfRange = 3
    case readOnly = 4
    case unavailable = 5
    case noSpace = 6
    case unauthorized = 7
    case busy = 8
    /// A conditional append whose expected LSN is not the log's next; nothing was written.
    case conflict = 9
    /// The log on disk is damaged where the request reads (a replay reached a record that fails
    /// its check); the message names file, byte offset and LSN. Other LSNs may still be read.
    case corruption = 10

    /// The name used by the text protocol.
    public var name: String {
        switch self {
        case .badRequest: "BAD_REQUEST"
        case .tooLarge: "TOO_LARGE"
        case .outOfRange: "OUT_OF_RANGE"
        case .readOnly: "READ_ONLY"
        case .unavailable: "UNAVAILABLE"
        case .noSpace: "NO_SPACE"
        case .unauthorized: "UNAUTHORIZED"
        case .busy: "BUSY"
        case .conflict: "CONFLICT"
        case .corruption: "CORRUPTION"
        }
    }

    public init?(name: String) {
        guard let code = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = code
    }

    public var description: String { name }
}

/// Binary opcodes.
public enum Opcode: UInt8, Sendable {
    case append = 0x01
    case replay = 0x02
    case sync = 0x03
    case info = 0x04
    case ping = 0x05
    case truncate = 0x06
    case feedback = 0x07
    case auth = 0x08
    case promote = 0x09
    case appended = 0x81
    case record = 0x82
    case end = 0x83
    case synced = 0x84
    case infoReply = 0x85
    case pong = 0x86
    case truncated = 0x87
    case ok = 0x88
    case promoted = 0x89
    case error = 0xFF
}

/// A request from a client.
public enum Request: Sendable, Equatable {
    /// Records to append as one batch; `buffered` acknowledges before fsync; with
    /// `expectedLSN`, only if the batch's first record gets that LSN (else CONFLICT).
    case append(records: [ArraySlice<UInt8>], buffered: Bool, expectedLSN: UInt64? = nil)
    /// Stream records from `from` (0 = first available); `maxCount` 0 = no limit; `follow`
    /// keeps streaming new durable records.
    case replay(from: UInt64, maxCount: UInt64, follow: Bool)
    case sync
    case info
    case ping(ArraySlice<UInt8>)
    case truncate(before: UInt64)
    /// A following client reports what it has made durable (no reply).
    case feedback(durableLSN: UInt64)
    case auth(token: ArraySlice<UInt8>)
    case promote
    /// Text only: `QUIT` → `BYE` and close.
    case quit
    /// Text only: Prometheus metrics.
    case metrics
}

/// A response to a client.
public enum Response: Sendable, Equatable {
    case appended(firstLSN: UInt64, count: UInt32)
    case record(lsn: UInt64, payload: ArraySlice<UInt8>)
    case end(nextLSN: UInt64)
    case synced(durableLSN: UInt64)
    case info(json: String)
    case pong(ArraySlice<UInt8>)
    case truncated(firstLSN: UInt64)
    case ok
    case promoted(lastLSN: UInt64)
    case error(ErrorCode, String)
    /// Text only: reply to QUIT.
    case bye
    /// Text only: Prometheus exposition text.
    case metrics(String)
}

/// Limits of the framing.
public enum ProtocolLimits {
    /// Largest binary frame length (the u32 after which the frame's bytes follow): 16 MiB - 1,
    /// so the first byte of every binary frame is 0x00.
    public static let maxFrameLength = (1 << 24) - 1
    /// Longest text line, without its line ending.
    public static let maxLineLength = 64 * 1024
}
