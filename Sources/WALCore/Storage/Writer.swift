// The single writer's state and rules: the active segment, the records encoded but not yet
// written, the LSN counters, and everything waiting on them. It lives inside WAL's mutex;
// every method runs with that lock held, on whichever thread entered the writer (the server's
// event loop, or a library caller). No method blocks on another thread and none calls fsync:
// rotation, erasing and probes become GroupCommit jobs, and their results come back through
// `complete`.
//
// The buffer holds encoded frames that start at file offset `writeOffset` of the segment
// being filled. It is always an acknowledged prefix (library `.buffered` appends, answered
// before they are written) followed by unacknowledged records (everything else: the server
// answers only after the write, or after the fdatasync). So a failed write can always take
// back exactly the records nobody was told about, and no LSN handed out in an answer is ever
// reused for another payload. `breaks` marks where in the buffer a new segment must begin.
import CoreMetrics
import DequeModule
import Logging
import Synchronization

/// A batch of records, however the caller holds them, for the writer to encode. Sendable so
/// it may be handed into the writer's lock; the writer copies the bytes before returning.
protocol RecordBatch: Sendable {
    var count: Int { get }
    /// Calls `body` with each record's bytes, in order.
    func forEach(_ body: (UnsafeRawBufferPointer) -> Void)
}

/// What writes, syncs and refusals mean to a server on the event loop (see `WAL.attach`).
package enum WALEvent: Sendable {
    /// Every record through the LSN has been written to its segment (pwrite returned).
    case written(through: LSN)
    /// Every record through the LSN is durable (fdatasync returned).
    case durable(through: LSN)
    /// Records accepted under `epoch` with these LSNs will never be written: answer each with
    /// `error`. Their LSNs go to later records (accepted under a later epoch).
    case refused(epoch: UInt64, lsns: ClosedRange<LSN>, error: WALError)
    /// The log failed: nothing more becomes durable.
    case failed(WALError)
    /// Writing paused (a rotation, an erase): accepted records wait in the writer's buffer.
    case writingPaused
    /// A pause in writing ended and the records held meanwhile are written.
    case writable
    /// A job the loop started (`truncateOnLoop`) finished with the first LSN left.
    case job(token: UInt64, result: Result<LSN, WALError>)
}

/// Records accepted by the writer and not yet written. `epoch` tells them apart from later
/// records that reuse their LSNs if these are refused.
package struct Accepted: Sendable {
    package let first: LSN
    package let last: LSN
    package let epoch: UInt64
}

/// Continuations to resume once the writer's lock is released (resuming under a lock can
/// deadlock against a task's cancellation handler that waits for the same lock).
struct Effects: ~Copyable {
    var results: [(CheckedContinuation<LSN, any Error>, Result<LSN, any Error>)] = []
    var wakes: [CheckedContinuation<Void, Never>] = []

    mutating func resume(_ continuation: CheckedContinuation<LSN, any Error>, _ result: Result<LSN, any Error>) {
        results.append((continuation, result))
    }

    consuming func perform() {
        for (continuation, result) in results { continuation.resume(with: result) }
        for wake in wakes { wake.resume() }
    }
}

struct Writer: ~Copyable {
    /// Where a new segment must begin inside the buffer.
    struct Break {
        var offset: Int
        let firstLSN: LSN
    }

    /// Why writing is paused: a job on the sync thread owns the file.
    enum Pause: Equatable {
        case rotating
        case erasing
        case adopting
    }

    struct Waiter {
        /// The waiter is satisfied once this LSN is durable...
        let lsn: LSN
        /// ...unless records of this epoch at this LSN are refused first.
        let epoch: UInt64
        /// What it returns: a fixed LSN (an append's first), or the durable LSN when nil.
        let returns: LSN?
        let continuation: CheckedContinuation<LSN, any Error>
    }

    struct Watcher {
        let id: Int
        let lsn: LSN
        let continuation: CheckedContinuation<LSN, any Error>
    }

    /// Records taken back after a failed write, answered once the erase job made the zeros durable.
    struct Refusal {
        let epoch: UInt64
        let lsns: ClosedRange<LSN>
        let error: WALError
    }

