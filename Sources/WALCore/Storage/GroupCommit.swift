// Group commit: one dedicated thread runs fdatasync off the writer actor. The writer
// publishes how far it has written; whoever needs durability registers a waiter. When a
// sync finishes, every waiter it covers is resumed directly from the sync thread, and the
// next sync starts at once if anyone is still waiting. One client therefore pays one
// fdatasync per append with no added delay, and many clients share one.
import CoreMetrics
import Dispatch
import DequeModule
import Logging
import Synchronization

final class GroupCommit: Sendable {
    /// The file the next sync flushes.
    struct Target: Sendable {
        let handle: IOHandle
        let path: String
    }

    private struct Waiter {
        let lsn: LSN
        let continuation: CheckedContinuation<LSN, any Error>
    }

    private struct Watcher {
        let id: Int
        let lsn: LSN
        let continuation: CheckedContinuation<LSN, any Error>
    }

    private struct State {
        var target: Target
        /// Highest LSN written (pwrite returned) to the target or an earlier, synced segment.
        var written: LSN
        var durable: LSN
        var requested: LSN
        var forceSync = false
        var syncing = false
        var retired: [Target] = []
        var failure: WALError?
        var waiters: Deque<Waiter> = []
        var watchers: [Watcher] = []
        var nextWatcherID = 1
        var cancelledWatchers: Set<Int> = []
        var stopping = false
        var stats = GroupCommitStats()
        var slowSyncNanos: UInt64
    }

    private let state: Mutex<State>
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let io: any FileIO
    private let logger: Logger
    private let syncTimer = CoreMetrics.Timer(label: "wald_fsync_duration_seconds")
    private let recordsPerSync = Recorder(label: "wald_records_per_fsync")
    private let failedGauge = Gauge(label: "wald_failed")

    init(io: any FileIO, target: Target, durable: LSN, logger: Logger, slowSyncThreshold: Duration) {
        self.io = io
        self.logger = logger
        state = Mutex(State(target: target, written: durable, durable: durable, requested: durable,
                            slowSyncNanos: nanoseconds(slowSyncThreshold)))
        DispatchQueue(label: "wald.wal.sync", qos: .userInitiated).async { [self] in run() }
    }

    var durableLSN: LSN { state.withLock { $0.durable } }

    /// An fdatasync slower than this is logged at warning.
    func setSlowSyncThreshold(_ threshold: Duration) {
        state.withLock { $0.slowSyncNanos = nanoseconds(threshold) }
    }
    var failure: WALError? { state.withLock { $0.failure } }
    var stats: GroupCommitStats { state.withLock { $0.stats } }

    /// The writer wrote every record up to `lsn` to the current target.
    func didWrite(upTo lsn: LSN) {
        state.withLock { $0.written = max($0.written, lsn) }
    }

    /// Asks for a sync of everything written, without waiting (flush interval).
    func requestSync() {
        let signal = state.withLock { s -> Bool in
            guard s.failure == nil, s.written > s.durable else { return false }
            s.requested = max(s.requested, s.written)
            return !s.syncing
        }
        if signal { wakeup.signal() }
    }

    /// Asks for an fdatasync even when nothing new was written, and waits for it: proves the
    /// sync path works (the service watchdog uses this).
    func probe() async throws -> LSN {
        try await withCheckedThrowingContinuation { continuation in
            let signal = state.withLock { s -> Bool in
                if let failure = s.failure {
                    continuation.resume(throwing: failure)
                    return false
                }
                s.forceSync = true
                s.requested = max(s.requested, s.written)
                // A waiter at the already-durable LSN is resumed by the forced sync.
                s.waiters.append(Waiter(lsn: s.written, continuation: continuation))
                return !s.syncing
            }
            if signal { wakeup.signal() }
        }
    }

    /// Returns once `lsn` is durable (the durable LSN then), starting a sync if none runs.
    func waitDurable(_ lsn: LSN) async throws -> LSN {
        try await withCheckedThrowingContinuation { continuation in
            let signal = state.withLock { s -> Bool in
                if let failure = s.failure {
                    continuation.resume(throwing: failure)
                    return false
                }
                if s.durable >= lsn {
                    continuation.resume(returning: s.durable)
                    return false
                }
                s.requested = max(s.requested, lsn)
                // Appends reach here in LSN order through the writer actor; keep the deque sorted anyway.
                if let last = s.waiters.last, last.lsn > lsn {
                    let index = s.waiters.firstIndex { $0.lsn > lsn }!
                    s.waiters.insert(Waiter(lsn: lsn, continuation: continuation), at: index)
                } else {
                    s.waiters.append(Waiter(lsn: lsn, continuation: continuation))
                }
                return !s.syncing
            }
            if signal { wakeup.signal() }
        }
    }

