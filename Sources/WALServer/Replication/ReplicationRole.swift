// Replication state the server needs: whether this server follows an upstream (and is then
// read-only to clients), under automatic failover its term, leader and write lease (the deadline
// after which no append is acknowledged: docs/replication.md, "Fencing"), and which followers
// have acknowledged what (for INFO, for holding segments they still need, and for synchronous
// replication).
import Dispatch
import Synchronization
import WALCore
import WALSync

/// Whether this server is a follower, and of whom; under automatic failover also the term,
/// the leader, and the write lease that fences a primary. Shared with the daemon's replicator
/// and failover coordinator.
public final class ReplicationRole: Sendable {
    private struct State {
        var upstream: String?
        var connected = false
        var lastError: String?
        var onPromote: (@Sendable () async -> Void)?
        var term: UInt64 = 0
        var leader: String?
        var ha: HighAvailabilityStatus?
        var fenceReason: String?
    }

    private let state: WALMutex<State>
    /// Until when (DispatchTime uptime, ns) this server may acknowledge appends: `UInt64.max`
    /// without automatic failover; under it, the end of the leader lease minus a margin, 0 when
    /// it holds none. Read on every acknowledgement, so an atomic rather than the mutex.
    private let writeLeaseEnd = Atomic<UInt64>(UInt64.max)

    /// `upstream` nil = a primary.
    public init(upstream: String?) {
        state = WALMutex(State(upstream: upstream))
    }

    /// Under automatic failover: starts fenced (no lease, no upstream) until the coordinator
    /// knows who leads.
    public init(highAvailability: HighAvailabilityStatus) {
        state = WALMutex(State(upstream: nil, ha: highAvailability, fenceReason: "not the leader: looking for the leader in etcd"))
        writeLeaseEnd.store(0, ordering: .releasing)
    }

    public var upstream: String? { state.withLock { $0.upstream } }
    public var isFollower: Bool { upstream != nil }
    public var upstreamConnected: Bool { state.withLock { $0.connected } }
    public var lastError: String? { state.withLock { $0.lastError } }

    public func setConnected(_ connected: Bool, error: String? = nil) {
        state.withLock {
            $0.connected = connected
            if let error { $0.lastError = error } else if connected { $0.lastError = nil }
        }
    }

    /// Called when a client sends PROMOTE to a follower (the replicator stops in it).
    public func setPromotionHandler(_ handler: @escaping @Sendable () async -> Void) {
        state.withLock { $0.onPromote = handler }
    }

    /// Stops following: runs the promotion handler, then this server accepts appends.
    func promote() async {
        guard let handler = state.withLock({ $0.onPromote }), isFollower else {
            state.withLock { $0.upstream = nil }
            return
        }
        await handler()
        state.withLock {
            $0.upstream = nil
            $0.connected = false
        }
    }

    // MARK: Automatic failover

    /// Whether the failover coordinator runs (`--ha-etcd`).
    public var isHighAvailability: Bool { state.withLock { $0.ha != nil } }
    /// The leadership term this server knows of (0 before any).
    public var term: UInt64 { state.withLock { $0.term } }
    /// The current leader's advertised `HOST:PORT`, when known.
    public var leader: String? { state.withLock { $0.leader } }
    public var highAvailability: HighAvailabilityStatus? { state.withLock { $0.ha } }

    /// Follows `upstream` (the leader of `term`) from now on: appends are refused, naming it.
    public func follow(_ upstream: String, term: UInt64) {
        writeLeaseEnd.store(0, ordering: .releasing)
        state.withLock {
            $0.upstream = upstream
            $0.leader = upstream
            $0.term = max($0.term, term)
            $0.connected = false
            $0.fenceReason = "not the leader"
        }
    }

    /// Leads `term`: no upstream; appends are acknowledged while the lease lasts (`renewLease`).
    public func lead(term: UInt64, advertised: String, leaseEnd: DispatchTime) {
        state.withLock {
            $0.upstream = nil
            $0.connected = false
            $0.leader = advertised
            $0.term = max($0.term, term)
            $0.fenceReason = nil
        }
        writeLeaseEnd.store(leaseEnd.uptimeNanoseconds, ordering: .releasing)
    }