    enum PendingJob {
        case seal(firstLSN: LSN, previousFirstLSN: LSN, oldEnd: Int)
        case erase(Refusal?)
        case probe(CheckedContinuation<LSN, any Error>)
        case adopt(logID: LogID, generation: UInt32, firstLSN: LSN, CheckedContinuation<LSN, any Error>)
        case truncate(firstLSN: LSN, CheckedContinuation<LSN, any Error>?)
    }

    var options: WALOptions
    let io: any FileIO
    let logger: Logger
    let catalog: SegmentCatalog
    let commit: GroupCommit
    let preparer: SegmentPreparer
    let durableCell: DurableLSN
    let directory: String

    var active: SegmentInfo
    /// How the segment being filled lays out its frames: v1 for a segment written before
    /// version 2, until the first rotation; every new segment is `.current`.
    var activeLayout: RecordFrame.Layout
    var activeHandle: IOHandle
    var activePath: String
    /// File offset (in the segment being filled) where `buffer[0]` goes.
    var writeOffset: Int
    var buffer: [UInt8] = []
    var breaks: Deque<Break> = []
    var nextLSN: LSN
    /// Highest LSN pwritten.
    var written: LSN
    /// Highest LSN known durable.
    var durable: LSN
    /// The acknowledged prefix of the buffer: records through `ackedThrough` (when above
    /// `written`), in its first `ackedBytes` bytes.
    var ackedThrough: LSN
    var ackedBytes = 0
    /// Highest LSN someone is waiting to see durable.
    var syncWanted: LSN
    /// Highest LSN written when a sync was last asked for: while it is above `durable`, a
    /// completion is on its way (a sync, or the failure that ends all waits).
    var syncAskedThrough: LSN = 0
    /// A library durable append left its records in the buffer because a sync was running;
    /// the next completion writes them, all at once (see `deferDurableWrite`).
    var deferredWrite = false
    var pause: Pause?
    var epoch: UInt64 = 0
    var failure: WALError?
    var isClosed = false
    /// Sizes of every segment but the one being filled, for retention.
    var closedSegmentBytes: [LSN: Int] = [:]
    /// The size of the segment file being filled (preallocated, or grown by writes past it).
    var activeFileSize: Int
    var nextToken: UInt64 = 1

    var waiters: Deque<Waiter> = []
    var jobs: [UInt64: PendingJob] = [:]
    var pauseWaiters: [CheckedContinuation<Void, Never>] = []
    var watchers: [Watcher] = []
    var nextWatcherID = 1
    var cancelledWatchers: Set<Int> = []
    /// Events for the attached loop, drained in order by `WAL.drainEvents`.
    var observing = false
    var events: [WALEvent] = []

    let appendedRecords = Counter(label: "wald_appended_records_total")
    let appendedBytes = Counter(label: "wald_appended_bytes_total")
    let segmentGauge = Gauge(label: "wald_segments")
    let diskBytesGauge = Gauge(label: "wald_disk_bytes")
    let failedGauge = Gauge(label: "wald_failed")

    init(options: WALOptions, recovered: RecoveredLog, activeHandle: IOHandle, catalog: SegmentCatalog,
         commit: GroupCommit, preparer: SegmentPreparer, durableCell: DurableLSN) {
        self.options = options
        io = options.io
        logger = options.logger
        directory = options.directory
        self.catalog = catalog
        self.commit = commit
        self.preparer = preparer
        self.durableCell = durableCell
        active = recovered.segments.last!
        activeLayout = recovered.lastLayout
        self.activeHandle = activeHandle
        activePath = joinPath(options.directory, active.name)
        writeOffset = recovered.endOffset
        activeFileSize = max((try? options.io.size(activeHandle, path: joinPath(options.directory, active.name))) ?? 0, recovered.endOffset)
        nextLSN = recovered.lastLSN + 1
        written = recovered.lastLSN
        durable = recovered.lastLSN
        ackedThrough = recovered.lastLSN
        syncWanted = recovered.lastLSN
        buffer.reserveCapacity(options.maxBufferBytes + 64 * 1024)
    }

    // MARK: Accepting

    func checkWritable() throws(WALError) {
        if isClosed { throw .closed }
        if let failure { throw failure }
    }