    /// Returns once the durable LSN exceeds `lsn` (live followers wait here). Cancellable.
    func waitForDurable(beyond lsn: LSN) async throws -> LSN {
        let id = state.withLock { s -> Int in
            defer { s.nextWatcherID += 1 }
            return s.nextWatcherID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                state.withLock { s in
                    if let failure = s.failure {
                        continuation.resume(throwing: failure)
                    } else if s.durable > lsn {
                        continuation.resume(returning: s.durable)
                    } else if s.cancelledWatchers.remove(id) != nil || s.stopping {
                        continuation.resume(throwing: CancellationError())
                    } else {
                        s.watchers.append(Watcher(id: id, lsn: lsn, continuation: continuation))
                    }
                }
            }
        } onCancel: {
            state.withLock { s in
                if let index = s.watchers.firstIndex(where: { $0.id == id }) {
                    s.watchers.remove(at: index).continuation.resume(throwing: CancellationError())
                } else {
                    s.cancelledWatchers.insert(id)
                }
            }
        }
    }

    /// Rotation: the writer synced the old target itself, so everything up to `durableLSN`
    /// is durable; later syncs flush `newTarget`. The old handle is closed once no sync uses it.
    func switchTarget(to newTarget: Target, durableThrough durableLSN: LSN) {
        var closeNow: Target?
        state.withLock { s in
            let old = s.target
            s.target = newTarget
            if s.syncing { s.retired.append(old) } else { closeNow = old }
            markDurable(&s, durableLSN)
        }
        if let closeNow { io.close(closeNow.handle) }
    }

    /// Enters the failed state: every waiter and every later call fails with `reason`.
    func fail(_ reason: String) {
        state.withLock { s in
            guard s.failure == nil else { return }
            let error = WALError.failed(reason: reason)
            s.failure = error
            failedGauge.record(1)
            while let waiter = s.waiters.popFirst() { waiter.continuation.resume(throwing: error) }
            for watcher in s.watchers { watcher.continuation.resume(throwing: error) }
            s.watchers.removeAll()
        }
    }

    /// Stops the sync thread after its current sync and closes the target; pending waiters fail.
    func stop() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
        finished.wait()
    }

    private func markDurable(_ s: inout State, _ lsn: LSN) {
        guard lsn > s.durable else { return }
        let covered = lsn - s.durable
        s.durable = lsn
        s.stats.recordsSynced += covered
        while let first = s.waiters.first, first.lsn <= lsn {
            s.waiters.removeFirst().continuation.resume(returning: lsn)
        }
        if !s.watchers.isEmpty {
            var remaining: [Watcher] = []
            for watcher in s.watchers {
                if watcher.lsn < lsn { watcher.continuation.resume(returning: lsn) } else { remaining.append(watcher) }
            }
            s.watchers = remaining
        }
    }

    private func run() {
        while true {
            wakeup.wait()
            while true {
                let job = state.withLock { s -> (Target, LSN)? in
                    let wanted = s.requested > s.durable || s.forceSync
                    guard s.failure == nil, wanted, !(s.stopping && s.waiters.isEmpty) else {
                        s.syncing = false
                        return nil
                    }
                    s.syncing = true
                    s.forceSync = false
                    return (s.target, s.written)
                }
                guard let (target, upTo) = job else { break }
                let started = ContinuousClock.now
                do {
                    try io.syncData(target.handle, path: target.path)
                } catch {
                    logger.critical("fdatasync failed; the WAL is now failed", metadata: ["error": "\(error)"])
                    fail("fdatasync of \(target.path) failed: \(error)")
                    state.withLock { $0.syncing = false }
                    closeRetired()
                    break
                }
                // Targets retired while this sync ran are unused now: close them before waking
                // anyone, so a caller that saw its sync complete sees the old segment closed.
                closeRetired()
                let nanos = nanoseconds(ContinuousClock.now - started)
                syncTimer.recordNanoseconds(Int64(nanos))
                if nanos >= state.withLock({ $0.slowSyncNanos }) {
                    logger.warning("slow fdatasync", metadata: [
                        "duration_ms": "\(nanos / 1_000_000)", "segment": "\(target.path)",
                    ])
                }
                state.withLock { s in
                    s.stats.syncs += 1
                    s.stats.syncNanos += nanos
                    s.stats.maxSyncNanos = max(s.stats.maxSyncNanos, nanos)
                    recordsPerSync.record(upTo > s.durable ? upTo - s.durable : 0)
                    markDurable(&s, upTo)
                    // Forced probes wait at an LSN that was already durable.
                    while let first = s.waiters.first, first.lsn <= s.durable {
                        s.waiters.removeFirst().continuation.resume(returning: s.durable)
                    }
                }
            }
            // Targets retired after the last sync returned (syncing was still true then).
            closeRetired()
            let (stopping, target) = state.withLock { ($0.stopping, $0.target) }
            if stopping {
                closeRetired()
                io.close(target.handle)
                state.withLock { s in
                    let error = s.failure ?? WALError.closed
                    while let waiter = s.waiters.popFirst() { waiter.continuation.resume(throwing: error) }
                    for watcher in s.watchers { watcher.continuation.resume(throwing: error) }
                    s.watchers.removeAll()
                }
                finished.signal()
                return
            }
        }
    }

    /// Closes retired targets. Only the sync thread calls this, and never while it is inside
    /// fdatasync, so no retired handle is in use. (It used to wait for `syncing` to be false,
    /// which it never is between syncs of a busy loop: each rotation during a sync leaked a
    /// descriptor until close.)
    private func closeRetired() {
        let retired = state.withLock { s -> [Target] in
            defer { s.retired.removeAll() }
            return s.retired
        }
        for target in retired { io.close(target.handle) }
    }
}

/// Counters of the sync path, for benchmarks and metrics.
public struct GroupCommitStats: Sendable, Equatable {
    /// fdatasync calls completed.
    public var syncs: UInt64 = 0
    /// Records made durable (by syncs and by rotation).
    public var recordsSynced: UInt64 = 0
    /// Total and maximum time spent in fdatasync.
    public var syncNanos: UInt64 = 0
    public var maxSyncNanos: UInt64 = 0
}

func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
}
