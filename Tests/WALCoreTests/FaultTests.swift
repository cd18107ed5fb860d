// Faults injected through the I/O layer: a failing fdatasync, a full disk at pwrite and at
// segment preparation, and the calls the engine must refuse (too large, empty, locked).
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import WALCore

/// The WALError `body` throws, or nil (recording an issue) when it throws something else or nothing.
func walError<T>(_ comment: Comment? = nil, _ body: () async throws -> T) async -> WALError? {
    do {
        _ = try await body()
        Issue.record("expected a WALError, but the call succeeded. \(comment.map { "\($0)" } ?? "")")
        return nil
    } catch let error as WALError {
        return error
    } catch {
        Issue.record("expected a WALError, got \(error). \(comment.map { "\($0)" } ?? "")")
        return nil
    }
}

func isFailed(_ error: WALError?) -> Bool { if case .failed = error { true } else { false } }
func isNoSpace(_ error: WALError?) -> Bool { if case .noSpace = error { true } else { false } }

func bytes(_ count: Int, _ value: UInt8) -> [UInt8] { [UInt8](repeating: value, count: count) }

@Suite struct FsyncFailureTests {
    @Test func failedFsyncFailsThePendingDurableAppend() async throws {
        let io = SimulatedFileIO()
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: io, segmentBytes: 8192)))
        var model = LogModel()
        for i in 0..<5 {
            let payload = bytes(20, UInt8(i))
            model.record(first: try await wal.append(payload), [payload])
        }
        model.acknowledged = 5
        io.failSync()
        let error = await walError { try await wal.append(bytes(10, 0xEE)) }
        #expect(isFailed(error), "\(String(describing: error))")
        #expect(wal.status.failure != nil)
        #expect(wal.durableLSN == 5)
        try await wal.close()
        try await reopenSurvivors(of: io, model: model)
    }

    @Test func everyCallAfterAFailedFsyncFails() async throws {
        let io = SimulatedFileIO()
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: io, segmentBytes: 8192)))
        try await wal.append([1])
        try await wal.append([2], durability: .buffered)
        io.failSync()
        #expect(isFailed(await walError { try await wal.sync() }))
        #expect(isFailed(await walError { try await wal.append([2]) }))
        #expect(isFailed(await walError { try await wal.append([3], durability: .buffered) }))
        #expect(isFailed(await walError { try await wal.append(contentsOf: [[4], [5]]) }))
        #expect(isFailed(await walError { try await wal.sync() }))
        #expect(isFailed(await walError { try await wal.truncate(before: 1) }))
        #expect(isFailed(await walError { try await wal.waitForDurable(beyond: 1) }))
        // Closing a failed log is allowed (it releases the lock) and does not throw.
        try await wal.close()
    }

    /// The failed state keeps the failed call: its C function, file and errno (an operator
    /// tells EIO from ENOSPC from EROFS; wald's exit status carries the errno to systemd).
    @Test func theFailedStateKeepsTheFailedCallAndItsErrno() async throws {
        let io = SimulatedFileIO()
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: io, segmentBytes: 8192)))
        try await wal.append([1])
        io.failSync(errno: EROFS)
        let first = await walError { try await wal.append([2]) }
        let later = await walError { try await wal.append([3]) }
        for error in [first, later] {
            guard case .failed(_, let cause?) = error else {
                Issue.record("expected .failed with a cause, got \(String(describing: error))")
                continue
            }
            #expect(cause.operation == "fdatasync")
            #expect(cause.errno == EROFS)
            #expect(cause.path.hasPrefix("/wal/"))
        }
        try await wal.close()
    }

    @Test func bufferedAppendsBeforeAFailedFsyncAreNotAcknowledged() async throws {
        let io = SimulatedFileIO()
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: io, segmentBytes: 8192)))
        var model = LogModel()
        model.record(first: try await wal.append([1]), [[1]])
        model.acknowledged = 1
        for i in 2...4 { model.record(first: try await wal.append([UInt8(i)], durability: .buffered), [[UInt8(i)]]) }
        io.failSync()
        #expect(isFailed(await walError { try await wal.sync() }))
        #expect(wal.durableLSN == 1)
        try await wal.close()
        try await reopenSurvivors(of: io, model: model)
    }

    @Test func failedFsyncAtRotationFailsTheLog() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 2048))
        options.preallocate = false
        let wal = try await WAL.open(options)
        var model = LogModel()
        // Fill the first segment with buffered records, so the next append must rotate and
        // rotation's own fdatasync is the first to fail. (Counted, not read from `bytes`: buffered
        // records are not in the file yet, and `bytes` are the file's size.)
        while SegmentHeader.size + Int(wal.lastLSN) * RecordFrame.encodedSize(payloadCount: 100) < 1800 {
            let payload = bytes(100, 7)
            model.record(first: try await wal.append(payload, durability: .buffered), [payload])
        }
        io.failSync()
        #expect(isFailed(await walError { try await wal.append(bytes(300, 9)) }))
        #expect(wal.status.segments == 1)
        #expect(isFailed(await walError { try await wal.append([1]) }))
        try await wal.close()
        try await reopenSurvivors(of: io, model: model)
    }

    /// After a failed fsync the disk holds some prefix of what was written: every survivor of
    /// a power cut opens, holds only appended records, and accepts appends again.
    func reopenSurvivors(of io: SimulatedFileIO, model: LogModel, cuts: Int = 20) async throws {
        for seed in UInt64(1)...UInt64(cuts) {
            var rng = SplitMix64(seed: seed)
            let survivor = io.powerCut(using: &rng)
            try await PowerCutTests.checkSurvivor(survivor, options: quiet(smallOptions("/wal", io: survivor, segmentBytes: 8192)),
                                                  model: model, firstAllowed: 1, "cut seed \(seed)")
        }
    }
}