    /// Records past the acknowledged prefix that are not written yet.
    var hasUnacknowledged: Bool { nextLSN - 1 > max(ackedThrough, written) }

    /// Unwritten bytes held in memory.
    var backlogBytes: Int { buffer.count }

    /// Encodes `batch` after everything accepted so far; returns its first LSN. Checks every
    /// size first, so a refused batch leaves nothing behind. Adds a segment break before the
    /// batch when it would not fit in the segment being filled.
    /// `recordLimit` replaces `maxRecordBytes` (a follower stores whatever its upstream
    /// committed, whatever its own limit for clients).
    /// With `expectedLSN`, the batch must start at exactly that LSN (a conditional append:
    /// `.conflict` otherwise, and nothing is accepted).
    mutating func accept(_ batch: some RecordBatch, recordLimit: Int? = nil, expectedLSN: LSN? = nil) throws(WALError) -> LSN {
        try checkWritable()
        let count = batch.count
        guard count > 0 else { throw .emptyBatch }
        if let expectedLSN, expectedLSN != nextLSN { throw .conflict(expected: expectedLSN, next: nextLSN) }
        var payloadBytes = 0
        var tooLarge: Int?
        let limit = recordLimit ?? options.maxRecordBytes
        batch.forEach { record in
            if record.count > limit { tooLarge = tooLarge ?? record.count }
            payloadBytes += record.count
        }
        if let tooLarge { throw .recordTooLarge(size: tooLarge, limit: limit) }
        // The last LSN of the batch must leave room for `nextLSN` after it.
        guard UInt64(count) < LSN.max - nextLSN + 1 else {
            throw .exhausted(lastLSN: nextLSN - 1)
        }
        // Frames go into the segment being filled, or into a new one (always `.current`) once
        // a break is pending or this batch needs one.
        let filled: Int
        if let last = breaks.last {
            filled = SegmentHeader.size + (buffer.count - last.offset)
        } else {
            filled = writeOffset + buffer.count
        }
        var layout = breaks.isEmpty ? activeLayout : .current
        if filled + payloadBytes + count * layout.headerSize > options.maxSegmentBytes && filled > SegmentHeader.size {
            breaks.append(Break(offset: buffer.count, firstLSN: nextLSN))
            layout = .current
        }
        let first = nextLSN
        var lsn = first
        // Every frame carries the durable LSN of this moment (the commit point recovery reads).
        let committed = durable
        batch.forEach { record in
            RecordFrame.append(lsn: lsn, committed: committed, payload: record, to: &buffer, layout: layout)
            lsn += 1
        }
        nextLSN = lsn
        appendedRecords.increment(by: count)
        appendedBytes.increment(by: payloadBytes)
        return first
    }

    /// Accepts records that are answered only after they are written (or durable, with
    /// `durable`): the server's appends, and the library's durable ones.
    mutating func acceptUnacknowledged(_ batch: some RecordBatch, durable wantsSync: Bool,
                                       expectedLSN: LSN? = nil) throws(WALError) -> Accepted {
        let first = try accept(batch, expectedLSN: expectedLSN)
        let last = nextLSN - 1
        if wantsSync { syncWanted = max(syncWanted, last) }
        return Accepted(first: first, last: last, epoch: epoch)
    }

    /// Accepts a record a follower received from its upstream, which must carry the next LSN;
    /// it is wanted durable (the upstream waits for FEEDBACK). Throws `.outOfRange` for
    /// another LSN.
    mutating func acceptReplicated(lsn: LSN, _ batch: some RecordBatch) throws(WALError) {
        try checkWritable()
        guard lsn == nextLSN else { throw .outOfRange(lsn: lsn, first: nextLSN, last: nextLSN - 1) }
        _ = try accept(batch, recordLimit: Int(UInt32.max) - RecordFrame.headerSize)
        syncWanted = max(syncWanted, lsn)
    }

