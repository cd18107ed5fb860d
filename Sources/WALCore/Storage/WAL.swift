// The log: one writer (Writer.swift, behind a mutex) and one sync thread (GroupCommit.swift).
// Whoever calls in enters the writer on its own thread — the server's event loop, or a
// library caller's task — encodes and pwrites there, and leaves the fdatasync to the sync
// thread. Nothing hops to another executor to append: a Swift actor would make every library
// call a thread switch once its executor is the server's Dispatch queue (measured on this
// machine: 16.9 µs per call against 36 ns for a default actor; docs/architecture.md).
//
// Results of the sync thread (durable LSNs, installed segments, erased writes) come back
// through `handle`: on the server's event loop once a loop is attached (`attach`), otherwise
// inline on the sync thread. Library callers wait on continuations; the loop gets `WALEvent`s.
import CoreMetrics
import Dispatch
import DequeModule
import Logging
import Synchronization
import WALSync

/// A segmented, checksummed write-ahead log in one directory.
///
/// ```swift
/// let wal = try await WAL.open(WALOptions(directory: "data"))
/// let lsn = try await wal.append(Array("hello".utf8))          // durable: fsynced on return
/// let reader = try wal.reader(from: 1)
/// while let record = try reader.next() { print(record.lsn, record.payload) }
/// try await wal.close()
/// ```
public final class WAL: Sendable {
    /// The identity shared by every segment of this log.
    public var logID: LogID { catalog.logID }
    /// The log's generation (docs/format.md, "Generations"): 0 until a repair cut records.
    public var generation: UInt32 { catalog.generation }
    let catalog: SegmentCatalog
    let commit: GroupCommit
    let durableCell: DurableLSN
    private let io: any FileIO
    private let logger: Logger
    private let lock: IOHandle
    private let preparer: SegmentPreparer
    private let directory: String
    private let state: WALMutex<Writer>
    private let delivery = WALMutex<Delivery?>(nil)
    private let timer = WALMutex<FlushTimer?>(nil)
    private let housekeeping = DispatchQueue(label: "wald.wal.housekeeping")
    private let damageLog: DamageLog
    private let scrubber: Scrubber
    /// Marks an attached loop's queue with its WAL's `loopID`, so calls made on it deliver
    /// events at once (and tests can tell whether code runs on a loop).
    private static let loopKey = DispatchSpecificKey<UInt64>()
    private static let nextLoopID = Atomic<UInt64>(1)
    private let loopID = WAL.nextLoopID.wrappingAdd(1, ordering: .relaxed).oldValue

    /// Whether the calling code runs on the event loop of some WAL (`attach`). Tests use it to
    /// prove that no fsync runs on a loop.
    package static var isOnAnEventLoop: Bool { DispatchQueue.getSpecific(key: loopKey) != nil }

    private struct Delivery {
        let queue: DispatchQueue
        let observer: @Sendable (WALEvent) -> Void
        var draining = false
        var drainScheduled = false
    }