@Suite struct NoSpaceTests {
    /// Without preallocation the data pwrite is what meets the full disk.
    @Test func fullDiskAtWriteFailsTheBatchAndLeavesNothingOfIt() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 8192))
        options.preallocate = false
        var wal = try await WAL.open(options)
        var model = LogModel()
        for i in 1...3 {
            let payload = bytes(40, UInt8(i))
            model.record(first: try await wal.append(payload), [payload])
        }
        // Room for one and a half of the three frames: the pwrite fails part-way.
        io.setCapacity(io.usedBytes + 100)
        let error = await walError { try await wal.append(contentsOf: [bytes(50, 0xA1), bytes(50, 0xA2), bytes(50, 0xA3)]) }
        #expect(isNoSpace(error), "\(String(describing: error))")
        #expect(wal.lastLSN == 3)
        #expect(wal.status.failure == nil)
        // Still full: a retry fails the same way, and nothing moves.
        #expect(isNoSpace(await walError { try await wal.append(bytes(200, 0xA4)) }))
        io.setCapacity(nil)
        let later = bytes(30, 0xB1)
        #expect(try await wal.append(later) == 4)
        model.record(first: 4, [later])
        model.acknowledged = 4
        try await wal.close()
        wal = try await WAL.open(options)
        let records = try await readAll(wal)
        #expect(records.map(\.lsn) == [1, 2, 3, 4])
        #expect(model.check(records, first: 1, last: 4, firstAllowed: 1, "reopen"))
        try await wal.close()
    }

    @Test func bufferedRecordsBeforeAFailedBatchAreKept() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 8192))
        options.preallocate = false
        var wal = try await WAL.open(options)
        try await wal.append([1])
        try await wal.append(contentsOf: [[2], [3]], durability: .buffered)
        io.setCapacity(io.usedBytes + 40)  // the two buffered frames (34 bytes) fit, the batch does not
        #expect(isNoSpace(await walError { try await wal.append(bytes(100, 0xCC)) }))
        #expect(wal.lastLSN == 3)
        io.setCapacity(nil)
        #expect(try await wal.sync() == 3)
        #expect(try await wal.append([4]) == 4)
        try await wal.close()
        wal = try await WAL.open(options)
        #expect(try await readAll(wal).map(\.payload) == [[1], [2], [3], [4]])
        try await wal.close()
    }

    @Test func truncationFreesSpaceForLaterAppends() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 2048))
        options.preallocate = false
        var wal = try await WAL.open(options)
        while wal.status.segments < 4 { try await wal.append(bytes(200, 1)) }
        let last = wal.lastLSN
        io.setCapacity(io.usedBytes + 50)
        #expect(isNoSpace(await walError { try await wal.append(bytes(200, 2)) }))
        let first = try await wal.truncate(before: last + 1)
        #expect(first > 1)
        #expect(wal.status.segments == 1)
        #expect(try await wal.append(bytes(200, 3)) == last + 1)
        try await wal.close()
        wal = try await WAL.open(options)
        let records = try await readAll(wal)
        #expect(records.first?.lsn == first)
        #expect(records.last == Record(lsn: last + 1, payload: bytes(200, 3)))
        #expect(records.map(\.lsn) == Array(first...(last + 1)))
        try await wal.close()
    }

    /// With preallocation, data writes never grow a file; the background preparation of the
    /// next segment is what meets the full disk, and the append that needs it fails.
    @Test func fullDiskAtSegmentPreparationFailsTheAppendThatRotates() async throws {
        let io = SimulatedFileIO()
        let segment = 2048
        var options = smallOptions("/wal", io: io, segmentBytes: segment)
        options.preallocate = true
        // Room for the first segment and one prepared segment, not for a third.
        io.setCapacity(2 * segment)
        var wal = try await WAL.open(options)
        var model = LogModel()
        var failure: WALError?
        for i in 0..<200 {
            let payload = bytes(150, UInt8(truncatingIfNeeded: i))
            do {
                model.record(first: try await wal.append(payload), [payload])
                model.acknowledged = model.appended.keys.max()!
            } catch let error as WALError {
                failure = error
                break
            }
        }
        #expect(isNoSpace(failure), "\(String(describing: failure))")
        #expect(wal.status.segments == 2)
        #expect(wal.lastLSN == model.acknowledged)
        #expect(wal.status.failure == nil)
        // Free space: the same append now rotates into a freshly prepared segment.
        io.setCapacity(nil)
        let payload = bytes(150, 0xEE)
        #expect(try await wal.append(payload) == model.acknowledged + 1)
        model.record(first: model.acknowledged + 1, [payload])
        model.acknowledged += 1
        #expect(wal.status.segments == 3)
        try await wal.close()
        wal = try await WAL.open(options)
        let status = wal.status
        #expect(model.check(try await readAll(wal), first: 1, last: status.lastLSN, firstAllowed: 1, "reopen"))
        #expect(status.lastLSN == model.acknowledged)
        try await wal.close()
    }

    @Test func fullDiskAtSegmentPreparationRecoversAfterTruncation() async throws {
        let io = SimulatedFileIO()
        let segment = 2048
        var options = smallOptions("/wal", io: io, segmentBytes: segment)
        options.preallocate = true
        io.setCapacity(2 * segment)
        let wal = try await WAL.open(options)
        var failure: WALError?
        for _ in 0..<100 {
            do { try await wal.append(bytes(150, 5)) } catch let error as WALError {
                failure = error
                break
            }
        }
        #expect(isNoSpace(failure), "\(String(describing: failure))")
        let last = wal.lastLSN
        #expect(try await wal.truncate(before: last + 1) > 1)  // deletes the first segment
        #expect(try await wal.append(bytes(150, 6)) == last + 1)
        try await wal.close()
    }

    /// The next segment is prepared in the background; if that attempt met a full disk and
    /// space was freed since, the rotation must not fail with the old error.
    @Test func staleBackgroundPreparationFailureDoesNotFailRotation() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 2048))
        options.preallocate = true
        io.setCapacity(2048 + 10)  // the first segment fits, the prepared next one does not
        let wal = try await WAL.open(options)
        while io.noSpaceFailures == 0 { await Task.yield() }  // the background preparation has failed
        io.setCapacity(nil)
        for lsn in LSN(1)...30 {
            #expect(try await wal.append(bytes(100, 1)) == lsn)
        }
        #expect(wal.status.segments == 2)
        try await wal.close()
    }

    /// Without preallocation the prepared segment is empty, so writing its header at rotation
    /// grows a file: on a full disk that is ENOSPC for the append, not a failed log.
    @Test func fullDiskAtRotationHeaderIsNoSpaceNotFailure() async throws {
        let io = SimulatedFileIO()
        var options = quiet(smallOptions("/wal", io: io, segmentBytes: 2048))
        options.preallocate = false
        var wal = try await WAL.open(options)
        var model = LogModel()
        while wal.status.bytes < 1900 {
            let payload = bytes(100, 1)
            model.record(first: try await wal.append(payload), [payload])
        }
        model.acknowledged = wal.lastLSN
        io.setCapacity(io.usedBytes + 10)  // not even a segment header fits
        let error = await walError { try await wal.append(bytes(200, 2)) }
        #expect(isNoSpace(error), "\(String(describing: error))")
        #expect(wal.status.failure == nil)
        #expect(wal.status.segments == 1)
        io.setCapacity(nil)
        let payload = bytes(200, 3)
        #expect(try await wal.append(payload) == model.acknowledged + 1)
        model.record(first: model.acknowledged + 1, [payload])
        model.acknowledged += 1
        #expect(wal.status.segments == 2)
        try await wal.close()
        wal = try await WAL.open(options)
        let status = wal.status
        #expect(model.check(try await readAll(wal), first: 1, last: status.lastLSN, firstAllowed: 1, "reopen"))
        #expect(status.lastLSN == model.acknowledged)
        try await wal.close()
    }

    /// A failed append must not come back after a crash: whatever part of the batch reached the
    /// file before ENOSPC must not survive a power cut as valid records.
    @Test func failedBatchDoesNotReappearAfterPowerCut() async throws {
        for seed in UInt64(1)...60 {
            let io = SimulatedFileIO()
            var options = quiet(smallOptions("/wal", io: io, segmentBytes: 8192))
            options.preallocate = false
            let wal = try await WAL.open(options)
            var model = LogModel()
            let first = bytes(40, 1)
            model.record(first: try await wal.append(first), [first])
            model.acknowledged = 1
            io.setCapacity(io.usedBytes + 150)  // two of the three 66-byte frames fit
            #expect(isNoSpace(await walError { try await wal.append(contentsOf: [bytes(50, 2), bytes(50, 3), bytes(50, 4)]) }))
            io.setCapacity(nil)
            var rng = SplitMix64(seed: seed)
            let survivor = io.powerCut(using: &rng)
            try await wal.close()
            try await PowerCutTests.checkSurvivor(survivor, options: options, model: model, firstAllowed: 1, "cut seed \(seed)")
        }
    }
}

