// A client for several walds of which one leads (automatic failover, or a primary and its
// followers): it keeps one connection, to the leader, and moves when the leader moves. An
// append refused with READ_ONLY was not written anywhere, so it is sent again to the leader
// the refusal names (`leader=HOST:PORT`, docs/protocol.md) or, when none is named, to the
// next address. A connection that breaks while an append is in flight leaves its outcome
// unknown: that error is thrown (a retry could write the record twice) unless the append
// carries an expected LSN, which makes the retry safe (CONFLICT tells if it was written).
import Foundation
import Synchronization
import WALProtocol
import WALSync

public final class WALClusterClient: Sendable {
    private struct State {
        var client: WALClient?
        /// Where to connect next: the leader a refusal named, else addresses in turn.
        var preferred: Endpoint?
        var next = 0
    }

    public let endpoints: [Endpoint]
    private let token: String?
    private let timeout: Duration?
    private let failoverTimeout: Duration
    private let state = WALMutex(State())

    /// - Parameters:
    ///   - endpoints: the members' addresses (at least one); the leader is found among them.
    ///   - token: AUTH token for every connection.
    ///   - timeout: per connection and reply, as `WALClient.connect`.
    ///   - failoverTimeout: how long one call keeps looking for a leader that takes it (an
    ///     election takes about the lease TTL) before it throws the last error.
    public init(endpoints: [Endpoint], token: String? = nil, timeout: Duration? = .seconds(5),
                failoverTimeout: Duration = .seconds(15)) {
        precondition(!endpoints.isEmpty, "WALClusterClient needs at least one address")
        self.endpoints = endpoints
        self.token = token
        self.timeout = timeout
        self.failoverTimeout = failoverTimeout
    }

    /// The address of the connection in use, if any.
    public var current: Endpoint? { state.withLock { $0.client?.endpoint } }

    public func close() {
        state.withLock { s in
            s.client?.close()
            s.client = nil
        }
    }

    /// Appends one record on the leader; returns its LSN. See the type's notes for retries.
    @discardableResult
    public func append(_ record: [UInt8], buffered: Bool = false, expectedLSN: UInt64? = nil) async throws -> UInt64 {
        try await append(batch: [record], buffered: buffered, expectedLSN: expectedLSN).firstLSN
    }

    /// Appends a batch on the leader (`WALClient.append(batch:buffered:expectedLSN:)`).
    @discardableResult
    public func append(batch records: [[UInt8]], buffered: Bool = false,
                       expectedLSN: UInt64? = nil) async throws -> (firstLSN: UInt64, count: UInt32) {
        try await onLeader(retryAfterBreak: expectedLSN != nil) { client in
            try await client.append(batch: records, buffered: buffered, expectedLSN: expectedLSN)
        }
    }

    /// INFO from the member this client is connected to (connecting first if needed).
    public func info() async throws -> ServerInfo {
        try await onLeader(retryAfterBreak: true) { try await $0.info() }
    }

    /// The leader named in a READ_ONLY message (`… (leader=HOST:PORT)`), nil for `leader=none`.
    public static func leader(inRefusal message: String) -> Endpoint? {
        guard let range = message.range(of: "leader=", options: .backwards) else { return nil }
        let text = message[range.upperBound...].prefix { $0 != ")" && $0 != " " }
        guard text != "none" else { return nil }
        return Endpoint(parsing: String(text))
    }

    private func onLeader<T: Sendable>(retryAfterBreak: Bool, _ body: (WALClient) async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + failoverTimeout
        while true {
            let client: WALClient
            do {
                client = try await connection()
            } catch {
                // Nothing was sent: try the next address until the deadline.
                guard ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            do {
                return try await body(client)
            } catch WALClientError.server(code: .readOnly, let message) {
                let leader = Self.leader(inRefusal: message)
                drop(client, preferring: leader)
                guard ContinuousClock.now < deadline else { throw WALClientError.server(code: .readOnly, message: message) }
                if leader == nil { try await Task.sleep(for: .milliseconds(100)) }
            } catch let error as WALClientError {
                switch error {
                case .connectionClosed, .connectionFailed, .timedOut:
                    drop(client, preferring: nil)
                    guard retryAfterBreak, ContinuousClock.now < deadline else { throw error }
                case .server(code: .unavailable, let message):
                    // A fenced leader failed the held reply: the outcome is unknown. The next
                    // call looks for the leader again.
                    drop(client, preferring: Self.leader(inRefusal: message))
                    throw error
                default:
                    throw error
                }
            }
        }
    }

    private func connection() async throws -> WALClient {
        let (existing, target) = state.withLock { s -> (WALClient?, Endpoint) in
            if let client = s.client { return (client, client.endpoint) }
            if let preferred = s.preferred { return (nil, preferred) }
            defer { s.next = (s.next + 1) % endpoints.count }
            return (nil, endpoints[s.next])
        }
        if let existing { return existing }
        do {
            let client = try await WALClient.connect(target, token: token, timeout: timeout)
            state.withLock { s in
                s.client?.close()
                s.client = client
            }
            return client
        } catch {
            state.withLock { $0.preferred = nil }
            throw error
        }
    }

    private func drop(_ client: WALClient, preferring leader: Endpoint?) {
        client.close()
        state.withLock { s in
            if s.client === client { s.client = nil }
            s.preferred = leader
        }
    }
}
