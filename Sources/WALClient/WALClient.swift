// An async Swift client for the wald binary protocol. Requests may be issued concurrently
// from many tasks on one client: they are pipelined on the connection and each caller gets
// its own response (the server answers in request order). A reader thread decodes replies.
import Foundation
import Synchronization
import WALProtocol
import WALSync

/// What a client call can fail with. Server errors carry the protocol's error code.
public enum WALClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case server(code: ErrorCode, message: String)
    case connectionFailed(String)
    case connectionClosed
    case protocolViolation(String)
    /// The request cannot be one frame (`bytes` is its frame length); nothing was sent.
    case requestTooLarge(bytes: Int, limit: Int)
    /// The peer answered with bytes no wald sends first (an HTTP server, Redis, SSH):
    /// `sample` is the start of what it sent, printable.
    case notAWald(peer: String, sample: String)
    /// No reply (or connection) within the client's timeout; the connection was closed.
    case timedOut(String)

    public var description: String {
        switch self {
        case .server(let code, let message): "\(code.name): \(message)"
        case .connectionFailed(let text): "connection failed: \(text)"
        case .connectionClosed: "connection closed by the server"
        case .protocolViolation(let text): "protocol violation: \(text)"
        case .requestTooLarge(let bytes, let limit):
            "request of \(bytes) bytes does not fit in one frame (at most \(limit)); nothing was sent"
        case .notAWald(let peer, let sample):
            "\(peer) is not a wald server: it answered \"\(sample)\" (wrong port? the metrics port speaks HTTP)"
        case .timedOut(let text): "timed out: \(text)"
        }
    }
}

/// A record received from REPLAY.
public struct ReplayedRecord: Sendable, Equatable {
    public let lsn: UInt64
    public let payload: [UInt8]
}

/// The INFO object (fields documented in docs/protocol.md); `raw` keeps every field.
public struct ServerInfo: Sendable {
    public let raw: [String: any Sendable]
    public let json: String
    public var version: String { raw["version"] as? String ?? "" }
    public var logID: String { raw["log_id"] as? String ?? "" }
    public var firstLSN: UInt64 { number("first_lsn") }
    public var lastLSN: UInt64 { number("last_lsn") }
    public var durableLSN: UInt64 { number("durable_lsn") }
    public var segments: UInt64 { number("segments") }
    public var bytes: UInt64 { number("bytes") }
    public var connections: UInt64 { number("connections") }
    public var role: String { raw["role"] as? String ?? "" }
    /// The log's generation: raised by every `walctl repair` that cuts records, so LSNs handed
    /// out again after a repair are told apart (0 from a server that predates it).
    public var generation: UInt64 { number("generation") }
    /// The leadership term under automatic failover (0 without it).
    public var term: UInt64 { number("term") }
    /// The leader's `HOST:PORT` as this server knows it (nil when it knows none).
    public var leader: String? { raw["leader"] as? String }

    private func number(_ key: String) -> UInt64 { (raw[key] as? NSNumber)?.uint64Value ?? 0 }
}

public final class WALClient: Sendable {
    private enum Waiter {
        case single(CheckedContinuation<Response, any Error>)
        case stream(AsyncThrowingStream<ReplayedRecord, any Error>.Continuation, follow: Bool)
    }

    private struct State {
        var waiters: [Waiter] = []
        var head = 0
        var closed = false
        var failure: WALClientError?
        /// Since when a waiter other than a follow stream has been waiting with nothing received
        /// (nil while none waits; reset by every read that brings bytes): what the reply timeout
        /// measures.
        var waitingSince: ContinuousClock.Instant?
        var receivedAnything = false
    }

    public let endpoint: Endpoint
    /// How long a call may wait for its reply (and a connect for the connection); nil = no limit.
    public let timeout: Duration?
    private let channel: ClientChannel
    private let state = WALMutex(State())
    private let writeLock = WALMutex(())

    /// Connects, and authenticates when `token` is given. With a `timeout`, connecting and every
    /// reply (each record of a replay; not the wait for new records of a follow stream) must
    /// come within it, or the call fails with `.timedOut` and the connection is closed. The
    /// clock measures silence: any bytes received restart it, so a large reply over a slow
    /// link is not cut while it is still arriving.
    /// With `tls`, the connection is TLS (the server's certificate is verified; a TLS failure
    /// is `.connectionFailed` with OpenSSL's reason).
    public static func connect(_ endpoint: Endpoint, token: String? = nil, timeout: Duration? = nil,
                               tls: ClientTLS? = nil) async throws -> WALClient {
        let client = try WALClient(endpoint: endpoint, timeout: timeout, tls: tls)
        if let token {
            do {
                try await client.authenticate(token: token)
            } catch {
                client.close()
                throw error
            }
        }
        return client
    }

