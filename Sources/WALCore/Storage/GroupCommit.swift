// Group commit: fdatasync runs off the writer actor, and every client whose records one sync
// covers shares it.
//
// Who runs the sync (why it is not always the same thread):
// - Leader. A durable waiter that finds no sync in flight, with its records already written,
//   runs fdatasync itself on the thread it is on, outside the writer actor, and returns. A lone
//   writer therefore pays no thread handoff at all: parking on a continuation, waking a sync
//   thread with a semaphore and resuming the task back on the cooperative pool cost ≈ 70 µs
//   per append, nearly as much as the fdatasync itself (≈ 85 µs).
// - Sync thread. Everything else — waiters that arrive while a sync is in flight, the flush
//   timer, `probe()` — parks and is served by one dedicated thread, which starts the next sync
//   as soon as one ends while anyone still waits. A leader that finishes with more waiters
//   pending hands over to it rather than syncing again: its own caller is not kept waiting, and
//   a contended log blocks no cooperative-pool thread. It hands back when nothing is pending.
// A leader blocks a cooperative-pool thread (there are as many as cores: 2 here) for one
// fdatasync. That is acceptable only briefly and one at a time, so a process-wide slot admits
// one leader at once; a waiter that finds it taken (another log is leading) uses its log's sync
// thread. `syncer` says who owns the sync path; exactly one sync is ever in flight per log.
//
// Continuations are resumed only after `state` is unlocked. Resuming one takes its task's
// status lock; a task being cancelled holds that lock while its cancellation handler (in
// `waitForDurable`) waits for `state`. Resuming under `state` deadlocked exactly so (found by
// the TSan run: a connection closing while its follow stream's watcher was being woken).
//
// A failed fdatasync is never retried (the kernel may have dropped the dirty pages): the log
// enters its failed state, and every pending and later waiter fails.
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

    /// Continuations collected under `state` and resumed after it is unlocked (see the file comment).
    private struct Resumptions: ~Copyable {
        private var pending: [(CheckedContinuation<LSN, any Error>, Result<LSN, any Error>)] = []

        mutating func add(_ continuation: CheckedContinuation<LSN, any Error>, _ result: Result<LSN, any Error>) {
            pending.append((continuation, result))
        }

        consuming func resumeAll() {
            for (continuation, result) in pending { continuation.resume(with: result) }
        }
    }

    /// Who owns the sync path.
    private enum Syncer {
        /// Nobody: no sync in flight, no waiter pending, the sync thread parked.
        case idle
        /// A waiter is running fdatasync on its own thread; the sync thread is parked.
        case leader
        /// The sync thread: it syncs until nothing is wanted, then sets `idle`.
        case thread
    }

    private struct State {
        var target: Target
        /// Highest LSN written (pwrite returned) to the target or an earlier, synced segment.
        var written: LSN
        var durable: LSN
        var requested: LSN
        var forceSync = false
        var syncer = Syncer.idle
        /// The handle inside fdatasync right now: rotation retires it instead of closing it,
        /// and whoever ran that sync closes it when the sync returns.
        var inSync: IOHandle?
        var retired: [Target] = []
        var failure: WALError?
        var waiters: Deque<Waiter> = []
        var watchers: [Watcher] = []
        var nextWatcherID = 1
        var cancelledWatchers: Set<Int> = []
        var stopping = false
        /// `stop()` waits for the running leader.
        var stopWaitsForLeader = false
        /// The sync thread has exited.
        var stopped = false
        var stats = GroupCommitStats()
        /// Syncs run by a leader (the rest ran on the sync thread).
        var leaderSyncs: UInt64 = 0
        var slowSyncNanos: UInt64
    }

    private let state: Mutex<State>
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let leaderFinished = DispatchSemaphore(value: 0)
    private let io: any FileIO
    private let logger: Logger
    private let syncTimer = CoreMetrics.Timer(label: "wald_fsync_duration_seconds")
    private let recordsPerSync = Recorder(label: "wald_records_per_fsync")
    private let failedGauge = Gauge(label: "wald_failed")
    private let leaderSlot: LeaderSlot

    /// `leaderSlot` is shared by every log in the process (tests pass their own).
    init(io: any FileIO, target: Target, durable: LSN, logger: Logger, slowSyncThreshold: Duration,
         leaderSlot: LeaderSlot = .shared) {
        self.io = io
        self.logger = logger
        self.leaderSlot = leaderSlot
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
    /// Syncs run by a leader rather than the sync thread, and waiters parked now (for tests).
    var leaderSyncs: UInt64 { state.withLock { $0.leaderSyncs } }
    var parkedWaiters: Int { state.withLock { $0.waiters.count } }

    /// The writer wrote every record up to `lsn` to the current target.
    func didWrite(upTo lsn: LSN) {
        state.withLock { $0.written = max($0.written, lsn) }
    }

    /// Hands the sync path to the sync thread if nobody owns it; true when the caller must
    /// signal `wakeup` (after unlocking).
    private func wakeThreadIfIdle(_ s: inout State) -> Bool {
        guard s.syncer == .idle else { return false }
        s.syncer = .thread
        return true
    }

    /// Asks for a sync of everything written, without waiting (flush interval).
    func requestSync() {
        let signal = state.withLock { s -> Bool in
            guard s.failure == nil, s.written > s.durable else { return false }
            s.requested = max(s.requested, s.written)
            return wakeThreadIfIdle(&s)
        }
        if signal { wakeup.signal() }
    }

    /// Asks for an fdatasync even when nothing new was written, and waits for it: proves the
    /// sync path works (the service watchdog uses this).
    func probe() async throws -> LSN {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = state.withLock { s -> Result<Bool, any Error> in
                if let failure = s.failure { return .failure(failure) }
                if s.stopped { return .failure(WALError.closed) }
                s.forceSync = true
                s.requested = max(s.requested, s.written)
                // A waiter at the already-durable LSN is resumed by the forced sync.
                s.waiters.append(Waiter(lsn: s.written, continuation: continuation))
                return .success(wakeThreadIfIdle(&s))
            }
            switch outcome {
            case .failure(let error): continuation.resume(throwing: error)
            case .success(let signal): if signal { wakeup.signal() }
            }
        }
    }

    /// Returns once `lsn` is durable (the durable LSN then): as the leader when no sync is in
    /// flight (see the file comment), otherwise parked until the sync thread covers it.
    /// `@concurrent`: a leader must block its own thread, never the writer actor's.
    @concurrent
    func waitDurable(_ lsn: LSN) async throws -> LSN {
        enum Next {
            case done(LSN)
            case failed(WALError)
            case lead(Target, LSN)
            case park
        }
        let next = state.withLock { s -> Next in
            if let failure = s.failure { return .failed(failure) }
            if s.durable >= lsn { return .done(s.durable) }
            // Only a waiter whose records are written can lead: its sync must cover them.
            guard s.syncer == .idle, !s.stopping, lsn <= s.written,
                  leaderSlot.take()
            else { return .park }
            s.syncer = .leader
            s.requested = max(s.requested, lsn)
            s.inSync = s.target.handle
            s.leaderSyncs += 1
            return .lead(s.target, s.written)
        }
        switch next {
        case .done(let durable): return durable
        case .failed(let failure): throw failure
        case .lead(let target, let upTo): return try lead(target, upTo: upTo)
        case .park: return try await park(lsn)
        }
    }

    /// The leader's sync: runs it here, then hands the sync path back (to nobody, or to the
    /// sync thread when more is wanted).
    private func lead(_ target: Target, upTo: LSN) throws -> LSN {
        sync(target, upTo: upTo)
        leaderSlot.release()
        let (result, handOver, stopWaits) = state.withLock { s -> (Result<LSN, WALError>, Bool, Bool) in
            let wanted = s.requested > s.durable || s.forceSync
            let handOver = s.failure == nil && wanted
            s.syncer = handOver ? .thread : .idle
            let stopWaits = s.stopWaitsForLeader
            s.stopWaitsForLeader = false
            // A failure while this sync ran (a failed write on the actor) fails this waiter too.
            return (s.failure.map { .failure($0) } ?? .success(s.durable), handOver, stopWaits)
        }
        if handOver { wakeup.signal() }
        if stopWaits { leaderFinished.signal() }
        return try result.get()
    }

    /// Parks until the sync thread's syncs cover `lsn`.
    private func park(_ lsn: LSN) async throws -> LSN {
        try await withCheckedThrowingContinuation { continuation in
            enum Parked {
                case resume(Result<LSN, any Error>)
                case parked(signal: Bool)
            }
            let parked = state.withLock { s -> Parked in
                // Re-checked: a sync may have ended since `waitDurable` looked.
                if let failure = s.failure { return .resume(.failure(failure)) }
                if s.durable >= lsn { return .resume(.success(s.durable)) }
                if s.stopped { return .resume(.failure(WALError.closed)) }
                s.requested = max(s.requested, lsn)
                // Appends reach here in LSN order through the writer actor; keep the deque sorted anyway.
                if let last = s.waiters.last, last.lsn > lsn {
                    let index = s.waiters.firstIndex { $0.lsn > lsn }!
                    s.waiters.insert(Waiter(lsn: lsn, continuation: continuation), at: index)
                } else {
                    s.waiters.append(Waiter(lsn: lsn, continuation: continuation))
                }
                // A running leader hands over to the thread when it sees this waiter.
                return .parked(signal: wakeThreadIfIdle(&s))
            }
            switch parked {
            case .resume(let result): continuation.resume(with: result)
            case .parked(let signal): if signal { wakeup.signal() }
            }
        }
    }

    /// Returns once the durable LSN exceeds `lsn` (live followers wait here). Cancellable.
    func waitForDurable(beyond lsn: LSN) async throws -> LSN {
        let id = state.withLock { s -> Int in
            defer { s.nextWatcherID += 1 }
            return s.nextWatcherID
        }
        // A cancel that comes after a sync already took this watcher records its id; the handler
        // cannot run once withTaskCancellationHandler has returned, so drop it then (no growth).
        defer { state.withLock { _ = $0.cancelledWatchers.remove(id) } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let now = state.withLock { s -> Result<LSN, any Error>? in
                    if let failure = s.failure { return .failure(failure) }
                    if s.durable > lsn { return .success(s.durable) }
                    if s.cancelledWatchers.remove(id) != nil || s.stopping { return .failure(CancellationError()) }
                    s.watchers.append(Watcher(id: id, lsn: lsn, continuation: continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let watcher = state.withLock { s -> Watcher? in
                if let index = s.watchers.firstIndex(where: { $0.id == id }) { return s.watchers.remove(at: index) }
                s.cancelledWatchers.insert(id)
                return nil
            }
            watcher?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Rotation: the writer synced the old target itself, so everything up to `durableLSN`
    /// is durable; later syncs flush `newTarget`. The old handle is closed once no sync uses it.
    func switchTarget(to newTarget: Target, durableThrough durableLSN: LSN) {
        var closeNow: Target?
        var resumptions = Resumptions()
        state.withLock { s in
            let old = s.target
            s.target = newTarget
            if s.inSync == old.handle { s.retired.append(old) } else { closeNow = old }
            markDurable(&s, durableLSN, &resumptions)
        }
        resumptions.resumeAll()
        if let closeNow { io.close(closeNow.handle) }
    }

    /// Enters the failed state: every waiter and every later call fails with `reason`.
    func fail(_ reason: String) {
        var resumptions = Resumptions()
        state.withLock { s in
            guard s.failure == nil else { return }
            let error = WALError.failed(reason: reason)
            s.failure = error
            failedGauge.record(1)
            failAll(&s, error, &resumptions)
        }
        resumptions.resumeAll()
    }

    private func failAll(_ s: inout State, _ error: WALError, _ resumptions: inout Resumptions) {
        while let waiter = s.waiters.popFirst() { resumptions.add(waiter.continuation, .failure(error)) }
        for watcher in s.watchers { resumptions.add(watcher.continuation, .failure(error)) }
        s.watchers.removeAll()
    }

    /// Stops the sync thread after its current sync (and a running leader's) and closes the
    /// target; pending waiters fail.
    func stop() {
        let waitForLeader = state.withLock { s -> Bool in
            s.stopping = true  // No new leader from here on.
            s.stopWaitsForLeader = s.syncer == .leader
            return s.stopWaitsForLeader
        }
        if waitForLeader { leaderFinished.wait() }
        wakeup.signal()
        finished.wait()
    }

    private func markDurable(_ s: inout State, _ lsn: LSN, _ resumptions: inout Resumptions) {
        guard lsn > s.durable else { return }
        let covered = lsn - s.durable
        s.durable = lsn
        s.stats.recordsSynced += covered
        while let first = s.waiters.first, first.lsn <= lsn {
            resumptions.add(s.waiters.removeFirst().continuation, .success(lsn))
        }
        if !s.watchers.isEmpty {
            var remaining: [Watcher] = []
            for watcher in s.watchers {
                if watcher.lsn < lsn { resumptions.add(watcher.continuation, .success(lsn)) } else { remaining.append(watcher) }
            }
            s.watchers = remaining
        }
    }

    /// Runs one fdatasync of `target`, which holds everything up to `upTo`, and publishes the
    /// result: resumes the waiters it covers, or fails the log. The caller owns the sync path
    /// and set `inSync` to `target.handle`.
    private func sync(_ target: Target, upTo: LSN) {
        let started = ContinuousClock.now
        do {
            try io.syncData(target.handle, path: target.path)
        } catch {
            logger.critical("fdatasync failed; the WAL is now failed", metadata: ["error": "\(error)"])
            fail("fdatasync of \(target.path) failed: \(error)")
            closeRetired()
            return
        }
        // Targets retired while this sync ran are unused now: close them before waking
        // anyone, so a caller that saw its sync complete sees the old segment closed.
        closeRetired()
        let nanos = nanoseconds(ContinuousClock.now - started)
        syncTimer.recordNanoseconds(Int64(nanos))
        var resumptions = Resumptions()
        let slow = state.withLock { s -> Bool in
            s.stats.syncs += 1
            s.stats.syncNanos += nanos
            s.stats.maxSyncNanos = max(s.stats.maxSyncNanos, nanos)
            recordsPerSync.record(upTo > s.durable ? upTo - s.durable : 0)
            markDurable(&s, upTo, &resumptions)
            // Forced probes wait at an LSN that was already durable.
            while let first = s.waiters.first, first.lsn <= s.durable {
                resumptions.add(s.waiters.removeFirst().continuation, .success(s.durable))
            }
            return nanos >= s.slowSyncNanos
        }
        resumptions.resumeAll()
        if slow {
            logger.warning("slow fdatasync", metadata: [
                "duration_ms": "\(nanos / 1_000_000)", "segment": "\(target.path)",
            ])
        }
    }

    /// Ends the in-flight sync's hold on its handle and closes the targets retired during it.
    private func closeRetired() {
        let retired = state.withLock { s -> [Target] in
            s.inSync = nil
            defer { s.retired.removeAll() }
            return s.retired
        }
        for target in retired { io.close(target.handle) }
    }

    /// The sync thread: parked until handed the sync path, then syncs while anything is wanted.
    private func run() {
        while true {
            wakeup.wait()
            while true {
                let job = state.withLock { s -> (Target, LSN)? in
                    // Woken by stop() alone, or the path is someone else's: nothing to do here.
                    guard s.syncer == .thread else { return nil }
                    let wanted = s.requested > s.durable || s.forceSync
                    guard s.failure == nil, wanted, !(s.stopping && s.waiters.isEmpty) else {
                        s.syncer = .idle
                        return nil
                    }
                    s.forceSync = false
                    s.inSync = s.target.handle
                    return (s.target, s.written)
                }
                guard let (target, upTo) = job else { break }
                sync(target, upTo: upTo)
            }
            let (stopping, target) = state.withLock { ($0.stopping, $0.target) }
            if stopping {
                // stop() waited for any leader, and no leader starts once stopping: no sync runs.
                closeRetired()
                io.close(target.handle)
                var resumptions = Resumptions()
                state.withLock { s in
                    s.stopped = true
                    let error = s.failure ?? WALError.closed
                    failAll(&s, error, &resumptions)
                }
                resumptions.resumeAll()
                finished.signal()
                return
            }
        }
    }
}

/// Admits one leader at a time: a leader blocks a cooperative-pool thread for one fdatasync,
/// and the pool has only as many threads as cores.
final class LeaderSlot: Sendable {
    static let shared = LeaderSlot()
    private let taken = Atomic<Bool>(false)

    func take() -> Bool { taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged }
    func release() { taken.store(false, ordering: .releasing) }
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
