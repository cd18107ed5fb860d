// An etcd v3 client over etcd's JSON gateway (`POST /v3/...`, HTTP/1.1), for the few calls wald's failover
// needs: leases, get/put/delete, transactions and watches. No consensus logic lives here.
//
// Threads: the HTTP work (connects, reads, writes, timers) runs on one NIO event loop thread that each
// EtcdClient owns (a MultiThreadedEventLoopGroup of 1 thread, created in init, stopped by shutdown()).
// Callers' tasks only suspend on it. References:
// - API: https://etcd.io/docs/v3.4/dev-guide/api_reference_v3/
// - JSON gateway: https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
import WALSync
#endif

/// A client of one etcd cluster, through the JSON gateway that every etcd 3.4 member serves on its client URL.
///
/// Every call is one HTTP POST, bounded by `requestTimeout` (all endpoint attempts included); only
/// ``watch(key:prefix:startRevision:)`` is unbounded. Endpoints are tried in order, starting from the last
/// one that answered. A call moves to the next endpoint when the connection cannot be made; a read (and a
/// lease renewal or delete, which are idempotent) also moves on when a connection breaks mid-request or the
/// member answers 503 (Unavailable: e.g. "etcdserver: no leader" from a member cut off from the rest). A write
/// whose connection broke after it was sent is not repeated (etcd may have applied it): it throws
/// ``EtcdError/unreachable(endpoints:lastError:)`` naming that endpoint.
///
/// Call ``shutdown()`` before dropping the last reference (async-http-client checks this in debug builds).
public final class EtcdClient: Sendable {
    /// The endpoints as given (trailing "/" removed), in the order they are tried.
    public let endpoints: [String]
    /// The bound of every call but watch, across all endpoint attempts.
    public let requestTimeout: Duration

    let http: HTTPClient
    let group: MultiThreadedEventLoopGroup
    /// Index into `endpoints` of the last endpoint that answered; requests start there.
    let preferred = WALMutex<Int>(0)
    let isShutDown = WALMutex<Bool>(false)

    /// The largest response body accepted (a range over many keys); more is reported as malformed.
    static let maxResponseBytes = 64 << 20

