// Group commit: the one thread that runs fdatasync. The writer (see WAL.swift) pwrites records
// on its own thread and asks for a sync; this thread syncs everything written up to the moment
// it starts, and while it runs the writer keeps writing, so the next sync covers every record
// that arrived meanwhile. Sealing a full segment and installing the next, erasing a failed
// write, deleting old segments' directory entries durably and the watchdog's probe run here
// too, as jobs, in the order asked for: no fsync of any kind runs on the writer's thread.
//
// Exactly one hand-off each way separates a write from its fdatasync: the writer signals this
// thread (a semaphore, only when it is idle), and every result goes back through `deliver`,
// which the WAL points at the server's event loop (one `async` per completion) or, with no
// loop attached, runs inline on this thread.
//
// A failed fdatasync is never retried (the kernel may have dropped the dirty pages it could
// not write; a second fdatasync would report success for data that is gone): the thread
// reports the failure once and never syncs again.
import CoreMetrics
import Dispatch
import DequeModule
import Logging
import Synchronization
import WALSync

final class GroupCommit: Sendable {
    /// The file the next sync flushes.
    struct Target: Sendable {
        let handle: IOHandle
        let path: String
    }

    /// What a job reports: the completion to deliver, and how far it made the log durable
    /// (a seal syncs the old segment) so the thread does not sync the same bytes again.
    struct JobOutcome: Sendable {
        var completion: Completion
        var syncedThrough: LSN?
        /// An fdatasync inside the job failed: no sync runs after it.
        var syncFailed = false
    }

    /// Results, delivered in the order they happened.
    enum Completion: Sendable {
        /// An fdatasync of the target covered every record through `through`.
        case synced(through: LSN)
        /// An fdatasync failed; the log is failed from here on.
        case syncFailed(WALError)
        /// A job finished; `token` names it, `result` is its payload.
        case job(token: UInt64, result: Result<JobResult, WALError>)
    }

    /// The payload of a finished job.
    enum JobResult: Sendable {
        case done
        /// Everything written through the LSN is durable.
        case synced(through: LSN)
        /// The old segment is durable through the LSN; the next one is installed, or why not.
        case sealed(through: LSN, installed: Result<Installed, WALError>)
        /// An empty log's new first segment.
        case adopted(Installed)
    }

    /// A segment made ready by a seal job: renamed into place, header durable.
    struct Installed: Sendable {
        let handle: IOHandle
        let path: String
        let name: String
    }

    private struct Job {
        let token: UInt64
        let work: @Sendable () -> JobOutcome
    }

    private struct Mailbox {
        var target: Target
        /// Highest LSN the writer has pwritten (to the target or an earlier, sealed segment).
        var written: LSN
        /// Highest LSN this thread has made durable.
        var synced: LSN
        /// Highest LSN someone waits to see durable.
        var requested: LSN
        var jobs: Deque<Job> = []
        var idle = true
        var failed = false
        var stopping = false
        var stats = GroupCommitStats()
        var slowSyncNanos: UInt64
    }

    private let mailbox: WALMutex<Mailbox>
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let io: any FileIO
    private let logger: Logger
    /// Where completions go. A struct around the closure: a bare closure as a Mutex's value is
    /// reabstracted on every `withLock` (into and back out of the generic storage), and the
    /// thunks pile up, one pair per call (seen in a profile: 43 % of wald's CPU after 8000 syncs).
    private struct Delivery {
        let deliver: @Sendable (Completion) -> Void
    }

    private let delivery: WALMutex<Delivery>
    private let syncTimer = CoreMetrics.Timer(label: "wald_fsync_duration_seconds")
    private let recordsPerSync = Recorder(label: "wald_records_per_fsync")

    /// `durable` is the LSN already on disk when the log was opened. Completions go to
    /// `deliver` until `setDelivery` replaces it.
    init(io: any FileIO, target: Target, durable: LSN, logger: Logger, slowSyncThreshold: Duration,
         deliver: @escaping @Sendable (Completion) -> Void) {
        self.io = io
        self.logger = logger
        delivery = WALMutex(Delivery(deliver: deliver))
        mailbox = WALMutex(Mailbox(target: target, written: durable, synced: durable, requested: durable,
                                slowSyncNanos: nanoseconds(slowSyncThreshold)))
        // A queue of its own that this one block occupies for the log's life: a thread, parked
        // on `wakeup` whenever there is nothing to sync.
        DispatchQueue(label: "wald.wal.sync", qos: .userInitiated).async { [self] in run() }
    }

    /// Routes later completions through `deliver` (the WAL's event loop, when one attaches).
    func setDelivery(_ deliver: @escaping @Sendable (Completion) -> Void) {
        delivery.withLock { $0 = Delivery(deliver: deliver) }
    }

    func setSlowSyncThreshold(_ threshold: Duration) {
        mailbox.withLock { $0.slowSyncNanos = nanoseconds(threshold) }
    }

    var stats: GroupCommitStats { mailbox.withLock { $0.stats } }

    /// The writer pwrote every record through `lsn` to the current target; with `sync`, it
    /// also wants them durable. Wakes the thread only when it is idle and there is a sync to do.
    func wrote(through lsn: LSN, sync: Bool) {
        let signal = mailbox.withLock { m -> Bool in
            m.written = max(m.written, lsn)
            if sync { m.requested = max(m.requested, lsn) }
            return wakeIfIdle(&m)
        }
        if signal { wakeup.signal() }
    }

    /// Asks for a sync of everything written so far (the flush interval).
    func requestSync() {
        let signal = mailbox.withLock { m -> Bool in
            m.requested = max(m.requested, m.written)
            return wakeIfIdle(&m)
        }
        if signal { wakeup.signal() }
    }