    private init(endpoint: Endpoint, timeout: Duration?, tls: ClientTLS?) throws {
        self.endpoint = endpoint
        self.timeout = timeout
        channel = try ClientChannel.connect(endpoint, timeout: timeout, tls: tls)
        if let timeout {
            // The reader wakes up at least this often to check the reply deadline.
            channel.setReceiveTimeout(min(max(timeout / 4, .milliseconds(10)), .milliseconds(250)))
        }
        let thread = Thread { [self] in readLoop() }
        thread.name = "wald-client-reader"
        thread.start()
    }

    deinit { Sockets.close(channel.fd) }

    /// Closes the connection; outstanding calls fail with `.connectionClosed`.
    public func close() {
        let first = state.withLock { s -> Bool in
            defer { s.closed = true }
            return !s.closed
        }
        if first { channel.shutdownBoth() }
    }

    // MARK: Requests

    /// Appends one durable record (or buffered: acknowledged before fsync); returns its LSN.
    @discardableResult
    public func append(_ record: [UInt8], buffered: Bool = false) async throws -> UInt64 {
        try await append(batch: [record], buffered: buffered).firstLSN
    }

    /// The largest frame length a request may have (opcode and body).
    public static let maxFrameLength = ProtocolLimits.maxFrameLength

    /// Appends records as one batch; returns the first LSN and the count. The batch must fit one
    /// frame (`requestTooLarge` otherwise, and nothing is sent). With `expectedLSN`, only if the
    /// batch's first record gets that LSN: otherwise the server writes nothing and this throws
    /// `.server(code: .conflict, …)` naming the log's next LSN, so a retry after a timeout or an
    /// error can never append the batch twice.
    @discardableResult
    public func append(batch records: [[UInt8]], buffered: Bool = false,
                       expectedLSN: UInt64? = nil) async throws -> (firstLSN: UInt64, count: UInt32) {
        let response = try await call(.append(records: records.map { ArraySlice($0) }, buffered: buffered,
                                              expectedLSN: expectedLSN))
        guard case .appended(let first, let count) = response else { throw unexpected(response) }
        // LSNs first ... first + count − 1, one per record sent: anything else cannot be true.
        guard UInt64(count) == UInt64(records.count), first >= 1, UInt64.max - first >= UInt64(count) - 1 else {
            throw WALClientError.protocolViolation(
                "APPENDED first LSN \(first) count \(count) cannot number the \(records.count) records sent")
        }
        return (first, count)
    }

    /// Makes everything appended so far durable; returns the durable LSN.
    @discardableResult
    public func sync() async throws -> UInt64 {
        let response = try await call(.sync)
        guard case .synced(let lsn) = response else { throw unexpected(response) }
        return lsn
    }

    public func info() async throws -> ServerInfo {
        let response = try await call(.info)
        guard case .info(let json) = response else { throw unexpected(response) }
        let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
        var raw: [String: any Sendable] = [:]
        for (key, value) in object {
            switch value {
            case is NSNull: continue  // a JSON null reads as absent
            case let number as NSNumber: raw[key] = number
            case let text as String: raw[key] = text
            case let array as [Any]: raw[key] = "\(array)"
            default: raw[key] = "\(value)"
            }
        }
        return ServerInfo(raw: raw, json: json)
    }

    public func ping(_ bytes: [UInt8] = []) async throws -> [UInt8] {
        let response = try await call(.ping(ArraySlice(bytes)))
        guard case .pong(let echo) = response else { throw unexpected(response) }
        return Array(echo)
    }

    /// Drops whole segments below `lsn`; returns the first LSN still available.
    @discardableResult
    public func truncate(before lsn: UInt64) async throws -> UInt64 {
        let response = try await call(.truncate(before: lsn))
        guard case .truncated(let first) = response else { throw unexpected(response) }
        return first
    }

    /// Stops following an upstream (or, on a primary, does nothing); returns the last LSN.
    @discardableResult
    public func promote() async throws -> UInt64 {
        let response = try await call(.promote)
        guard case .promoted(let last) = response else { throw unexpected(response) }
        return last
    }