    /// Accepts records answered at once (the library's `.buffered`): they join the
    /// acknowledged prefix, so any unacknowledged records must be written first.
    mutating func acceptAcknowledged(_ batch: some RecordBatch, expectedLSN: LSN? = nil,
                                     _ fx: inout Effects) throws(WALError) -> LSN {
        if hasUnacknowledged { writeBuffer(&fx) }
        // The write either took them (or refused them), or a pause keeps them: callers wait
        // for a pause to end before coming here, so only a failed log (which accepts nothing) is left.
        if hasUnacknowledged { try checkWritable() }
        precondition(!hasUnacknowledged, "acknowledged records would land behind unacknowledged ones")
        let first = try accept(batch, expectedLSN: expectedLSN)
        ackedThrough = nextLSN - 1
        ackedBytes = buffer.count
        if buffer.count >= options.maxBufferBytes { writeBuffer(&fx) }
        return first
    }

    /// Registers a library waiter for `lsn` to become durable (resumed at once when it is).
    mutating func waitDurable(_ lsn: LSN, returns: LSN?, _ continuation: CheckedContinuation<LSN, any Error>,
                              _ fx: inout Effects) {
        if let failure {
            fx.resume(continuation, .failure(failure))
            return
        }
        if durable >= lsn {
            fx.resume(continuation, .success(returns ?? durable))
            return
        }
        if isClosed {
            fx.resume(continuation, .failure(WALError.closed))
            return
        }
        syncWanted = max(syncWanted, lsn)
        let waiter = Waiter(lsn: lsn, epoch: epoch, returns: returns, continuation: continuation)
        if let last = waiters.last, last.lsn > lsn {
            let index = waiters.firstIndex { $0.lsn > lsn }!
            waiters.insert(waiter, at: index)
        } else {
            waiters.append(waiter)
        }
    }

    // MARK: Writing

    /// pwrites the buffer up to the next segment break (starting the rotation there), and
    /// asks for a sync when someone waits for durability. Does nothing while paused.
    mutating func writeBuffer(_ fx: inout Effects) {
        guard pause == nil, failure == nil, !isClosed else { return }
        let end = breaks.first?.offset ?? buffer.count
        if end > 0 {
            let through = breaks.first.map { $0.firstLSN - 1 } ?? nextLSN - 1
            do {
                try buffer.withUnsafeBytes { bytes in
                    try io.write(activeHandle, UnsafeRawBufferPointer(rebasing: bytes[0..<end]), at: writeOffset, path: activePath)
                }
            } catch let error as IOError where error.isNoSpace {
                refuseAfterFailedWrite(of: end, error: .noSpace(path: activePath), &fx)
                return
            } catch {
                fail(.failed(reason: "write to \(activePath) failed: \(error)", cause: error as? IOError), &fx)
                return
            }
            writeOffset += end
            if writeOffset > activeFileSize {
                activeFileSize = writeOffset
                reportSize()
            }
            written = through
            consume(end)
            let sync = syncWanted > durable
            if sync { syncAskedThrough = written }
            commit.wrote(through: written, sync: sync)
            emit(.written(through: written))
        } else if syncWanted > durable && written > durable {
            syncAskedThrough = written
            commit.requestSync()
        }
        if let next = breaks.first, next.offset == 0 {
            breaks.removeFirst()
            startRotation(firstLSN: next.firstLSN)
        }
    }

    /// Drops the first `count` bytes of the buffer (written).
    private mutating func consume(_ count: Int) {
        if count == buffer.count {
            buffer.removeAll(keepingCapacity: true)
        } else {
            buffer.removeSubrange(0..<count)
        }
        for index in breaks.indices { breaks[index].offset -= count }
        ackedBytes = max(0, ackedBytes - count)
    }

    /// A write of `buffer[0..<end]` failed with ENOSPC: takes back every unacknowledged record
    /// (their LSNs go to later records) and keeps the acknowledged prefix to retry. Whatever
    /// of the taken-back records reached the file is zeroed and synced by a job before they
    /// are answered; unsynced, a power cut could keep the failed write without the zeroing.
    private mutating func refuseAfterFailedWrite(of end: Int, error: WALError, _ fx: inout Effects) {
        let keepBytes = ackedThrough > written ? ackedBytes : 0
        let firstRefused = max(ackedThrough, written) + 1
        logger.warning("write failed: no space; refusing the records not yet acknowledged", metadata: [
            "segment": "\(activePath)", "first_lsn": "\(firstRefused)", "last_lsn": "\(nextLSN - 1)",
        ])
        guard firstRefused <= nextLSN - 1 else { return }  // only acknowledged records: retried later
        let refusal = Refusal(epoch: epoch, lsns: firstRefused...(nextLSN - 1), error: error)
        // Only bytes inside the file can hold part of the write; zeroing past its end would grow it.
        let eraseStart = writeOffset + min(keepBytes, end)
        var eraseEnd = writeOffset + end
        if let size = try? io.size(activeHandle, path: activePath) { eraseEnd = min(eraseEnd, size) }
        buffer.removeSubrange(keepBytes...)
        breaks.removeAll { $0.offset >= keepBytes && (keepBytes > 0 || $0.offset > 0) }
        nextLSN = firstRefused
        epoch += 1
        if eraseEnd > eraseStart {
            startErase(eraseStart..<eraseEnd, refusal: refusal)
        } else {
            deliverRefusal(refusal, &fx)
        }
    }

