// The writer: a single actor owns the active segment, the append buffer and every file
// mutation (rotation, retention, truncation). fdatasync never runs on the actor: GroupCommit
// runs it on the waiting client's own thread or its sync thread, so appends keep being
// encoded and written while a sync is in flight.
import CoreMetrics
import Logging

/// A segmented, checksummed write-ahead log in one directory.
///
/// ```swift
/// let wal = try await WAL.open(WALOptions(directory: "data"))
/// let lsn = try await wal.append(Array("hello".utf8))          // durable: fsynced on return
/// let reader = try await wal.reader(from: 1)
/// while let record = try reader.next() { print(record.lsn, record.payload) }
/// try await wal.close()
/// ```
public actor WAL {
    /// The options the log was opened with (runtime changes go through `update`).
    public private(set) var options: WALOptions
    /// The identity shared by every segment of this log.
    public nonisolated var logID: LogID { catalog.logID }
    nonisolated let catalog: SegmentCatalog
    nonisolated let commit: GroupCommit
    private nonisolated let io: any FileIO
    private let logger: Logger
    private let lock: IOHandle
    private let preparer: SegmentPreparer

    private var active: SegmentInfo
    private var activeHandle: IOHandle
    private var activePath: String
    /// File offset where `buffer` will be written.
    private var writeOffset: Int
    /// Encoded frames not yet written.
    private var buffer: [UInt8] = []
    private var nextLSN: LSN
    /// Bytes of all segments except the active one, for retentionBytes.
    private var closedSegmentBytes: [LSN: Int] = [:]
    private var flushTask: Task<Void, Never>?
    private var isClosed = false
    private let appendedRecords = Counter(label: "wald_appended_records_total")
    private let appendedBytes = Counter(label: "wald_appended_bytes_total")
    private let segmentGauge = Gauge(label: "wald_segments")
    private let diskBytesGauge = Gauge(label: "wald_disk_bytes")

    // MARK: Opening and closing

    /// Opens (creating if needed) the log in `options.directory`: takes the directory lock,
    /// recovers, and starts the flush timer. Fails with `.locked` if another process has it
    /// open, and with `.corruption` on damage other than a torn tail (unless `options.repair`).
    public static func open(_ options: WALOptions) async throws -> WAL {
        try options.validate()
        let io = options.io
        try wrapIO { try io.createDirectory(options.directory) }
        let lockPath = joinPath(options.directory, "LOCK")
        let lock: IOHandle
        do {
            lock = try io.lock(lockPath)
        } catch let error as IOError where error.errno == 11 || error.operation == "flock" {
            throw WALError.locked(directory: options.directory)
        } catch let error as IOError {
            throw WALError.io(error)
        }
        do {
            let recovered = try wrapIO { try Recovery.recover(options, logger: options.logger) }
            let wal = try WAL(options: options, recovered: recovered, lock: lock)
            await wal.startFlushTimer()
            await wal.reportSize()
            return wal
        } catch {
            io.unlock(lock)
            throw error
        }
    }

    private init(options: WALOptions, recovered: RecoveredLog, lock: IOHandle) throws {
        self.options = options
        io = options.io
        logger = options.logger
        self.lock = lock
        catalog = SegmentCatalog(logID: recovered.logID, segments: recovered.segments)
        active = recovered.segments.last!
        activePath = joinPath(options.directory, active.name)
        activeHandle = try wrapIO { try options.io.open(joinPath(options.directory, recovered.segments.last!.name), mode: .readWrite) }
        writeOffset = recovered.endOffset
        nextLSN = recovered.lastLSN + 1
        commit = GroupCommit(io: io, target: .init(handle: activeHandle, path: activePath), durable: recovered.lastLSN,
                             logger: options.logger, slowSyncThreshold: options.slowSyncThreshold)
        preparer = SegmentPreparer(io: io, path: joinPath(options.directory, options.segmentPrefix + "prepared.tmp"),
                                   size: options.preallocate ? options.maxSegmentBytes : 0)
        buffer.reserveCapacity(options.maxBufferBytes + 64 * 1024)
        for segment in recovered.segments.dropLast() {
            let path = joinPath(options.directory, segment.name)
            if let handle = try? io.open(path, mode: .readOnly) {
                closedSegmentBytes[segment.firstLSN] = (try? io.size(handle, path: path)) ?? 0
                io.close(handle)
            }
        }
        logger.info("opened log", metadata: [
            "directory": "\(options.directory)", "log_id": "\(recovered.logID)",
            "first_lsn": "\(recovered.segments.first!.firstLSN)", "last_lsn": "\(recovered.lastLSN)",
            "segments": "\(recovered.segments.count)",
        ])
        preparer.start()
    }

    /// Writes and fdatasyncs everything accepted, stops background work and releases the
    /// directory lock. Later calls fail with `.closed`.
    public func close() async throws {
        guard !isClosed else { return }
        var firstError: (any Error)?
        do { _ = try await sync() } catch { firstError = error }
        isClosed = true
        flushTask?.cancel()
        // Let it end (flushTick sees isClosed): a timer task still parked at process exit is
        // what LeakSanitizer reported from every cleanly stopped wald.
        await flushTask?.value
        flushTask = nil
        commit.stop()
        preparer.discard()
        io.unlock(lock)
        if let firstError, commit.failure == nil { throw firstError }
    }

    // MARK: Appending

    /// Appends one record; returns its LSN.
    @discardableResult
    public func append(_ record: [UInt8], durability: Durability = .durable) async throws -> LSN {
        // Not generic, so a caller in another module runs specialised code (the generic
        // version costs ≈ 2–3× per buffered append in metadata lookups and async frames).
        let lsn = try accept(record, durability: durability)
        if durability == .durable { _ = try await commit.waitDurable(lsn) }
        return lsn
    }

    /// Appends one record; returns its LSN.
    @discardableResult
    public func append(_ record: some RecordPayload, durability: Durability = .durable) async throws -> LSN {
        let lsn = try accept(record, durability: durability)
        if durability == .durable { _ = try await commit.waitDurable(lsn) }
        return lsn
    }

    /// Appends records as one batch with consecutive LSNs; returns the first. The batch
    /// is never split across segments, and recovery can only cut it at a record boundary.
    /// When it throws, no record of the batch is in the log.
    @discardableResult
    public func append<Records: Collection>(
        contentsOf records: Records, durability: Durability = .durable
    ) async throws -> LSN where Records.Element: RecordPayload {
        try checkWritable()
        guard !records.isEmpty else { throw WALError.emptyBatch }
        var batchBytes = 0
        for record in records {
            guard record.count <= options.maxRecordBytes else {
                throw WALError.recordTooLarge(size: record.count, limit: options.maxRecordBytes)
            }
            batchBytes += RecordFrame.headerSize + record.count
        }
        try makeRoom(for: batchBytes)
        let rollback = buffer.count
        let first = nextLSN
        for record in records {
            record.withUnsafeBytes { RecordFrame.append(lsn: nextLSN, payload: $0, to: &buffer) }
            nextLSN += 1
        }
        let last = nextLSN - 1
        try flushIfNeeded(durability, rollback: rollback, firstLSN: first)
        appendedRecords.increment(by: records.count)
        appendedBytes.increment(by: batchBytes - records.count * RecordFrame.headerSize)
        if durability == .durable {
            _ = try await commit.waitDurable(last)
        }
        return first
    }

    /// A one-record `append(contentsOf:)` up to the wait for durability: encodes the record,
    /// writes it when `durability` (or a full buffer) asks for it, and returns its LSN.
    @inline(__always)
    private func accept(_ record: some RecordPayload, durability: Durability) throws -> LSN {
        try checkWritable()
        let count = record.count
        guard count <= options.maxRecordBytes else {
            throw WALError.recordTooLarge(size: count, limit: options.maxRecordBytes)
        }
        try makeRoom(for: RecordFrame.headerSize + count)
        let rollback = buffer.count
        let lsn = nextLSN
        record.withUnsafeBytes { RecordFrame.append(lsn: lsn, payload: $0, to: &buffer) }
        nextLSN += 1
        try flushIfNeeded(durability, rollback: rollback, firstLSN: lsn)
        appendedRecords.increment(by: 1)
        appendedBytes.increment(by: count)
        return lsn
    }

    /// Rotates first when a batch of `batchBytes` would overflow the active segment (unless
    /// the segment is empty: an oversized batch gets a segment of its own).
    @inline(__always)
    private func makeRoom(for batchBytes: Int) throws {
        let used = writeOffset + buffer.count
        if used + batchBytes > options.maxSegmentBytes && used > SegmentHeader.size {
            try rotate()
        }
    }

    /// Writes the buffer when the batch just encoded at `rollback` must be durable or the
    /// buffer is full; a failed write takes the batch back out.
    @inline(__always)
    private func flushIfNeeded(_ durability: Durability, rollback: Int, firstLSN: LSN) throws {
        guard durability == .durable || buffer.count >= options.maxBufferBytes else { return }
        do { try flush() } catch {
            discardFailedBatch(from: rollback, firstLSN: firstLSN)
            throw error
        }
    }

    /// Takes a batch whose write failed (ENOSPC) back out: its LSNs are reused, and whatever
    /// part of it reached the file is zeroed, so no frame of a failed append can surface after
    /// a crash. Overwriting blocks the failed write allocated needs no new space.
    private func discardFailedBatch(from rollback: Int, firstLSN: LSN) {
        let start = writeOffset + rollback
        var end = writeOffset + buffer.count
        buffer.removeSubrange(rollback...)
        nextLSN = firstLSN
        // Once failed, recovery decides what survived; nothing more to promise.
        guard commit.failure == nil else { return }
        // Only bytes inside the file can hold part of the batch; zeroing past its end would
        // grow it and hit ENOSPC again.
        if let size = try? io.size(activeHandle, path: activePath) { end = min(end, size) }
        guard end > start else { return }
        // The zeros must be durable before the error is returned: unsynced, a power cut can keep
        // the failed write without the zeroing (the batch reappears at LSNs that later appends
        // reuse) or tear the zeroing (damage followed by a valid frame, so open fails).
        do {
            try io.write(activeHandle, [UInt8](repeating: 0, count: end - start), at: start, path: activePath)
            try io.syncData(activeHandle, path: activePath)
        } catch {
            enterFailedState("could not erase a failed append from \(activePath): \(error)")
        }
    }

    /// Writes buffered records and waits until everything appended so far is durable.
    /// Returns the durable LSN.
    @discardableResult
    public func sync() async throws -> LSN {
        try checkWritable()
        try flush()
        return try await commit.waitDurable(nextLSN - 1)
    }

    /// Waits until `lsn` is durable, writing buffered records first when they are not yet
    /// written. Lets a server append a pipeline of records as `.buffered` and then wait once
    /// for all of them (one pwrite, one shared fdatasync). Returns the durable LSN.
    @discardableResult
    public func waitDurable(_ lsn: LSN) async throws -> LSN {
        if commit.durableLSN >= lsn { return commit.durableLSN }
        try checkWritable()
        guard lsn < nextLSN else { throw WALError.outOfRange(lsn: lsn, first: catalog.firstLSN, last: nextLSN - 1) }
        try flush()
        return try await commit.waitDurable(lsn)
    }

    /// Round trip through the writer and an fdatasync, proving both work (for a watchdog).
    public func probe() async throws -> LSN {
        try checkWritable()
        try flush()
        return try await commit.probe()
    }

    private func checkWritable() throws {
        if isClosed { throw WALError.closed }
        if let failure = commit.failure { throw failure }
    }

    /// pwrite the buffer at the write offset. ENOSPC leaves the buffer for a later retry
    /// (pwrite is idempotent at the same offset); any other error fails the WAL.
    private func flush() throws {
        guard !buffer.isEmpty else { return }
        do {
            try io.write(activeHandle, buffer, at: writeOffset, path: activePath)
        } catch let error as IOError {
            if error.isNoSpace { throw WALError.noSpace(path: activePath) }
            enterFailedState("write to \(activePath) failed: \(error)")
            throw commit.failure!
        }
        writeOffset += buffer.count
        buffer.removeAll(keepingCapacity: true)
        commit.didWrite(upTo: nextLSN - 1)
    }

    private func enterFailedState(_ reason: String) {
        logger.critical("WAL entered its failed state", metadata: ["reason": "\(reason)"])
        commit.fail(reason)
    }

    // MARK: Rotation and retention

    /// Closes the active segment (written and fdatasynced here, so the next segment never
    /// holds data while the previous one could still be torn) and installs the prepared one.
    private func rotate() throws {
        try flush()
        do {
            try io.syncData(activeHandle, path: activePath)
        } catch {
            enterFailedState("fdatasync of \(activePath) failed at rotation: \(error)")
            throw commit.failure!
        }
        let prepared: SegmentPreparer.Prepared
        do {
            prepared = try preparer.take()
        } catch {
            if error.isNoSpace {
                logger.error("cannot create the next segment: no space", metadata: ["error": "\(error)"])
                throw WALError.noSpace(path: error.path)
            }
            throw WALError.io(error)
        }
        let name: String
        do {
            name = try Recovery.install(io: io, options: options, handle: prepared.handle, tempPath: prepared.path,
                                        logID: logID, firstLSN: nextLSN, previousFirstLSN: active.firstLSN)
        } catch let error as IOError where error.isNoSpace && error.path == prepared.path {
            // Still the temp file (header write or its fdatasync; nothing renamed): the log is
            // untouched, so this is ENOSPC for the append, not a failed log. Without
            // preallocation the header write is the first to grow a file at rotation.
            io.close(prepared.handle)
            try? io.remove(prepared.path)
            throw WALError.noSpace(path: prepared.path)
        } catch {
            io.close(prepared.handle)
            enterFailedState("installing segment for LSN \(nextLSN) failed: \(error)")
            throw commit.failure!
        }
        closedSegmentBytes[active.firstLSN] = max(writeOffset, (try? io.size(activeHandle, path: activePath)) ?? writeOffset)
        active = SegmentInfo(firstLSN: nextLSN, name: name)
        activeHandle = prepared.handle
        activePath = joinPath(options.directory, name)
        writeOffset = SegmentHeader.size
        catalog.append(active)
        commit.switchTarget(to: .init(handle: activeHandle, path: activePath), durableThrough: nextLSN - 1)
        logger.debug("rotated segment", metadata: ["segment": "\(name)"])
        preparer.start()
        applyRetention(truncateBefore: nil)
        reportSize()
    }

    /// Updates the segment-count and bytes-on-disk gauges.
    private func reportSize() {
        segmentGauge.record(catalog.segments.count)
        diskBytesGauge.record(closedSegmentBytes.values.reduce(0, +) + writeOffset)
    }

    /// Deletes old segments per maxSegments, retentionBytes and an explicit truncation point,
    /// never the active segment and never one a hold protects.
    @discardableResult
    private func applyRetention(truncateBefore: LSN?) -> Int {
        let segments = catalog.segments
        let plan = Retention.segmentsToDelete(
            segments: segments, sizes: closedSegmentBytes, activeBytes: writeOffset,
            maxSegments: options.maxSegments, retentionBytes: options.retentionBytes,
            truncateBefore: truncateBefore, lowestHold: catalog.lowestHold)
        guard plan > 0 else { return 0 }
        catalog.removeFirst(plan)
        var deleted = 0
        for segment in segments.prefix(plan) {
            // Oldest first, so a crash midway still leaves a contiguous suffix of the log.
            do {
                try io.remove(joinPath(options.directory, segment.name))
                closedSegmentBytes[segment.firstLSN] = nil
                deleted += 1
            } catch {
                logger.error("could not delete segment", metadata: ["segment": "\(segment.name)", "error": "\(error)"])
            }
        }
        do { try io.syncDirectory(options.directory) } catch {
            logger.error("directory fsync after retention failed", metadata: ["error": "\(error)"])
        }
        logger.info("deleted old segments", metadata: ["count": "\(deleted)", "first_lsn": "\(catalog.firstLSN)"])
        reportSize()
        return deleted
    }

    /// Drops every whole segment whose records are all below `lsn` (a checkpoint), except the
    /// active one and held ones. Returns the first LSN still in the log. `lsn` may be at most
    /// the durable LSN + 1; at or below the first LSN it changes nothing.
    @discardableResult
    public func truncate(before lsn: LSN) throws -> LSN {
        try checkWritable()
        let durable = commit.durableLSN
        guard lsn <= durable + 1 else {
            throw WALError.outOfRange(lsn: lsn, first: catalog.firstLSN, last: durable)
        }
        applyRetention(truncateBefore: lsn)
        return catalog.firstLSN
    }

    // MARK: Replication support

    /// Gives an empty log another identity and first LSN: a new follower adopts its primary's
    /// log id, starting where the primary's (possibly truncated) log starts. Throws when the log
    /// already holds records. The new segment is created durably before the old one is removed.
    public func adoptIdentity(logID newID: LogID, firstLSN: LSN) throws {
        try checkWritable()
        guard firstLSN >= 1 else { throw WALError.invalidOptions("first LSN must be at least 1") }
        let segments = catalog.segments
        guard segments.count == 1, nextLSN == active.firstLSN, buffer.isEmpty else {
            throw WALError.invalidOptions("only an empty log can adopt another identity")
        }
        let created = try wrapIO {
            try Recovery.createSegment(io: io, options: options, logID: newID, firstLSN: firstLSN, previousFirstLSN: 0)
        }
        let oldPath = activePath
        if created.info.name != active.name {
            try wrapIO {
                try io.remove(oldPath)
                try io.syncDirectory(options.directory)
            }
        }
        active = created.info
        activeHandle = created.handle
        activePath = joinPath(options.directory, created.info.name)
        writeOffset = SegmentHeader.size
        nextLSN = firstLSN
        closedSegmentBytes = [:]
        catalog.reset(logID: newID, segments: [created.info])
        commit.switchTarget(to: .init(handle: activeHandle, path: activePath), durableThrough: firstLSN - 1)
        logger.notice("adopted log identity", metadata: ["log_id": "\(newID)", "first_lsn": "\(firstLSN)"])
        reportSize()
    }

    /// Bytes on disk from the segment holding `lsn` to the end of the log: how far behind a
    /// reader at `lsn` is, at segment granularity.
    public func bytes(from lsn: LSN) -> Int {
        let segments = catalog.segments
        guard let index = segments.lastIndex(where: { $0.firstLSN <= lsn }) else {
            return closedSegmentBytes.values.reduce(0, +) + writeOffset
        }
        return segments[index...].dropLast().reduce(0) { $0 + (closedSegmentBytes[$1.firstLSN] ?? 0) } + writeOffset
    }

    // MARK: Flush timer

    private func startFlushTimer() {
        guard !isClosed else { return }
        let interval = options.flushInterval
        flushTask?.cancel()
        guard interval > .zero else { return }
        flushTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                await self.flushTick()
            }
        }
    }

    private func flushTick() {
        guard !isClosed, commit.failure == nil else { return }
        do {
            try flush()
            commit.requestSync()
        } catch {
            logger.warning("flush of buffered appends failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Runtime changes

    /// Changes the options that can change while open: retention (maxSegments, retentionBytes),
    /// flushInterval, maxBufferBytes, maxRecordBytes and slowSyncThreshold are taken from
    /// `newOptions`; the rest of it is ignored.
    public func update(_ newOptions: WALOptions) throws {
        try newOptions.validate()
        options.maxSegments = newOptions.maxSegments
        options.retentionBytes = newOptions.retentionBytes
        options.maxRecordBytes = newOptions.maxRecordBytes
        options.maxBufferBytes = newOptions.maxBufferBytes
        let intervalChanged = options.flushInterval != newOptions.flushInterval
        options.flushInterval = newOptions.flushInterval
        options.slowSyncThreshold = newOptions.slowSyncThreshold
        commit.setSlowSyncThreshold(newOptions.slowSyncThreshold)
        if intervalChanged { startFlushTimer() }
        applyRetention(truncateBefore: nil)
    }

    // MARK: State

    /// A snapshot of the log's positions and sizes.
    public var status: WALStatus {
        let segments = catalog.segments
        let bytes = closedSegmentBytes.values.reduce(0, +) + writeOffset + buffer.count
        return WALStatus(
            logID: logID, firstLSN: segments.first?.firstLSN ?? 1, lastLSN: nextLSN - 1,
            durableLSN: commit.durableLSN, segments: segments.count, bytes: bytes,
            failure: commit.failure, syncStats: commit.stats)
    }

    /// LSN of the last appended record (0 when the log has none).
    public var lastLSN: LSN { nextLSN - 1 }

    /// Highest LSN known to be on disk. Readable from any thread.
    public nonisolated var durableLSN: LSN { commit.durableLSN }

    /// Returns once the durable LSN exceeds `lsn` (for live tails); throws if the WAL fails or
    /// closes, or the task is cancelled.
    public nonisolated func waitForDurable(beyond lsn: LSN) async throws -> LSN {
        try await commit.waitForDurable(beyond: lsn)
    }

    /// Protects segments holding `lsn` and later from retention until released.
    public nonisolated func hold(from lsn: LSN) -> SegmentHold {
        SegmentHold(catalog: catalog, lsn: lsn)
    }

    /// A reader from `lsn` (0 = the first available LSN) up to the durable LSN; throws
    /// `.outOfRange` when `lsn` is below the first available LSN or above last + 1.
    /// The reader holds its segments against retention while it lives.
    public func reader(from lsn: LSN) throws -> sending LogReader {
        if isClosed { throw WALError.closed }
        let first = catalog.firstLSN
        let start = lsn == 0 ? first : lsn
        guard start >= first, start <= nextLSN else {
            throw WALError.outOfRange(lsn: lsn, first: first, last: nextLSN - 1)
        }
        return LogReader(io: io, directory: options.directory, catalog: catalog, commit: commit, from: start)
    }

    /// Calls `apply` for every durable record from `lsn` on, in order (the seed's Replay).
    public nonisolated(nonsending) func replay(from lsn: LSN = 0, _ apply: (LSN, [UInt8]) throws -> Void) async throws {
        let reader = try await reader(from: lsn)
        while let record = try reader.next() { try apply(record.lsn, record.payload) }
    }
}

/// Positions and sizes of a log at one moment.
public struct WALStatus: Sendable, Equatable {
    public let logID: LogID
    public let firstLSN: LSN
    public let lastLSN: LSN
    public let durableLSN: LSN
    public let segments: Int
    public let bytes: Int
    public let failure: WALError?
    public let syncStats: GroupCommitStats
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
