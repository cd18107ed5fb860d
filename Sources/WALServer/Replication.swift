// Replication state the server needs: whether this server follows an upstream (and is then
// read-only to clients), and which followers have acknowledged what (for INFO, for holding
// segments they still need, and for synchronous replication).
import Synchronization
import WALCore

/// Whether this server is a follower, and of whom. Shared with the daemon's replicator.
public final class ReplicationRole: Sendable {
    private struct State {
        var upstream: String?
        var connected = false
        var lastError: String?
        var onPromote: (@Sendable () async -> Void)?
    }

    private let state: Mutex<State>

    /// `upstream` nil = a primary.
    public init(upstream: String?) {
        state = Mutex(State(upstream: upstream))
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