    private mutating func deliverRefusal(_ refusal: Refusal, _ fx: inout Effects) {
        waiters.removeAll { waiter in
            guard waiter.epoch == refusal.epoch, refusal.lsns.contains(waiter.lsn) else { return false }
            fx.resume(waiter.continuation, .failure(refusal.error))
            return true
        }
        emit(.refused(epoch: refusal.epoch, lsns: refusal.lsns, error: refusal.error))
    }

    private mutating func token() -> UInt64 {
        defer { nextToken += 1 }
        return nextToken
    }

    /// Seals the segment being filled and installs the next, on the sync thread: fdatasync the
    /// old segment (so the next one never holds data while this one could still be torn), take
    /// the prepared file, write its header, fdatasync, rename, fsync the directory. Writing
    /// pauses until it is done; accepting does not.
    private mutating func startRotation(firstLSN: LSN) {
        let old = GroupCommit.Target(handle: activeHandle, path: activePath)
        let oldEnd = writeOffset
        closedSegmentBytes[active.firstLSN] = max(writeOffset, activeFileSize)
        pause = .rotating
        emit(.writingPaused)
        writeOffset = SegmentHeader.size
        let job = token()
        jobs[job] = .seal(firstLSN: firstLSN, previousFirstLSN: active.firstLSN, oldEnd: oldEnd)
        let through = written
        let previousFirstLSN = active.firstLSN
        let (io, options, commit, preparer, logID, generation) = (io, options, commit, preparer, catalog.logID, catalog.generation)
        commit.enqueue(token: job) {
            do {
                try commit.syncForJob(old)
            } catch {
                return GroupCommit.JobOutcome(
                    completion: .job(token: job, result: .failure(.failed(reason: "fdatasync of \(old.path) failed at rotation: \(error)", cause: error as? IOError))),
                    syncFailed: true)
            }
            let installed: Result<GroupCommit.Installed, WALError>
            switch Result(catching: { () throws(IOError) in try preparer.take() }) {
            case .failure(let error):
                installed = .failure(error.isNoSpace ? .noSpace(path: error.path) : .io(error))
            case .success(let prepared):
                do {
                    let name = try Recovery.install(io: io, options: options, handle: prepared.handle, tempPath: prepared.path,
                                                    logID: logID, generation: generation, firstLSN: firstLSN,
                                                    previousFirstLSN: previousFirstLSN)
                    let path = joinPath(options.directory, name)
                    installed = .success(.init(handle: prepared.handle, path: path, name: name))
                } catch let error as IOError where error.isNoSpace && error.path == prepared.path {
                    // Still the temp file (its header or that header's fdatasync): the log is
                    // untouched, so this is ENOSPC for the records waiting, not a failed log.
                    io.close(prepared.handle)
                    try? io.remove(prepared.path)
                    installed = .failure(.noSpace(path: prepared.path))
                } catch {
                    io.close(prepared.handle)
                    return GroupCommit.JobOutcome(
                        completion: .job(token: job, result: .failure(.failed(reason: "installing segment for LSN \(firstLSN) failed: \(error)", cause: error as? IOError))),
                        syncedThrough: through, syncFailed: true)
                }
            }
            if case .success(let segment) = installed {
                commit.switchTarget(to: .init(handle: segment.handle, path: segment.path))
                io.close(old.handle)
            }
            return GroupCommit.JobOutcome(completion: .job(token: job, result: .success(.sealed(through: through, installed: installed))),
                                          syncedThrough: through)
        }
    }