    /// Creates a client; it connects lazily, on the first call.
    ///
    /// - Parameters:
    ///   - endpoints: etcd client URLs, `http://HOST:PORT` (several members of one cluster allowed).
    ///     https is not supported yet.
    ///   - requestTimeout: the bound of each call (default 2 s). The connect timeout of one endpoint is
    ///     this divided by the number of endpoints (at least 100 ms), so an endpoint that drops packets
    ///     leaves time for the next.
    /// - Throws: ``EtcdError/invalidEndpoint(_:)`` for an empty list or an endpoint that is not
    ///   `http://HOST[:PORT]` with no path, query or user.
    public init(endpoints: [String], requestTimeout: Duration = .seconds(2)) throws {
        guard !endpoints.isEmpty else { throw EtcdError.invalidEndpoint("(no endpoints given)") }
        self.endpoints = try endpoints.map(Self.validated)
        self.requestTimeout = requestTimeout

        let perEndpoint = max(Self.nanoseconds(requestTimeout) / Int64(endpoints.count), 100_000_000)
        var configuration = HTTPClient.Configuration()
        // No read timeout: a watch is idle for as long as nothing changes. Calls are bounded by withDeadline.
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .nanoseconds(perEndpoint), read: nil)
        // Fail a request as soon as its connection attempt fails, so that the next endpoint is tried now
        // (by default the pool would retry the same endpoint with backoff until the deadline).
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        configuration.httpVersion = .http1Only
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        http = HTTPClient(eventLoopGroup: group, configuration: configuration)
    }

    /// Stops the HTTP client and its event loop thread. Open watches end by throwing. Safe to call twice;
    /// calls made after it throw.
    public func shutdown() async {
        let first = isShutDown.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        try? await http.shutdown()
        try? await group.shutdownGracefully()
    }

    // MARK: Leases

    /// Grants a lease (`POST /v3/lease/grant`).
    ///
    /// - Parameter seconds: the TTL asked for. etcd raises a TTL below its minimum, which is
    ///   `ceil(1.5 × election timeout)`: 2 s with the default 1000 ms election timeout (a request for 1 s
    ///   was granted 2 s on etcd 3.4.23).
    /// - Returns: the lease ID and the TTL etcd granted, in seconds.
    /// - Throws: ``EtcdError``: `.status` if etcd refuses (e.g. a TTL above its maximum), `.timeout`,
    ///   `.unreachable`, `.malformed`.
    public func grantLease(ttl seconds: Int64) async throws -> (id: Int64, ttl: Int64) {
        let response = try await call(
            "/v3/lease/grant", LeaseGrantRequest(TTL: GatewayInt64(seconds), ID: GatewayInt64(0)),
            as: LeaseGrantResponse.self, retryAfterSend: false)
        if let error = response.error, !error.isEmpty { throw EtcdError.status(httpCode: 200, message: error) }
        let id = response.ID.orZero
        guard id != 0 else { throw EtcdError.malformed("/v3/lease/grant: no lease ID in the answer") }
        return (id, response.TTL.orZero)
    }

    /// Renews a lease once (`POST /v3/lease/keepalive` with one request body; the gateway answers one
    /// `{"result":{...}}`).
    ///
    /// - Returns: the lease's TTL in seconds after the renewal (the granted TTL).
    /// - Throws: ``EtcdError/leaseNotFound(_:)`` when etcd reports TTL 0 or none (the lease has expired or
    ///   was revoked; etcd does not answer that with an error), else as ``grantLease(ttl:)``.
    public func keepAlive(lease: Int64) async throws -> Int64 {
        let response = try await call(
            "/v3/lease/keepalive", LeaseIDRequest(ID: GatewayInt64(lease)),
            as: LeaseKeepAliveResponse.self, lease: lease, retryAfterSend: true)
        guard let result = response.result else {
            throw EtcdError.malformed("/v3/lease/keepalive: no \"result\" in the answer")
        }
        let ttl = result.TTL.orZero
        guard ttl > 0 else { throw EtcdError.leaseNotFound(lease) }
        return ttl
    }

    /// Revokes a lease (`POST /v3/lease/revoke`); etcd deletes every key attached to it.
    ///
    /// - Throws: ``EtcdError/leaseNotFound(_:)`` if it does not exist (etcd: HTTP 404 "requested lease
    ///   not found"), else as ``grantLease(ttl:)``.
    public func revoke(lease: Int64) async throws {
        _ = try await call(
            "/v3/lease/revoke", LeaseIDRequest(ID: GatewayInt64(lease)),
            as: HeaderOnlyResponse.self, lease: lease, retryAfterSend: false)
    }

    /// The remaining TTL of a lease in seconds (`POST /v3/lease/timetolive`), rounded down by etcd; 0 means
    /// it expires within the second.
    ///
    /// - Throws: ``EtcdError/leaseNotFound(_:)`` when etcd answers TTL -1, else as ``grantLease(ttl:)``.
    public func timeToLive(lease: Int64) async throws -> Int64 {
        let response = try await call(
            "/v3/lease/timetolive", LeaseIDRequest(ID: GatewayInt64(lease)),
            as: LeaseTimeToLiveResponse.self, lease: lease, retryAfterSend: true)
        let ttl = response.TTL.orZero
        guard ttl >= 0 else { throw EtcdError.leaseNotFound(lease) }
        return ttl
    }

    // MARK: Keys

    /// Reads one key (`POST /v3/kv/range`).
    ///
    /// - Returns: the key-value, nil if absent, and the store's revision when it was read.
    /// - Throws: ``EtcdError``: `.timeout`, `.unreachable`, `.status`, `.malformed`.
    public func get(_ key: String) async throws -> (kv: EtcdKeyValue?, revision: Int64) {
        let response = try await call(
            "/v3/kv/range", RangeRequest(key: base64(key)), as: RangeResponse.self, retryAfterSend: true)
        let kvs = try (response.kvs ?? []).map { try $0.decoded() }
        return (kvs.first, try revision(response.header, "/v3/kv/range"))
    }

    /// Reads every key that starts with `prefix`, in key order (`POST /v3/kv/range` with `range_end` the
    /// prefix with its last byte incremented).
    ///
    /// - Returns: the key-values and the store's revision when they were read.
    /// - Throws: as ``get(_:)``.
    public func getPrefix(_ prefix: String) async throws -> (kvs: [EtcdKeyValue], revision: Int64) {
        let request = RangeRequest(key: base64(prefix), range_end: base64(prefixRangeEnd(prefix)))
        let response = try await call("/v3/kv/range", request, as: RangeResponse.self, retryAfterSend: true)
        let kvs = try (response.kvs ?? []).map { try $0.decoded() }
        return (kvs, try revision(response.header, "/v3/kv/range"))
    }

    /// Writes a key (`POST /v3/kv/put`).
    ///
    /// - Parameters:
    ///   - lease: the lease to attach the key to (0 = none); the key is deleted when the lease ends.
    /// - Returns: the revision of the write.
    /// - Throws: ``EtcdError/leaseNotFound(_:)`` if `lease` does not exist, else as ``get(_:)``.
    @discardableResult
    public func put(_ key: String, value: [UInt8], lease: Int64 = 0) async throws -> Int64 {
        let request = PutRequest(key: base64(key), value: base64(value), lease: lease == 0 ? nil : GatewayInt64(lease))
        let response = try await call(
            "/v3/kv/put", request, as: HeaderOnlyResponse.self, lease: lease, retryAfterSend: false)
        return try revision(response.header, "/v3/kv/put")
    }

    /// Deletes a key if present (`POST /v3/kv/deleterange`).
    ///
    /// - Throws: as ``get(_:)``.
    public func delete(_ key: String) async throws {
        let response = try await call(
            "/v3/kv/deleterange", DeleteRangeRequest(key: base64(key)), as: HeaderOnlyResponse.self,
            retryAfterSend: true)
        _ = try revision(response.header, "/v3/kv/deleterange")
    }

    /// Runs a transaction (`POST /v3/kv/txn`): if every compare holds, the `success` ops, else the
    /// `failure` ops, atomically at one revision.
    ///
    /// - Returns: which branch ran, the revision after it, and one result per get op of that branch.
    /// - Throws: ``EtcdError/leaseNotFound(_:)`` if a put names a lease that does not exist (the
    ///   transaction is then not applied), `.status` for a request etcd refuses (e.g. the same key put twice
    ///   in one branch), else as ``get(_:)``. A transaction is never repeated on another endpoint once sent.
    public func txn(compare: [EtcdCompare], success: [EtcdOp], failure: [EtcdOp] = []) async throws -> EtcdTxnResult {
        let request = TxnRequest(
            compare: compare.map(WireCompare.init), success: success.map(WireOp.init), failure: failure.map(WireOp.init))
        let leases = (success + failure).compactMap { op -> Int64? in
            if case .put(_, _, let lease) = op, lease != 0 { return lease }
            return nil
        }
        let response = try await call(
            "/v3/kv/txn", request, as: TxnResponse.self, lease: leases.first, retryAfterSend: false)
        let succeeded = response.succeeded ?? false
        let ops = succeeded ? success : failure
        let responses = response.responses ?? []
        guard responses.count == ops.count else {
            throw EtcdError.malformed("/v3/kv/txn: \(responses.count) responses to \(ops.count) ops")
        }
        var ranges: [[EtcdKeyValue]] = []
        for (op, answer) in zip(ops, responses) {
            switch op {
            case .get, .getPrefix:
                guard let range = answer.response_range else {
                    throw EtcdError.malformed("/v3/kv/txn: a get op has no response_range")
                }
                ranges.append(try (range.kvs ?? []).map { try $0.decoded() })
            case .put, .delete:
                continue
            }
        }
        return EtcdTxnResult(succeeded: succeeded, revision: try revision(response.header, "/v3/kv/txn"), ranges: ranges)
    }

    /// Compacts the history up to `revision` (`POST /v3/kv/compaction`): watches from an older revision
    /// then fail with ``EtcdError/compacted(_:)``. Internal: wald never compacts (etcd's own
    /// auto-compaction does); the tests use it.
    func compact(revision: Int64) async throws {
        struct CompactionRequest: Encodable { var revision: GatewayInt64 }
        let response = try await call(
            "/v3/kv/compaction", CompactionRequest(revision: GatewayInt64(revision)), as: HeaderOnlyResponse.self,
            retryAfterSend: true)
        _ = try self.revision(response.header, "/v3/kv/compaction")
    }

    // MARK: Requests

    /// The revision in a response header; every unary answer of etcd has a header with one (revisions
    /// start at 1), so its absence means the answer is not etcd's.
    func revision(_ header: ResponseHeader?, _ path: String) throws -> Int64 {
        guard let header, let revision = header.revision, revision.value > 0 else {
            throw EtcdError.malformed("\(path): no header.revision in the answer")
        }
        return revision.value
    }

    /// POSTs `body` as JSON to `path`, failing over between endpoints, within `requestTimeout`, and decodes
    /// a 200 answer as `Response`. An error answer becomes `.leaseNotFound(lease)` when etcd says the
    /// lease was not found and `lease` is given, `.status` otherwise.
    func call<Request: Encodable, Response: Decodable>(
        _ path: String, _ body: Request, as: Response.Type, lease: Int64? = nil, retryAfterSend: Bool
    ) async throws -> Response {
        let payload: [UInt8]
        do {
            payload = Array(try JSONEncoder().encode(body))
        } catch {
            throw EtcdError.malformed("\(path): cannot encode the request: \(error)")
        }
        let deadline = ContinuousClock.now + requestTimeout
        let (status, bytes) = try await withDeadline(deadline, what: "POST \(path)") {
            try await self.post(path, payload, deadline: deadline, retryAfterSend: retryAfterSend)
        }
        guard status == 200 else {
            let message =
                (try? JSONDecoder().decode(GatewayErrorBody.self, from: Data(bytes)))?.message
                ?? String(decoding: bytes.prefix(200), as: UTF8.self)
            if let lease, message.contains("lease not found") { throw EtcdError.leaseNotFound(lease) }
            throw EtcdError.status(httpCode: status, message: message)
        }
        return try decodeJSON(Response.self, from: bytes, context: path)
    }

    /// One request, trying each endpoint in turn from the preferred one. Returns the HTTP status and body.
    func post(_ path: String, _ payload: [UInt8], deadline: ContinuousClock.Instant, retryAfterSend: Bool)
        async throws -> (Int, [UInt8])
    {
        let start = preferred.withLock { $0 }
        var lastError = ""
        for attempt in 0..<endpoints.count {
            let index = (start + attempt) % endpoints.count
            let endpoint = endpoints[index]
            var request = HTTPClientRequest(url: endpoint + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            do {
                let response = try await http.execute(request, deadline: Self.nioDeadline(deadline))
                let body = try await response.body.collect(upTo: Self.maxResponseBytes)
                // 503 is gRPC's Unavailable: this member has no leader (cut off from the others) or is
                // stopping. Another member may answer; a write is not repeated (it may have been proposed).
                if response.status == .serviceUnavailable && retryAfterSend && attempt < endpoints.count - 1 {
                    lastError = "\(endpoint): HTTP 503 \(String(decoding: body.readableBytesView.prefix(200), as: UTF8.self))"
                    continue
                }
                if index != start { preferred.withLock { $0 = index } }
                return (Int(response.status.code), Array(buffer: body))
            } catch {
                try Task.checkCancellation()
                if let error = error as? HTTPClientError, error == .deadlineExceeded {
                    throw EtcdError.timeout("POST \(path) to \(endpoint): no answer within \(requestTimeout)")
                }
                if let error = error as? NIOTooManyBytesError {
                    throw EtcdError.malformed("POST \(path): answer larger than \(Self.maxResponseBytes) bytes (\(error))")
                }
                lastError = "\(endpoint): \(error)"
                guard retryAfterSend || Self.isConnectFailure(error) else {
                    throw EtcdError.unreachable(
                        endpoints: [endpoint], lastError: "\(lastError) (connection lost after sending POST \(path): it may have been applied)")
                }
            }
        }
        throw EtcdError.unreachable(endpoints: endpoints, lastError: lastError)
    }

    /// Runs `operation`, cancelling it and throwing ``EtcdError/timeout(_:)`` when `deadline` passes first.
    func withDeadline<T: Sendable>(
        _ deadline: ContinuousClock.Instant, what: String, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            defer { group.cancelAll() }
            // The first child to finish decides; the other is cancelled (and awaited) on the way out.
            guard let first = try await group.next(), let value = first else {
                throw EtcdError.timeout("\(what): no answer within \(requestTimeout)")
            }
            return value
        }
    }

    /// True for errors that mean no connection was made, so that the request was certainly not sent.
    static func isConnectFailure(_ error: any Error) -> Bool {
        switch error {
        case is NIOConnectionError:
            return true
        case let error as HTTPClientError:
            return error == .connectTimeout
        case let error as ChannelError:
            if case .connectTimeout = error { return true }
            return false
        case let error as IOError:
            return [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, ETIMEDOUT].contains(error.errnoCode)
        default:
            return false
        }
    }

    static func validated(_ endpoint: String) throws -> String {
        var text = endpoint
        while text.hasSuffix("/") { text.removeLast() }
        guard let components = URLComponents(string: text), components.scheme?.lowercased() == "http",
            let host = components.host, !host.isEmpty, components.path.isEmpty, components.query == nil,
            components.fragment == nil, components.user == nil, components.password == nil
        else { throw EtcdError.invalidEndpoint(endpoint) }
        if let port = components.port, !(1...65535).contains(port) { throw EtcdError.invalidEndpoint(endpoint) }
        return text
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    static func nioDeadline(_ deadline: ContinuousClock.Instant) -> NIODeadline {
        let remaining = max(nanoseconds(deadline - ContinuousClock.now), 0)
        return .now() + .nanoseconds(remaining)
    }
}

/// Decodes etcd's JSON, turning every failure into ``EtcdError/malformed(_:)`` with the field's path.
func decodeJSON<T: Decodable>(_ type: T.Type, from bytes: [UInt8], context: String) throws -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    } catch let error as EtcdError {
        throw error
    } catch let error as DecodingError {
        let (path, reason): ([any CodingKey], String)
        switch error {
        case .dataCorrupted(let c): (path, reason) = (c.codingPath, c.debugDescription)
        case .keyNotFound(let key, let c): (path, reason) = (c.codingPath + [key], "missing")
        case .typeMismatch(_, let c): (path, reason) = (c.codingPath, c.debugDescription)
        case .valueNotFound(_, let c): (path, reason) = (c.codingPath, c.debugDescription)
        @unknown default: (path, reason) = ([], "\(error)")
        }
        let field = path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        let sample = String(decoding: bytes.prefix(120), as: UTF8.self)
        throw EtcdError.malformed("\(context): \(field.isEmpty ? "body" : field): \(reason) (answer began: \(sample))")
    } catch {
        throw EtcdError.malformed("\(context): \(error)")
    }
}
