// How the engine's errors reach a client: the one table from `WALError` to the protocol's error
// codes (docs/protocol.md, "Errors"), used by every protocol (binary, text, RESP's `-ERR CODE …`).
// A change here is a change of the wire contract: update the table in docs/protocol.md with it.
import WALCore
import WALProtocol

extension Response {
    /// The reply for a failed call: a `WALError` by its case, anything else UNAVAILABLE with its
    /// description.
    static func failure(_ error: any Error) -> Response {
        guard let error = error as? WALError else { return .error(.unavailable, "\(error)") }
        switch error {
        case .recordTooLarge: return .error(.tooLarge, error.description)
        case .emptyBatch, .invalidOptions: return .error(.badRequest, error.description)
        case .outOfRange(let lsn, let first, let last):
            return .error(.outOfRange, "LSN \(lsn) is out of range; the first available LSN is \(first) and the last is \(last)")
        case .noSpace: return .error(.noSpace, error.description)
        case .conflict: return .error(.conflict, error.description)
        case .corruption: return .error(.corruption, error.description)
        case .closed, .failed, .io, .locked, .exhausted, .notASegmentFile, .notALog:
            return .error(.unavailable, error.description)
        }
    }
}