    private mutating func startErase(_ range: Range<Int>, refusal: Refusal?) {
        pause = .erasing
        emit(.writingPaused)
        let job = token()
        jobs[job] = .erase(refusal)
        let target = GroupCommit.Target(handle: activeHandle, path: activePath)
        let (io, commit, through) = (io, commit, written)
        commit.enqueue(token: job) {
            do {
                try Recovery.zeroFill(io: io, handle: target.handle, path: target.path, from: range.lowerBound, to: range.upperBound)
                try commit.syncForJob(target)
            } catch {
                return GroupCommit.JobOutcome(
                    completion: .job(token: job, result: .failure(.failed(reason: "could not erase a failed append from \(target.path): \(error)", cause: error as? IOError))),
                    syncFailed: true)
            }
            return GroupCommit.JobOutcome(completion: .job(token: job, result: .success(.synced(through: through))),
                                          syncedThrough: through)
        }
    }

    /// Queues an fdatasync even when nothing new was written (the watchdog's proof that the
    /// sync path works); the continuation gets the durable LSN.
    mutating func probe(_ continuation: CheckedContinuation<LSN, any Error>, _ fx: inout Effects) {
        do { try checkWritable() } catch {
            fx.resume(continuation, .failure(error))
            return
        }
        writeBuffer(&fx)
        let job = token()
        jobs[job] = .probe(continuation)
        let commit = self.commit
        let accepted = commit.enqueue(token: job) {
            let (target, through) = commit.syncPoint
            do { try commit.syncForJob(target) } catch {
                return GroupCommit.JobOutcome(
                    completion: .job(token: job, result: .failure(.failed(reason: "fdatasync of \(target.path) failed: \(error)", cause: error as? IOError))),
                    syncFailed: true)
            }
            return GroupCommit.JobOutcome(completion: .job(token: job, result: .success(.synced(through: through))),
                                          syncedThrough: through)
        }
        if !accepted {
            jobs[job] = nil
            fx.resume(continuation, .failure(WALError.closed))
        }
    }

    // MARK: Completions

    mutating func complete(_ completion: GroupCommit.Completion, _ fx: inout Effects) {
        switch completion {
        case .synced(let through):
            markDurable(through, &fx)
        case .syncFailed(let error):
            fail(error, &fx)
        case .job(let token, let result):
            if let job = jobs.removeValue(forKey: token) { completeJob(token, job, result, &fx) }
        }
        if deferredWrite {
            // On the sync thread (no loop attached): what arrived during the sync goes out in
            // one pwrite, and the thread's next sync covers it.
            deferredWrite = false
            writeBuffer(&fx)
        }
    }

    /// A library durable append (no loop attached) whose records were just accepted: pwrite
    /// them now when no sync is running, else leave them for the sync's completion, which
    /// writes everything that arrived meanwhile at once. Many concurrent callers then cost one
    /// pwrite per sync instead of one each, and a sync covers all of them (the leader's write
    /// in PostgreSQL's and LevelDB's group commit). The loop has its own once-per-turn write.
    mutating func deferDurableWrite(_ fx: inout Effects) {
        if syncAskedThrough > durable && failure == nil && buffer.count < options.maxBufferBytes {
            deferredWrite = true
        } else {
            writeBuffer(&fx)
        }
    }