    public func authenticate(token: String) async throws {
        let response = try await call(.auth(token: ArraySlice(token.utf8)))
        guard case .ok = response else { throw unexpected(response) }
    }

    /// Records from `lsn` (0 = first available) up to the durable LSN, at most `count`
    /// (0 = no limit). Ends when the server sends END.
    public func replay(from lsn: UInt64, count: UInt64 = 0) -> AsyncThrowingStream<ReplayedRecord, any Error> {
        stream(.replay(from: lsn, maxCount: count, follow: false), follow: false)
    }

    /// Durable records from `lsn` on, live, until the client is closed. After this, the
    /// connection only carries `sendFeedback`.
    public func follow(from lsn: UInt64, count: UInt64 = 0) -> AsyncThrowingStream<ReplayedRecord, any Error> {
        stream(.replay(from: lsn, maxCount: count, follow: true), follow: true)
    }

    /// Tells the server (on a follow stream) how far this client has made records durable.
    public func sendFeedback(durableLSN: UInt64) throws {
        var frame: [UInt8] = []
        BinaryCodec.encode(Request.feedback(durableLSN: durableLSN), into: &frame)
        let ok = writeLock.withLock { _ in channel.sendAll(frame) }
        if !ok { throw WALClientError.connectionClosed }
    }

    /// Sends raw bytes (tests of malformed input use this).
    public func sendRaw(_ bytes: [UInt8]) throws {
        let ok = writeLock.withLock { _ in channel.sendAll(bytes) }
        if !ok { throw WALClientError.connectionClosed }
    }

    // MARK: Plumbing