    private struct FlushTimer: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated; only created, resumed
        // and cancelled under the `timer` lock.
        let source: any DispatchSourceTimer
    }

    // MARK: Opening and closing

    /// Opens (creating if needed) the log in `options.directory`: takes the directory lock,
    /// recovers, and starts the flush timer. Fails with `.locked` if another process has it
    /// open, and with `.corruption` on damage other than a torn tail (unless `options.repair`).
    public static func open(_ options: WALOptions) async throws -> WAL {
        try options.validate()
        let io = options.io
        try wrapIO { try io.createDirectory(options.directory) }
        if !options.repair { try wrapIO { try Recovery.requireLogOrEmptyDirectory(io: io, options: options) } }
        let lockPath = joinPath(options.directory, "LOCK")
        let lock: IOHandle
        do {
            lock = try io.lock(lockPath)
        } catch let error as IOError where error.isWouldBlock || error.operation == "flock" {
            throw WALError.locked(directory: options.directory)
        } catch let error as IOError {
            throw WALError.io(error)
        }
        do {
            let recovered = try wrapIO { try Recovery.recover(options, logger: options.logger) }
            let wal = try WAL(options: options, recovered: recovered, lock: lock)
            wal.installHousekeeping()
            wal.startFlushTimer()
            wal.scrubber.schedule(first: true)
            return wal
        } catch {
            io.unlock(lock)
            throw error
        }
    }

    private init(options: WALOptions, recovered: RecoveredLog, lock: IOHandle) throws {
        io = options.io
        logger = options.logger
        directory = options.directory
        self.lock = lock
        let catalog = SegmentCatalog(logID: recovered.logID, generation: recovered.generation, segments: recovered.segments)
        self.catalog = catalog
        damageLog = DamageLog(logger: options.logger)
        scrubber = Scrubber(options: options, catalog: catalog, damage: damageLog)
        let last = recovered.segments.last!
        let activePath = joinPath(options.directory, last.name)
        let handle = try wrapIO { try options.io.open(activePath, mode: .readWrite) }
        let durableCell = DurableLSN(recovered.lastLSN)
        self.durableCell = durableCell
        // Completions are routed to `handle` once `self` exists (below); nothing is synced before.
        let commit = GroupCommit(io: io, target: .init(handle: handle, path: activePath), durable: recovered.lastLSN,
                                 logger: options.logger, slowSyncThreshold: options.slowSyncThreshold,
                                 deliver: { _ in })
        self.commit = commit
        let preparer = SegmentPreparer(io: io, path: joinPath(options.directory, options.segmentPrefix + "prepared.tmp"),
                                       size: options.preallocate ? options.maxSegmentBytes : 0)
        self.preparer = preparer
        var writer = Writer(options: options, recovered: recovered, activeHandle: handle, catalog: catalog,
                            commit: commit, preparer: preparer, durableCell: durableCell)
        for segment in recovered.segments.dropLast() {
            let path = joinPath(options.directory, segment.name)
            if let file = try? io.open(path, mode: .readOnly) {
                writer.closedSegmentBytes[segment.firstLSN] = (try? io.size(file, path: path)) ?? 0
                io.close(file)
            }
        }
        state = WALMutex(writer)
        // Strong references to `self` here and in the timer and housekeeping closures: a weak
        // one gives the object a side table, and every retain and release of it then takes
        // the runtime's slow path (seen at 11 % of the loop's CPU). `close()` breaks the cycles.
        commit.setDelivery { [self] completion in deliverCompletion(completion) }
        state.withLock { $0.reportSize() }
        logger.info("opened log", metadata: [
            "directory": "\(options.directory)", "log_id": "\(recovered.logID)", "generation": "\(recovered.generation)",
            "first_lsn": "\(recovered.segments.first!.firstLSN)", "last_lsn": "\(recovered.lastLSN)",
            "segments": "\(recovered.segments.count)",
        ])
        preparer.start()
    }

    /// Segment files dropped by retention are unlinked, and the directory fsynced, on the
    /// housekeeping queue; a truncation waiting for that gets its job completed.
    private func installHousekeeping() {
        let (housekeeping, io, logger, directory) = (self.housekeeping, self.io, self.logger, self.directory)
        state.withLock { w in
            w.housekeeping = { [self] paths, token in
                housekeeping.async { [self] in
                    var deleted = 0
                    // Oldest first, so a crash midway still leaves a contiguous suffix of the log.
                    for path in paths {
                        do {
                            try io.remove(path)
                            deleted += 1
                        } catch {
                            logger.error("could not delete segment", metadata: ["segment": "\(path)", "error": "\(error)"])
                        }
                    }
                    var result: Result<GroupCommit.JobResult, WALError> = .success(.done)
                    do { try io.syncDirectory(directory) } catch {
                        logger.error("directory fsync after retention failed", metadata: ["error": "\(error)"])
                        result = .failure(.io(error as? IOError ?? IOError("fsync", path: directory, errno: 0)))
                    }
                    logger.info("deleted old segments", metadata: ["count": "\(deleted)"])
                    if let token { deliverCompletion(.job(token: token, result: result)) }
                }
            }
        }
    }

    /// Writes and fdatasyncs everything accepted, stops background work and releases the
    /// directory lock. Later calls fail with `.closed`.
    public func close() async throws {
        guard !state.withLock({ $0.isClosed }) else { return }
        var firstError: (any Error)?
        do { _ = try await sync() } catch { firstError = error }
        var fx = Effects()
        let (handle, wasFailed, lastLSN, everythingDurable) = state.withLock { w -> (IOHandle, Bool, LSN, Bool) in
            w.isClosed = true
            w.failAll(with: .closed, &fx)
            return (w.activeHandle, w.failure != nil, w.nextLSN - 1, w.durable == w.nextLSN - 1 && w.buffer.isEmpty)
        }
        fx.perform()
        timer.withLock { t in
            t?.source.cancel()
            t = nil
        }
        commit.stop()
        scrubber.stop()
        // Break the reference cycles through the sync thread's delivery, the loop's observer
        // and the housekeeping closure (see init).
        commit.setDelivery { _ in }
        delivery.withLock { $0 = nil }
        state.withLock { $0.housekeeping = nil }
        // Unlinks still queued finish before the lock is released: another process (or a
        // reopen) must not list a segment that is about to vanish under it.
        housekeeping.sync {}
        preparer.discard()
        io.close(handle)
        // Synced whole: say so, so that the next open treats any damage as corruption.
        if firstError == nil && !wasFailed && everythingDurable {
            do {
                try CleanMarker(logID: logID, lastLSN: lastLSN).write(io: io, directory: directory)
            } catch {
                logger.warning("could not write the clean-shutdown marker; the next open treats this stop as a crash",
                               metadata: ["error": "\(error)"])
            }
        }
        io.unlock(lock)
        if let firstError, !wasFailed { throw firstError }
    }

    // MARK: Appending (library callers)

    /// Appends one record; returns its LSN. Durable: returns after an fdatasync covers it.
    /// Buffered: returns once accepted; it is written at the next flush interval (or when the
    /// buffer fills) and durable after that interval's fdatasync. Throws `WALError`.
    @discardableResult
    public func append(_ record: [UInt8], durability: Durability = .durable) async throws -> LSN {
        // Not generic, so a caller in another module runs specialised code.
        try await append(OneRecord(payload: record), durability: durability)
    }

    /// Appends one record; returns its LSN.
    @discardableResult
    public func append(_ record: some RecordPayload, durability: Durability = .durable) async throws -> LSN {
        try await append(OneRecord(payload: record), durability: durability)
    }

    /// Appends records as one batch with consecutive LSNs; returns the first. The batch
    /// is never split across segments, and recovery can only cut it at a record boundary.
    /// When it throws, no record of the batch is in the log.
    @discardableResult
    public func append<Records: Collection & Sendable>(
        contentsOf records: Records, durability: Durability = .durable
    ) async throws -> LSN where Records.Element: RecordPayload {
        try await append(PayloadCollection(records: records), durability: durability)
    }

    /// A conditional append: the batch is appended only if its first record gets `expectedLSN`
    /// (the log's next LSN); otherwise it throws `.conflict(expected:next:)` and writes nothing.
    /// A client that does not know whether an earlier attempt landed (a timeout, NO_SPACE, a
    /// failed fsync) retries with the same `expectedLSN` and can never append it twice.
    @discardableResult
    public func append<Records: Collection & Sendable>(
        contentsOf records: Records, durability: Durability = .durable, expectedLSN: LSN
    ) async throws -> LSN where Records.Element: RecordPayload {
        try await append(PayloadCollection(records: records), durability: durability, expectedLSN: expectedLSN)
    }

    private func append(_ batch: some RecordBatch, durability: Durability, expectedLSN: LSN? = nil) async throws -> LSN {
        if durability == .buffered {
            while true {
                var fx = Effects()
                let outcome = state.withLock { w -> Result<LSN?, WALError> in
                    // Durable records left for a running sync's completion (deferDurableWrite)
                    // go out first; a segment break among them starts a pause, waited out below.
                    if w.hasUnacknowledged && w.pause == nil { w.writeBuffer(&fx) }
                    // Acknowledged records must not land behind unacknowledged ones that a
                    // pause keeps unwritten, and a pause (a rotation waiting for its seal)
                    // must not let the buffer grow without bound: wait for it to end.
                    if w.pause != nil && w.failure == nil && !w.isClosed
                        && (w.hasUnacknowledged || w.buffer.count >= 4 * max(w.options.maxBufferBytes, 1 << 20)) {
                        return .success(nil)
                    }
                    return Result { () throws(WALError) in try w.acceptAcknowledged(batch, expectedLSN: expectedLSN, &fx) }
                }
                fx.perform()
                drainEvents()
                switch outcome {
                case .success(let lsn?): return lsn
                case .success(nil): await waitForPauseToEnd()
                case .failure(let error): throw error
                }
            }
        }
        return try await withWriterContinuation { continuation in
            var fx = Effects()
            state.withLock { w in
                do {
                    let accepted = try w.acceptUnacknowledged(batch, durable: true, expectedLSN: expectedLSN)
                    w.waitDurable(accepted.last, returns: accepted.first, continuation, &fx)
                    w.deferDurableWrite(&fx)
                } catch {
                    fx.resume(continuation, .failure(error))
                }
            }
            fx.perform()
            drainEvents()
        }
    }

    /// `withCheckedThrowingContinuation` for a call the writer completes (under `state`'s lock,
    /// resuming once the lock is released). In the ThreadSanitizer build (`-DWALD_TSAN`) the
    /// caller then passes through that lock once: when the writer resumes a continuation before its
    /// task has suspended, the Swift runtime lets the task continue inline without telling TSan
    /// (its resume-before-await path has no `_swift_tsan_release`/`_acquire`, unlike the enqueue
    /// path), so TSan saw no order between an error built under the lock (`Writer.fail`'s boxed
    /// `.failed`) and the caller reading it, and reported a race the runtime's atomics rule out.
    /// The lock pass shows TSan that order. Other builds: the plain continuation.
    private func withWriterContinuation<T>(_ body: (CheckedContinuation<T, any Error>) -> Void) async throws -> T {
        #if WALD_TSAN
        defer { state.withLock { _ in } }
        #endif
        return try await withCheckedThrowingContinuation(body)
    }

    private func waitForPauseToEnd() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { w -> Bool in
                if w.pause == nil || w.failure != nil || w.isClosed { return true }
                w.pauseWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Writes buffered records and waits until everything appended so far is durable.
    /// Returns the durable LSN.
    @discardableResult
    public func sync() async throws -> LSN {
        try await withWriterContinuation { continuation in
            var fx = Effects()
            state.withLock { w in
                do {
                    try w.checkWritable()
                    w.waitDurable(w.nextLSN - 1, returns: nil, continuation, &fx)
                    w.writeBuffer(&fx)
                } catch {
                    fx.resume(continuation, .failure(error))
                }
            }
            fx.perform()
            drainEvents()
        }
    }

    /// Waits until `lsn` is durable, writing buffered records first when they are not yet
    /// written. Returns the durable LSN. Throws `.outOfRange` for an LSN not yet appended.
    @discardableResult
    public func waitDurable(_ lsn: LSN) async throws -> LSN {
        if durableCell.lsn >= lsn { return durableCell.lsn }
        return try await withWriterContinuation { continuation in
            var fx = Effects()
            state.withLock { w in
                do {
                    try w.checkWritable()
                    guard lsn < w.nextLSN else {
                        throw WALError.outOfRange(lsn: lsn, first: catalog.firstLSN, last: w.nextLSN - 1)
                    }
                    w.waitDurable(lsn, returns: nil, continuation, &fx)
                    w.writeBuffer(&fx)
                } catch {
                    fx.resume(continuation, .failure(error))
                }
            }
            fx.perform()
            drainEvents()
        }
    }

    /// An fdatasync on the sync thread even when nothing new was written: proves the writer
    /// and the sync path both work (the service watchdog uses it). Returns the durable LSN.
    public func probe() async throws -> LSN {
        try await withWriterContinuation { continuation in
            var fx = Effects()
            state.withLock { w in w.probe(continuation, &fx) }
            fx.perform()
            drainEvents()
        }
    }

    // MARK: The event loop (the server)

    /// Delivers the sync thread's results, the flush timer and `WALEvent`s on `queue` from now
    /// on. The server calls this once, before serving; `observer` runs on `queue`, in order.
    package func attach(queue: DispatchQueue, observer: @escaping @Sendable (WALEvent) -> Void) {
        queue.setSpecific(key: Self.loopKey, value: loopID)
        delivery.withLock { $0 = Delivery(queue: queue, observer: observer) }
        state.withLock { $0.observing = true }
        startFlushTimer()
    }

    /// On the loop: accepts records answered only once written (`durable` false) or durable.
    /// Nothing is written until `flushOnLoop`. Throws `WALError` and then accepts nothing.
    /// With `expectedLSN`, only if the batch starts there (`.conflict` otherwise).
    package func acceptOnLoop(_ records: LengthPrefixedRecords, durable: Bool, expectedLSN: LSN? = nil) throws(WALError) -> Accepted {
        try state.withLock { w throws(WALError) in
            try w.acceptUnacknowledged(records, durable: durable, expectedLSN: expectedLSN)
        }
    }

    /// On the loop: accepts one record (see `acceptOnLoop(_:durable:expectedLSN:)`).
    package func acceptOnLoop(payload: UnsafeRawBufferPointer, durable: Bool, expectedLSN: LSN? = nil) throws(WALError) -> Accepted {
        try state.withLock { w throws(WALError) in
            try w.acceptUnacknowledged(OneRawRecord(bytes: payload), durable: durable, expectedLSN: expectedLSN)
        }
    }

    /// The LSN the next record will get.
    package var nextLSN: LSN { state.withLock { $0.nextLSN } }

    /// On the loop: a record a follower received from its upstream, under the upstream's LSN
    /// (which must be the next one: `.outOfRange` otherwise), whatever its size; written at
    /// `flushOnLoop` and wanted durable.
    package func acceptReplicatedOnLoop(lsn: LSN, payload: UnsafeRawBufferPointer) throws(WALError) {
        try state.withLock { w throws(WALError) in try w.acceptReplicated(lsn: lsn, OneRawRecord(bytes: payload)) }
    }

    /// On the loop: the LSN a SYNC request waits for (everything accepted so far), marked as
    /// wanted durable; `flushOnLoop` then writes and asks for the sync.
    package func syncTargetOnLoop() throws(WALError) -> LSN {
        try state.withLock { w throws(WALError) in
            try w.checkWritable()
            w.syncWanted = max(w.syncWanted, w.nextLSN - 1)
            return w.nextLSN - 1
        }
    }

    /// On the loop, once per turn: writes everything accepted and asks for a sync when anyone
    /// waits for durability; delivers the resulting events before returning.
    package func flushOnLoop() {
        var fx = Effects()
        state.withLock { w in w.writeBuffer(&fx) }
        fx.perform()
        drainEvents()
    }

    /// The current epoch: records accepted from now on are refused (if ever) under it.
    package var epochOnLoop: UInt64 { state.withLock { $0.epoch } }

    /// Unwritten bytes held by the writer (grows while a rotation or erase pauses writing).
    package var backlogBytes: Int { state.withLock { $0.backlogBytes } }

    /// On the loop: drops whole segments below `lsn` (see `truncate(before:)`). Returns the
    /// first LSN left and, when files are being deleted, the token of the `.job` event that
    /// says they are gone.
    package func truncateOnLoop(before lsn: LSN) throws(WALError) -> (firstLSN: LSN, token: UInt64?) {
        try state.withLock { w throws(WALError) in
            try w.checkWritable()
            guard lsn <= w.durable + 1 else { throw .outOfRange(lsn: lsn, first: catalog.firstLSN, last: w.durable) }
            let job = w.nextToken
            w.nextToken += 1
            guard w.applyRetention(truncateBefore: lsn, notify: job) else { return (catalog.firstLSN, nil) }
            w.jobs[job] = .truncate(firstLSN: catalog.firstLSN, nil)
            return (catalog.firstLSN, job)
        }
    }

    /// A sync-thread or housekeeping result: applied under the writer's lock, on the loop
    /// when one is attached (one `async`), else right here.
    private func deliverCompletion(_ completion: GroupCommit.Completion) {
        if let queue = delivery.withLock({ $0?.queue }) {
            queue.async { [self] in handle(completion) }
        } else {
            handle(completion)
        }
    }

    private func handle(_ completion: GroupCommit.Completion) {
        var fx = Effects()
        state.withLock { w in w.complete(completion, &fx) }
        fx.perform()
        drainEvents()
    }

    /// Hands queued events to the loop's observer, in order: at once when running on the loop
    /// (not re-entrantly: an observer that calls back in leaves its events to the outer
    /// drain), otherwise by one `async` to it.
    private func drainEvents() {
        guard let queue = delivery.withLock({ $0?.queue }) else { return }
        guard DispatchQueue.getSpecific(key: Self.loopKey) == loopID else {
            let schedule = delivery.withLock { d -> Bool in
                guard d != nil, !d!.drainScheduled else { return false }
                d!.drainScheduled = true
                return true
            }
            if schedule {
                queue.async { [self] in
                    delivery.withLock { $0?.drainScheduled = false }
                    drainEvents()
                }
            }
            return
        }
        guard let observer = delivery.withLock({ d -> (@Sendable (WALEvent) -> Void)? in
            guard d != nil, !d!.draining else { return nil }
            d!.draining = true
            return d!.observer
        }) else { return }
        defer { delivery.withLock { $0?.draining = false } }
        while true {
            let events = state.withLock { w -> [WALEvent] in
                defer { w.events.removeAll(keepingCapacity: true) }
                return w.events
            }
            if events.isEmpty { return }
            for event in events { observer(event) }
        }
    }

    // MARK: Retention

    /// Drops every whole segment whose records are all below `lsn` (a checkpoint), except the
    /// active one and held ones; returns once the files are unlinked and the directory fsynced,
    /// with the first LSN still in the log. `lsn` may be at most the durable LSN + 1; at or
    /// below the first LSN it changes nothing.
    @discardableResult
    public func truncate(before lsn: LSN) async throws -> LSN {
        try await withWriterContinuation { continuation in
            let done = state.withLock { w -> Result<LSN, WALError>? in
                do throws(WALError) { try w.checkWritable() } catch { return .failure(error) }
                guard lsn <= w.durable + 1 else {
                    return .failure(.outOfRange(lsn: lsn, first: catalog.firstLSN, last: w.durable))
                }
                let job = w.nextToken
                w.nextToken += 1
                guard w.applyRetention(truncateBefore: lsn, notify: job) else { return .success(catalog.firstLSN) }
                w.jobs[job] = .truncate(firstLSN: catalog.firstLSN, continuation)
                return nil
            }
            if let done { continuation.resume(with: done.mapError { $0 as any Error }) }
        }
    }

    // MARK: Replication support

    /// Gives an empty log another identity and first LSN: a new follower adopts its primary's
    /// log id and generation, starting where the primary's (possibly truncated) log starts.
    /// Throws when the log already holds records. The new segment is created durably (on the
    /// sync thread) before the old one is removed.
    public func adoptIdentity(logID newID: LogID, generation: UInt32 = 0, firstLSN: LSN) async throws {
        guard firstLSN >= 1 else { throw WALError.invalidOptions("first LSN must be at least 1") }
        _ = try await withWriterContinuation { (continuation: CheckedContinuation<LSN, any Error>) in
            var fx = Effects()
            state.withLock { w in
                do {
                    try w.checkWritable()
                    guard catalog.segments.count == 1, w.nextLSN == w.active.firstLSN, w.buffer.isEmpty, w.pause == nil else {
                        throw WALError.invalidOptions("only an empty log can adopt another identity")
                    }
                    w.pause = .adopting
                    let job = w.nextToken
                    w.nextToken += 1
                    w.jobs[job] = .adopt(logID: newID, generation: generation, firstLSN: firstLSN, continuation)
                    let (io, options, commit) = (io, w.options, w.commit)
                    let old = GroupCommit.Target(handle: w.activeHandle, path: w.activePath)
                    commit.enqueue(token: job) {
                        do {
                            let created = try Recovery.createSegment(io: io, options: options, logID: newID, generation: generation,
                                                                     firstLSN: firstLSN, previousFirstLSN: 0)
                            let path = joinPath(options.directory, created.info.name)
                            if path != old.path {
                                try io.remove(old.path)
                                try io.syncDirectory(options.directory)
                            }
                            io.close(old.handle)
                            let target = GroupCommit.Target(handle: created.handle, path: path)
                            commit.reset(target: target, durable: firstLSN - 1)
                            return .init(completion: .job(token: job, result: .success(.adopted(
                                .init(handle: created.handle, path: path, name: created.info.name)))))
                        } catch let error as IOError {
                            return .init(completion: .job(token: job, result: .failure(
                                error.isNoSpace ? .noSpace(path: error.path) : .io(error))))
                        } catch {
                            return .init(completion: .job(token: job, result: .failure(.invalidOptions("\(error)"))))
                        }
                    }
                } catch {
                    fx.resume(continuation, .failure(error))
                }
            }
            fx.perform()
            drainEvents()
        }
    }

    /// Bytes on disk from the segment holding `lsn` to the end of the log: how far behind a
    /// reader at `lsn` is, at segment granularity.
    public func bytes(from lsn: LSN) -> Int {
        state.withLock { w in
            let segments = catalog.segments
            guard let index = segments.lastIndex(where: { $0.firstLSN <= lsn }) else { return w.onDiskBytes }
            return segments[index...].dropLast().reduce(0) { $0 + (w.closedSegmentBytes[$1.firstLSN] ?? 0) } + w.writeOffset
        }
    }

    // MARK: Flush timer

    /// Buffered records are written and fdatasynced every `flushInterval`, on the loop when
    /// one is attached (so the write stays on the writer's thread), else on a timer queue.
    private func startFlushTimer() {
        let (interval, closed) = state.withLock { ($0.options.flushInterval, $0.isClosed) }
        let queue = delivery.withLock { $0?.queue } ?? DispatchQueue(label: "wald.wal.flush")
        timer.withLock { t in
            t?.source.cancel()
            t = nil
            guard interval > .zero, !closed else { return }
            let nanos = Int(clamping: nanoseconds(interval))
            let source = DispatchSource.makeTimerSource(queue: queue)
            source.schedule(deadline: .now() + .nanoseconds(nanos), repeating: .nanoseconds(nanos),
                            leeway: .nanoseconds(max(nanos / 10, 1000)))
            source.setEventHandler { [self] in flushTick() }
            source.resume()
            t = FlushTimer(source: source)
        }
    }

    private func flushTick() {
        var fx = Effects()
        state.withLock { w in
            guard !w.isClosed, w.failure == nil else { return }
            w.writeBuffer(&fx)
            if w.written > w.durable {
                w.syncAskedThrough = w.written
                w.commit.requestSync()
            }
        }
        fx.perform()
        drainEvents()
    }

    // MARK: Runtime changes

    /// Changes the options that can change while open: retention (maxSegments, retentionBytes),
    /// flushInterval, maxBufferBytes, maxRecordBytes, slowSyncThreshold and the scrub's
    /// interval and rate are taken from
    /// `newOptions`; the rest of it is ignored. Throws `.invalidOptions`.
    public func update(_ newOptions: WALOptions) throws {
        try newOptions.validate()
        let intervalChanged = state.withLock { w -> Bool in
            w.options.maxSegments = newOptions.maxSegments
            w.options.retentionBytes = newOptions.retentionBytes
            w.options.maxRecordBytes = newOptions.maxRecordBytes
            w.options.maxBufferBytes = newOptions.maxBufferBytes
            let changed = w.options.flushInterval != newOptions.flushInterval
            w.options.flushInterval = newOptions.flushInterval
            w.options.slowSyncThreshold = newOptions.slowSyncThreshold
            w.options.scrubInterval = newOptions.scrubInterval
            w.options.scrubBytesPerSecond = newOptions.scrubBytesPerSecond
            w.applyRetention(truncateBefore: nil, notify: nil)
            return changed
        }
        commit.setSlowSyncThreshold(newOptions.slowSyncThreshold)
        scrubber.update(interval: newOptions.scrubInterval, bytesPerSecond: newOptions.scrubBytesPerSecond)
        if intervalChanged { startFlushTimer() }
    }

    // MARK: State

    /// The options in force (those given to `open`, with runtime changes from `update`).
    public var options: WALOptions { state.withLock { $0.options } }

    /// A snapshot of the log's positions and sizes.
    public var status: WALStatus {
        let stats = commit.stats
        return state.withLock { w in
            let segments = catalog.segments
            return WALStatus(
                logID: catalog.logID, generation: catalog.generation, firstLSN: segments.first?.firstLSN ?? 1, lastLSN: w.nextLSN - 1,
                durableLSN: w.durable, segments: segments.count, bytes: w.onDiskBytes,
                failure: w.failure, syncStats: stats)
        }
    }

    /// Damage found since open, by readers (a replay that reached a record failing its check)
    /// and by the scrub; each place is logged once at error when found.
    public var damage: [DamageReport] { damageLog.all }

    /// The background scrub's progress (`WALOptions.scrubInterval`).
    public var scrubStatus: ScrubStatus { scrubber.status }

    /// LSN of the last appended record (0 when the log has none).
    public var lastLSN: LSN { state.withLock { $0.nextLSN - 1 } }

    /// Highest LSN known to be on disk. Readable from any thread without waiting.
    public var durableLSN: LSN { durableCell.lsn }

    /// Returns once the durable LSN exceeds `lsn` (for live tails); throws if the WAL fails or
    /// closes, or the task is cancelled.
    public func waitForDurable(beyond lsn: LSN) async throws -> LSN {
        let id = state.withLock { w -> Int in
            defer { w.nextWatcherID += 1 }
            return w.nextWatcherID
        }
        // A cancel that comes after a sync already took this watcher records its id; the handler
        // cannot run once withTaskCancellationHandler has returned, so drop it then (no growth).
        defer { state.withLock { _ = $0.cancelledWatchers.remove(id) } }
        return try await withTaskCancellationHandler {
            try await withWriterContinuation { continuation in
                let now = state.withLock { w -> Result<LSN, any Error>? in
                    if let failure = w.failure { return .failure(failure) }
                    if w.durable > lsn { return .success(w.durable) }
                    if w.cancelledWatchers.remove(id) != nil { return .failure(CancellationError()) }
                    if w.isClosed { return .failure(WALError.closed) }
                    w.watchers.append(Writer.Watcher(id: id, lsn: lsn, continuation: continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let watcher = state.withLock { w -> Writer.Watcher? in
                if let index = w.watchers.firstIndex(where: { $0.id == id }) { return w.watchers.remove(at: index) }
                w.cancelledWatchers.insert(id)
                return nil
            }
            watcher?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Protects segments holding `lsn` and later from retention until released.
    public func hold(from lsn: LSN) -> SegmentHold {
        SegmentHold(catalog: catalog, lsn: lsn)
    }

    /// A reader from `lsn` (0 = the first available LSN) up to the durable LSN; throws
    /// `.outOfRange` when `lsn` is below the first available LSN or above last + 1.
    /// The reader holds its segments against retention while it lives.
    public func reader(from lsn: LSN) throws -> LogReader {
        let next = try state.withLock { w throws(WALError) -> LSN in
            if w.isClosed { throw .closed }
            return w.nextLSN
        }
        let first = catalog.firstLSN
        let start = lsn == 0 ? first : lsn
        guard start >= first, start <= next else {
            throw WALError.outOfRange(lsn: lsn, first: first, last: next - 1)
        }
        return LogReader(io: io, directory: directory, catalog: catalog, durable: durableCell, from: start, damage: damageLog)
    }

    /// Calls `apply` for every durable record from `lsn` on, in order (the seed's Replay).
    public func replay(from lsn: LSN = 0, _ apply: (LSN, [UInt8]) throws -> Void) throws {
        let reader = try reader(from: lsn)
        while let record = try reader.next() { try apply(record.lsn, record.payload) }
    }
}

/// Positions and sizes of a log at one moment.
public struct WALStatus: Sendable, Equatable {
    public let logID: LogID
    /// Raised by each repair that cut records (docs/format.md, "Generations").
    public let generation: UInt32
    public let firstLSN: LSN
    public let lastLSN: LSN
    public let durableLSN: LSN
    public let segments: Int
    /// The sizes of the segment files: what they take on disk, preallocated space included
    /// (the same figure as `walctl verify`'s and the `wald_disk_bytes` gauge).
    public let bytes: Int
    public let failure: WALError?
    public let syncStats: GroupCommitStats
}

/// Records laid out back to back as `u32 big-endian length, bytes` (the body of a binary
/// APPEND frame after its count), handed from the socket's buffer to the writer uncopied.
package struct LengthPrefixedRecords: RecordBatch, @unchecked Sendable {
    // @unchecked Sendable: a view of the caller's buffer, used only inside the synchronous
    // call it is passed to (the writer copies the records into its own buffer).
    package let bytes: UnsafeRawBufferPointer
    package let count: Int

    /// `bytes` must hold exactly `count` records; the caller has checked the lengths.
    package init(bytes: UnsafeRawBufferPointer, count: Int) {
        self.bytes = bytes
        self.count = count
    }

    func forEach(_ body: (UnsafeRawBufferPointer) -> Void) {
        var offset = 0
        for _ in 0..<count {
            let length = Int(UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
                             | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
            body(UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + 4 + length)]))
            offset += 4 + length
        }
    }
}

private struct OneRecord<Payload: RecordPayload>: RecordBatch {
    let payload: Payload
    var count: Int { 1 }
    func forEach(_ body: (UnsafeRawBufferPointer) -> Void) {
        payload.withUnsafeBytes { body($0) }
    }
}

private struct OneRawRecord: RecordBatch, @unchecked Sendable {
    // @unchecked Sendable: as LengthPrefixedRecords, a view used only during the call.
    let bytes: UnsafeRawBufferPointer
    var count: Int { 1 }
    func forEach(_ body: (UnsafeRawBufferPointer) -> Void) { body(bytes) }
}

private struct PayloadCollection<Records: Collection & Sendable>: RecordBatch where Records.Element: RecordPayload {
    let records: Records
    var count: Int { records.count }
    func forEach(_ body: (UnsafeRawBufferPointer) -> Void) {
        for record in records { record.withUnsafeBytes { body($0) } }
    }
}

/// Runs `body`, turning a thrown `IOError` into `WALError.io` (or `.noSpace`).
func wrapIO<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as IOError {
        if error.isNoSpace { throw WALError.noSpace(path: error.path) }
        throw WALError.io(error)
    }
}