    /// A renewal succeeded: acknowledgements may go on until `end` (never moved backwards).
    public func renewLease(until end: DispatchTime) {
        let nanos = end.uptimeNanoseconds
        var current = writeLeaseEnd.load(ordering: .acquiring)
        while current != 0 && current < nanos {
            let (exchanged, original) = writeLeaseEnd.compareExchange(expected: current, desired: nanos, ordering: .acquiringAndReleasing)
            if exchanged { break }
            current = original
        }
    }

    /// Stops acknowledging appends now (the lease is lost or may be), saying why.
    public func fence(reason: String, leader: String?? = nil) {
        writeLeaseEnd.store(0, ordering: .releasing)
        state.withLock {
            $0.fenceReason = reason
            if let leader { $0.leader = leader }
        }
    }

    public func setLeader(_ leader: String?, term: UInt64) {
        state.withLock {
            $0.leader = leader
            $0.term = max($0.term, term)
        }
    }

    public func updateHighAvailability(_ body: (inout HighAvailabilityStatus) -> Void) {
        state.withLock { if $0.ha != nil { body(&$0.ha!) } }
    }

    /// Whether an append may be acknowledged now: always without automatic failover; under
    /// it, only while the leader lease (minus its margin) lasts.
    public var mayAcknowledgeWrites: Bool {
        DispatchTime.now().uptimeNanoseconds < writeLeaseEnd.load(ordering: .acquiring)
    }

    /// Why an append is refused here, or nil when it may be taken: a follower names its
    /// upstream, a fenced primary the reason; both end with `leader=HOST:PORT` (or
    /// `leader=none`), which clients parse to retry there (docs/protocol.md, READ_ONLY).
    public var appendRefusal: String? {
        let snapshot = state.withLock { $0 }
        if let upstream = snapshot.upstream {
            return "this server is a read-only follower of \(upstream); append there (leader=\(snapshot.leader ?? upstream))"
        }
        guard !mayAcknowledgeWrites else { return nil }
        return "\(snapshot.fenceReason ?? "the leader lease ran out") (leader=\(snapshot.leader ?? "none"))"
    }
}

/// What INFO's `ha` object shows: the etcd connection and the lease.
public struct HighAvailabilityStatus: Sendable {
    public var endpoints: [String]
    public var cluster: String
    public var connected = false
    public var leaseTTL: Duration
    public var lastRenewal: ContinuousClock.Instant?
    public var error: String?

    public init(endpoints: [String], cluster: String, leaseTTL: Duration) {
        self.endpoints = endpoints
        self.cluster = cluster
        self.leaseTTL = leaseTTL
    }
}

/// Followers' acknowledged positions, for durable appends that wait for `min_sync_replicas`.
/// Lives on the event loop (feedback arrives there, and held replies are released there).
final class SyncReplicas {
    private var acknowledged: [Int: LSN] = [:]  // connection id → durable LSN
    /// Positions sorted from the highest down, recomputed when one changes.
    private var sorted: [LSN] = []
    /// Durable appends failed because too few followers acknowledged in time, and the last reason.
    private(set) var timeouts = 0
    private(set) var lastTimeout: String?

    /// Records a follower's durable LSN; returns whether any position moved.
    func feedback(connection: Int, durableLSN: LSN) -> Bool {
        let old = acknowledged[connection] ?? 0
        guard durableLSN > old || acknowledged[connection] == nil else { return false }
        acknowledged[connection] = max(old, durableLSN)
        sorted = acknowledged.values.sorted(by: >)
        return true
    }

    /// Forgets a follower that left; returns whether it was one.
    func remove(connection: Int) -> Bool {
        guard acknowledged.removeValue(forKey: connection) != nil else { return false }
        sorted = acknowledged.values.sorted(by: >)
        return true
    }

    /// The highest LSN that at least `count` followers have acknowledged (0 when fewer follow).
    func position(count: Int) -> LSN {
        guard count > 0 else { return .max }
        return sorted.count >= count ? sorted[count - 1] : 0
    }

    /// How many followers have acknowledged `lsn` or beyond.
    func count(atLeast lsn: LSN) -> Int {
        sorted.prefix { $0 >= lsn }.count
    }

    func timedOut(_ message: String) {
        timeouts += 1
        lastTimeout = message
    }
}