@Suite struct RefusedCallTests {
    @Test func recordOverTheLimitIsRefusedAndNothingIsWritten() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io, segmentBytes: 8192)  // maxRecordBytes 1024
        let wal = try await WAL.open(options)
        try await wal.append([1], durability: .buffered)
        let path = "/wal/" + SegmentName.make(prefix: "wal-", firstLSN: 1)
        let before = io.contents(of: path)
        #expect(await walError { try await wal.append(bytes(1025, 9)) } == .recordTooLarge(size: 1025, limit: 1024))
        // One oversized record refuses the whole batch, including the records before it.
        #expect(await walError { try await wal.append(contentsOf: [[2], bytes(2000, 9), [3]]) }
            == .recordTooLarge(size: 2000, limit: 1024))
        #expect(io.contents(of: path) == before)
        #expect(wal.lastLSN == 1)
        #expect(try await wal.append(bytes(1024, 8)) == 2)  // exactly the limit is fine
        #expect(try await readAll(wal).map(\.payload.count) == [1, 1024])
        try await wal.close()
    }

    @Test func emptyBatchIsRefused() async throws {
        let wal = try await WAL.open(smallOptions("/wal", io: SimulatedFileIO()))
        #expect(await walError { try await wal.append(contentsOf: [[UInt8]]()) } == .emptyBatch)
        #expect(await walError { try await wal.append(contentsOf: [[UInt8]](), durability: .buffered) } == .emptyBatch)
        #expect(wal.lastLSN == 0)
        #expect(try await wal.append([]) == 1)  // an empty record is not an empty batch
        try await wal.close()
    }

    @Test func secondOpenOfTheSameDirectoryIsLocked() async throws {
        let dir = TempDirectory()
        defer { dir.cleanup() }
        let wal = try await WAL.open(smallOptions(dir.path))
        #expect(await walError { try await WAL.open(smallOptions(dir.path)) } == .locked(directory: dir.path))
        try await wal.append([1])
        try await wal.close()
        // Closing releases the lock.
        let again = try await WAL.open(smallOptions(dir.path))
        #expect(again.lastLSN == 1)
        try await again.close()
    }

    @Test func callsAfterCloseFailWithClosed() async throws {
        let wal = try await WAL.open(smallOptions("/wal", io: SimulatedFileIO()))
        try await wal.close()
        #expect(await walError { try await wal.append([1]) } == .closed)
        #expect(await walError { try await wal.sync() } == .closed)
        #expect(await walError { try wal.reader(from: 0) } == .closed)
    }
}