    private func stream(_ request: Request, follow: Bool) -> AsyncThrowingStream<ReplayedRecord, any Error> {
        AsyncThrowingStream { continuation in
            do {
                try send(request, waiter: .stream(continuation, follow: follow))
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    private func call(_ request: Request) async throws -> Response {
        let response = try await withCheckedThrowingContinuation { continuation in
            do {
                try send(request, waiter: .single(continuation))
            } catch {
                continuation.resume(throwing: error)
            }
        }
        if case .error(let code, let message) = response { throw WALClientError.server(code: code, message: message) }
        return response
    }

    /// Registers the waiter and writes the frame under one lock, so waiters are in wire order.
    /// Throws only before the waiter is registered: from then on the reader thread alone
    /// answers it, with its reply or, once the connection ends, the failure.
    private func send(_ request: Request, waiter: Waiter) throws {
        let length = BinaryCodec.encodedLength(of: request)
        guard length <= Self.maxFrameLength else {
            throw WALClientError.requestTooLarge(bytes: length, limit: Self.maxFrameLength)
        }
        var frame: [UInt8] = []
        frame.reserveCapacity(4 + length)
        BinaryCodec.encode(request, into: &frame)
        try writeLock.withLock { _ in
            try state.withLock { s in
                if let failure = s.failure { throw failure }
                if s.closed { throw WALClientError.connectionClosed }
                if s.waitingSince == nil, case .single = waiter { s.waitingSince = .now }
                if s.waitingSince == nil, case .stream(_, follow: false) = waiter { s.waitingSince = .now }
                s.waiters.append(waiter)
            }
            if !channel.sendAll(frame) {
                // The server is gone, or refused the frame and closed (TOO_LARGE): end the
                // connection so the reader fails every waiter, this one included. Answering it
                // here as well resumed it twice when its reply had already arrived.
                channel.shutdownBoth()
            }
        }
    }

    private func unexpected(_ response: Response) -> WALClientError {
        // Never the payload bytes: this text reaches logs (the replicator logs it at warning).
        let shown = switch response {
        case .record(let lsn, let payload): "record(lsn: \(lsn), \(payload.count) bytes)"
        case .pong(let echo): "pong(\(echo.count) bytes)"
        default: "\(response)"
        }
        return .protocolViolation("unexpected response \(shown)")
    }

    /// The only place that answers waiters once they are registered (each exactly once): with
    /// their reply, or with the failure that ended the connection.
    private func readLoop() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var input: [UInt8] = []
        var failure = WALClientError.connectionClosed
        reading: while true {
            let n = channel.receive(into: buffer)
            if n < 0 && Sockets.lastReceiveTimedOut {
                if let expired = replyDeadlinePassed() {
                    failure = expired
                    break
                }
                continue
            }
            if n <= 0 { break }
            if timeout != nil { state.withLock { s in if s.waitingSince != nil { s.waitingSince = .now } } }
            input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            if let foreign = foreignPeer(input) {
                failure = foreign
                break
            }
            var consumed = 0
            do {
                while let (frame, used) = try BinaryCodec.nextFrame(in: input[consumed...]) {
                    consumed += used
                    deliver(try BinaryCodec.decodeResponse(frame))
                }
            } catch {
                failure = .protocolViolation(error.description)
                break reading
            }
            if consumed > 0 { input.removeFirst(consumed) }
        }
        channel.shutdownBoth()
        let (pending, closedHere) = state.withLock { s -> ([Waiter], Bool) in
            let closedHere = s.closed && s.failure == nil
            s.failure = s.failure ?? failure
            s.closed = true
            defer { s.waiters.removeAll(); s.head = 0 }
            return (Array(s.waiters[s.head...]), closedHere)
        }
        for waiter in pending {
            switch waiter {
            case .single(let continuation): continuation.resume(throwing: failure)
            case .stream(let continuation, let follow):
                // A follow stream ends quietly only when this client closed it; the server
                // going away is a failure the caller must hear about.
                if follow && closedHere { continuation.finish() } else { continuation.finish(throwing: failure) }
            }
        }
    }

    /// The timeout error when a call (or a replay's next record) has waited longer than `timeout`.
    private func replyDeadlinePassed() -> WALClientError? {
        guard let timeout else { return nil }
        return state.withLock { s -> WALClientError? in
            guard let since = s.waitingSince, ContinuousClock.now - since >= timeout else { return nil }
            return .timedOut("no reply from \(endpoint) within \(Self.seconds(timeout)) s; the connection was closed")
        }
    }

    package static func seconds(_ duration: Duration) -> String {
        let value = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return value == value.rounded() ? String(Int(value)) : String(value)
    }

    /// Every binary frame starts with 0x00 (its length is below 16 MiB). The first bytes of a
    /// peer that are anything else come from something that is not a wald: say so, not "a frame
    /// of 1213486160 bytes". wald's own text line `ERR BUSY …` (sent to a connection over its
    /// limit before anything is read) is the server's error it is.
    private func foreignPeer(_ input: [UInt8]) -> WALClientError? {
        guard !state.withLock({ $0.receivedAnything }) else { return nil }
        guard let first = input.first, first != 0 else {
            state.withLock { $0.receivedAnything = !input.isEmpty }
            return nil
        }
        let line = input.prefix { $0 != 10 && $0 != 13 }.prefix(80)
        let text = String(decoding: line, as: UTF8.self)
        if text.hasPrefix("ERR ") {
            let parts = text.dropFirst(4).split(separator: " ", maxSplits: 1)
            if let name = parts.first, let code = ErrorCode(name: String(name)) {
                return .server(code: code, message: parts.count > 1 ? String(parts[1]) : "")
            }
        }
        let printable = line.map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined()
        return .notAWald(peer: endpoint.description, sample: printable)
    }

    /// Hands one response to the waiter at the head of the queue.
    private func deliver(_ response: Response) {
        let waiter = state.withLock { s -> Waiter? in
            guard s.head < s.waiters.count else { return nil }
            let waiter = s.waiters[s.head]
            let finished: Bool
            switch (waiter, response) {
            case (.single, _): finished = true
            case (.stream, .record): finished = false
            case (.stream, _): finished = true
            }
            s.waitingSince = nil
            if finished {
                s.head += 1
                if s.head > 1024 && s.head * 2 > s.waiters.count {
                    s.waiters.removeFirst(s.head)
                    s.head = 0
                }
            }
            // The clock restarts for the next reply if anything but a follow stream still waits.
            if s.waiters[s.head...].contains(where: { if case .stream(_, follow: true) = $0 { false } else { true } }) {
                s.waitingSince = .now
            }
            return waiter
        }
        guard let waiter else { return }
        switch (waiter, response) {
        case (.single(let continuation), _):
            continuation.resume(returning: response)
        case (.stream(let continuation, _), .record(let lsn, let payload)):
            continuation.yield(ReplayedRecord(lsn: lsn, payload: Array(payload)))
        case (.stream(let continuation, _), .end):
            continuation.finish()
        case (.stream(let continuation, _), .error(let code, let message)):
            continuation.finish(throwing: WALClientError.server(code: code, message: message))
        case (.stream(let continuation, _), let other):
            continuation.finish(throwing: unexpected(other))
        }
    }
}
