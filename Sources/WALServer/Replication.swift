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

/// Followers' acknowledged positions; durable appends wait here for `min_sync_replicas`.
final class SyncReplicas: Sendable {
    private struct Waiter {
        let id: Int
        let lsn: LSN
        let count: Int
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var acknowledged: [Int: LSN] = [:]  // connection id → durable LSN
        var waiters: [Waiter] = []
        var nextID = 1
        var timeouts = 0
        var lastTimeout: String?
    }

    private let state = Mutex(State())

    func feedback(connection: Int, durableLSN: LSN) {
        state.withLock { s in
            s.acknowledged[connection] = max(s.acknowledged[connection] ?? 0, durableLSN)
            resumeSatisfied(&s)
        }
    }

    func remove(connection: Int) {
        state.withLock { _ = $0.acknowledged.removeValue(forKey: connection) }
    }

    var timeouts: (count: Int, last: String?) { state.withLock { ($0.timeouts, $0.lastTimeout) } }

    /// Returns once `count` followers acknowledged `lsn`; throws UNAVAILABLE-worthy
    /// `SyncReplicaTimeout` after `timeout` (no silent downgrade to asynchronous).
    func wait(for lsn: LSN, count: Int, timeout: Duration) async throws {
        guard count > 0 else { return }
        let id = state.withLock { s -> Int in defer { s.nextID += 1 }; return s.nextID }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let waiter = state.withLock { s -> Waiter? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                s.timeouts += 1
                s.lastTimeout = "no \(count) follower(s) acknowledged LSN \(lsn) within \(timeout)"
                return s.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: SyncReplicaTimeout(message: "timed out after \(timeout) waiting for \(count) sync replica(s) to acknowledge LSN \(lsn)"))
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { continuation in
            state.withLock { s in
                s.waiters.append(Waiter(id: id, lsn: lsn, count: count, continuation: continuation))
                resumeSatisfied(&s)
            }
        }
    }

    private func resumeSatisfied(_ s: inout State) {
        guard !s.waiters.isEmpty else { return }
        let positions = s.acknowledged.values.sorted(by: >)
        s.waiters.removeAll { waiter in
            guard positions.count >= waiter.count, positions[waiter.count - 1] >= waiter.lsn else { return false }
            waiter.continuation.resume()
            return true
        }
    }
}

struct SyncReplicaTimeout: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