    private mutating func completeJob(_ token: UInt64, _ job: PendingJob, _ result: Result<GroupCommit.JobResult, WALError>, _ fx: inout Effects) {
        if case .success(.synced(let through)) = result { markDurable(through, &fx) }
        if case .success(.sealed(let through, _)) = result { markDurable(through, &fx) }
        switch job {
        case .seal(let firstLSN, _, let oldEnd):
            guard case .success(.sealed(_, let installed)) = result else {
                if case .failure(let error) = result { fail(error, &fx) }
                return
            }
            pause = nil
            switch installed {
            case .success(let segment):
                active = SegmentInfo(firstLSN: firstLSN, name: segment.name)
                activeLayout = .current
                activeHandle = segment.handle
                activePath = segment.path
                activeFileSize = max((try? io.size(segment.handle, path: segment.path)) ?? 0, SegmentHeader.size)
                catalog.append(active)
                logger.debug("rotated segment", metadata: ["segment": "\(segment.name)"])
                preparer.start()
                applyRetention(truncateBefore: nil, notify: nil)
                reportSize()
            case .failure(let error):
                logger.error("cannot start the next segment", metadata: ["error": "\(error)"])
                // Back to the full segment's end; the break is tried again on the next write.
                writeOffset = oldEnd
                activeFileSize = closedSegmentBytes[active.firstLSN] ?? activeFileSize
                closedSegmentBytes[active.firstLSN] = nil
                let firstRefused = max(ackedThrough, written) + 1
                if firstRefused <= nextLSN - 1 {
                    let refusal = Refusal(epoch: epoch, lsns: firstRefused...(nextLSN - 1), error: error)
                    let keepBytes = ackedThrough > written ? ackedBytes : 0
                    buffer.removeSubrange(keepBytes...)
                    breaks.removeAll { $0.offset >= keepBytes && $0.offset > 0 }
                    nextLSN = firstRefused
                    epoch += 1
                    deliverRefusal(refusal, &fx)
                }
                if !buffer.isEmpty { breaks.insert(Break(offset: 0, firstLSN: written + 1), at: 0) }
                // No retry from here: with the disk still full it would loop on the sync thread.
                // The next write (an append, the flush timer) tries the rotation again.
                resumeWriting(&fx, write: false)
                return
            }
            resumeWriting(&fx)
        case .erase(let refusal):
            guard case .success = result else {
                if case .failure(let error) = result { fail(error, &fx) }
                return
            }
            pause = nil
            if let refusal { deliverRefusal(refusal, &fx) }
            resumeWriting(&fx)
        case .probe(let continuation):
            switch result {
            case .success: fx.resume(continuation, .success(durable))
            case .failure(let error):
                fx.resume(continuation, .failure(error))
                fail(error, &fx)
            }
        case .adopt(let logID, let generation, let firstLSN, let continuation):
            switch result {
            case .success(.adopted(let segment)):
                adopt(logID: logID, generation: generation, firstLSN: firstLSN, segment: segment)
                fx.resume(continuation, .success(firstLSN))
            case .success:
                fx.resume(continuation, .failure(WALError.closed))
            case .failure(let error):
                fx.resume(continuation, .failure(error))
            }
            pause = nil
            resumeWriting(&fx)
        case .truncate(let firstLSN, let continuation):
            let outcome = result.map { _ in firstLSN }
            if let continuation {
                fx.resume(continuation, outcome.mapError { $0 as any Error })
            } else {
                emit(.job(token: token, result: outcome))
            }
        }
    }

    /// After a pause: wake library appends that waited, tell the loop, write what piled up.
    private mutating func resumeWriting(_ fx: inout Effects, write: Bool = true) {
        fx.wakes.append(contentsOf: pauseWaiters)
        pauseWaiters.removeAll()
        emit(.writable)
        if write { writeBuffer(&fx) }
    }

    private mutating func adopt(logID: LogID, generation: UInt32, firstLSN: LSN, segment: GroupCommit.Installed) {
        active = SegmentInfo(firstLSN: firstLSN, name: segment.name)
        activeLayout = .current
        activeHandle = segment.handle
        activePath = segment.path
        writeOffset = SegmentHeader.size
        activeFileSize = max((try? io.size(segment.handle, path: segment.path)) ?? 0, SegmentHeader.size)
        nextLSN = firstLSN
        written = firstLSN - 1
        durable = firstLSN - 1
        ackedThrough = firstLSN - 1
        syncWanted = firstLSN - 1
        syncAskedThrough = firstLSN - 1
        durableCell.store(durable)
        closedSegmentBytes = [:]
        catalog.reset(logID: logID, generation: generation, segments: [active])
        logger.notice("adopted log identity", metadata: [
            "log_id": "\(logID)", "generation": "\(generation)", "first_lsn": "\(firstLSN)",
        ])
        reportSize()
    }