    /// Later syncs flush `target` (the writer installed the next segment; the old one was
    /// synced by the seal job that installed this one).
    func switchTarget(to target: Target) {
        mailbox.withLock { $0.target = target }
    }

    /// The file the next sync flushes, and the highest LSN written to it: what a job's own
    /// fdatasync covers (read on the sync thread, where no target switch can interleave).
    var syncPoint: (target: Target, through: LSN) { mailbox.withLock { ($0.target, $0.written) } }

    /// Starts over at `durable` with `target` (an empty log adopted another identity).
    func reset(target: Target, durable: LSN) {
        mailbox.withLock { m in
            m.target = target
            m.written = durable
            m.synced = durable
            m.requested = durable
        }
    }

    /// Runs `work` on the sync thread after everything asked for before it; its outcome is
    /// delivered like a sync's. Returns false (and runs nothing) once the thread has stopped.
    @discardableResult
    func enqueue(token: UInt64, _ work: @escaping @Sendable () -> JobOutcome) -> Bool {
        let (accepted, signal) = mailbox.withLock { m -> (Bool, Bool) in
            guard !m.stopping else { return (false, false) }
            m.jobs.append(Job(token: token, work: work))
            if m.idle {
                m.idle = false
                return (true, true)
            }
            return (true, false)
        }
        if signal { wakeup.signal() }
        return accepted
    }

    /// Runs one fdatasync of `target` for a job, timing it like a group-commit sync.
    func syncForJob(_ target: Target) throws(IOError) {
        let started = ContinuousClock.now
        do { try io.syncData(target.handle, path: target.path) } catch let error as IOError { throw error } catch {
            throw IOError("fdatasync", path: target.path, errno: 0)
        }
        record(nanos: nanoseconds(ContinuousClock.now - started), records: 0, path: target.path)
    }

    /// Stops the thread once it has finished what was asked of it. Later requests are ignored.
    func stop() {
        mailbox.withLock { $0.stopping = true }
        wakeup.signal()
        finished.wait()
    }

    private func wakeIfIdle(_ m: inout Mailbox) -> Bool {
        guard m.idle, !m.failed, m.requested > m.synced else { return false }
        m.idle = false
        return true
    }

    private enum Work {
        case sync(Target, through: LSN, records: UInt64)
        case job(Job)
    }

    private func next() -> Work? {
        mailbox.withLock { m -> Work? in
            if let job = m.jobs.popFirst() { return .job(job) }
            if !m.failed, m.requested > m.synced {
                let records = m.written > m.synced ? m.written - m.synced : 0
                return .sync(m.target, through: m.written, records: records)
            }
            m.idle = true
            return nil
        }
    }

    private func run() {
        while true {
            wakeup.wait()
            while let work = next() {
                let completion: Completion
                switch work {
                case .sync(let target, let through, let records):
                    let started = ContinuousClock.now
                    do {
                        try io.syncData(target.handle, path: target.path)
                    } catch {
                        logger.critical("fdatasync failed; the WAL is now failed", metadata: ["error": "\(error)"])
                        mailbox.withLock { $0.failed = true }
                        deliverNow(.syncFailed(.failed(reason: "fdatasync of \(target.path) failed: \(error)", cause: error as? IOError)))
                        continue
                    }
                    record(nanos: nanoseconds(ContinuousClock.now - started), records: records, path: target.path)
                    mailbox.withLock { m in
                        m.synced = max(m.synced, through)
                        m.stats.recordsSynced += records
                    }
                    completion = .synced(through: through)
                case .job(let job):
                    let outcome = job.work()
                    mailbox.withLock { m in
                        if let through = outcome.syncedThrough, through > m.synced {
                            m.stats.recordsSynced += through - m.synced
                            m.synced = through
                        }
                        if outcome.syncFailed { m.failed = true }
                    }
                    completion = outcome.completion
                }
                deliverNow(completion)
            }
            // `next()` found nothing to do; the writer asks for its last sync before `stop()`.
            if mailbox.withLock({ $0.stopping }) {
                finished.signal()
                return
            }
        }
    }

    private func deliverNow(_ completion: Completion) {
        let deliver = delivery.withLock { $0.deliver }
        deliver(completion)
    }

    private func record(nanos: UInt64, records: UInt64, path: String) {
        syncTimer.recordNanoseconds(Int64(clamping: nanos))
        recordsPerSync.record(Int64(clamping: records))
        let slow = mailbox.withLock { m -> Bool in
            m.stats.syncs += 1
            m.stats.syncNanos += nanos
            m.stats.maxSyncNanos = max(m.stats.maxSyncNanos, nanos)
            return nanos >= m.slowSyncNanos
        }
        if slow {
            logger.warning("slow fdatasync", metadata: ["duration_ms": "\(nanos / 1_000_000)", "segment": "\(path)"])
        }
    }
}

/// Counters of the sync path, for benchmarks and metrics.
public struct GroupCommitStats: Sendable, Equatable {
    /// fdatasync calls completed (group-commit syncs and the syncs inside jobs).
    public var syncs: UInt64 = 0
    /// Records made durable.
    public var recordsSynced: UInt64 = 0
    /// Total and maximum time spent in fdatasync.
    public var syncNanos: UInt64 = 0
    public var maxSyncNanos: UInt64 = 0
}

func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    // Clamped, not trapped: options are validated to a year, but a caller may pass anything.
    let (whole, overflow) = UInt64(max(0, seconds)).multipliedReportingOverflow(by: 1_000_000_000)
    guard !overflow else { return .max }
    let (total, overflow2) = whole.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000))
    return overflow2 ? .max : total
}