    mutating func markDurable(_ lsn: LSN, _ fx: inout Effects) {
        guard lsn > durable else { return }
        durable = lsn
        durableCell.store(lsn)
        while let first = waiters.first, first.lsn <= lsn {
            let waiter = waiters.removeFirst()
            fx.resume(waiter.continuation, .success(waiter.returns ?? lsn))
        }
        if !watchers.isEmpty {
            watchers.removeAll { watcher in
                guard watcher.lsn < lsn else { return false }
                fx.resume(watcher.continuation, .success(lsn))
                return true
            }
        }
        emit(.durable(through: lsn))
    }

    /// Enters the failed state: every waiter and every later call fails with `error`.
    mutating func fail(_ error: WALError, _ fx: inout Effects) {
        guard failure == nil else { return }
        let (reason, cause): (String, IOError?) = switch error {
        case .failed(let reason, let cause): (reason, cause)
        case .io(let cause): (error.description, cause)
        default: (error.description, nil)
        }
        logger.critical("WAL entered its failed state", metadata: ["reason": "\(reason)"])
        let failed = WALError.failed(reason: reason, cause: cause)
        failure = failed
        failedGauge.record(1)
        failAll(with: failed, &fx)
        emit(.failed(failed))
    }

    /// Fails everything waiting (at close or on failure).
    mutating func failAll(with error: WALError, _ fx: inout Effects) {
        for waiter in waiters { fx.resume(waiter.continuation, .failure(error)) }
        waiters.removeAll()
        for watcher in watchers { fx.resume(watcher.continuation, .failure(error)) }
        watchers.removeAll()
        // Seals and erases stay: their completions still arrive and end the pause.
        for (token, job) in jobs {
            switch job {
            case .probe(let c), .adopt(_, _, _, let c), .truncate(_, let c?):
                fx.resume(c, .failure(error))
                jobs[token] = nil
            case .truncate(_, nil):
                emit(.job(token: token, result: .failure(error)))
                jobs[token] = nil
            case .seal, .erase:
                break
            }
        }
        fx.wakes.append(contentsOf: pauseWaiters)
        pauseWaiters.removeAll()
    }

    mutating func emit(_ event: WALEvent) {
        if observing { events.append(event) }
    }

    // MARK: Retention

    /// Deletes old segments per maxSegments, retentionBytes and an explicit truncation point,
    /// never the segment being filled and never one a hold protects. The catalog forgets them
    /// at once; the files are unlinked and the directory fsynced on the housekeeping queue,
    /// after which `notify` (a job token) completes. Returns whether anything is deleted.
    @discardableResult
    mutating func applyRetention(truncateBefore: LSN?, notify: UInt64?) -> Bool {
        let segments = catalog.segments
        let plan = Retention.segmentsToDelete(
            segments: segments, sizes: closedSegmentBytes, activeBytes: writeOffset,
            maxSegments: options.maxSegments, retentionBytes: options.retentionBytes,
            truncateBefore: truncateBefore, lowestHold: catalog.lowestHold)
        guard plan > 0 else { return false }
        catalog.removeFirst(plan)
        let doomed = segments.prefix(plan).map { joinPath(directory, $0.name) }
        for segment in segments.prefix(plan) { closedSegmentBytes[segment.firstLSN] = nil }
        reportSize()
        housekeeping?(doomed, notify)
        return true
    }

    /// Runs file deletions off the writer (set by WAL).
    var housekeeping: (([String], UInt64?) -> Void)?

    /// Updates the segment-count and bytes-on-disk gauges; called whenever either changes
    /// (rotation, retention, a write that grows the file), so they are always current.
    func reportSize() {
        segmentGauge.record(catalog.segments.count)
        diskBytesGauge.record(onDiskBytes)
    }

    /// The sizes of the segment files (what they take on disk, preallocated space included):
    /// INFO's `bytes`, `walctl verify`'s and the `wald_disk_bytes` gauge mean the same.
    var onDiskBytes: Int { closedSegmentBytes.values.reduce(0, +) + activeFileSize }
}

/// The durable LSN, readable from any thread without the writer's lock (readers use it to
/// know how far they may read).
final class DurableLSN: Sendable {
    private let value: Atomic<UInt64>

    init(_ lsn: LSN) { value = Atomic(lsn) }

    var lsn: LSN { value.load(ordering: .acquiring) }

    func store(_ lsn: LSN) { value.store(lsn, ordering: .releasing) }
}
