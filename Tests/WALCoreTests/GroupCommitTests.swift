// Group commit under concurrency: many durable appenders share fdatasyncs, every one is
// acknowledged with a dense LSN, a rotation queues behind the sync in flight and closes the old
// segment's descriptor, and the flush interval and probe drive syncs on their own. The sync
// thread on its own: what one sync covers, job order, a failure reported once.
import Dispatch
import Foundation
import Logging
import Synchronization
import Testing
@testable import WALCore
import WALSync

@Suite struct GroupCommitTests {
    @Test func concurrentDurableAppendsGetDenseLSNsAndAllSurvive() async throws {
        let io = SimulatedFileIO()
        let options = smallOptions("/wal", io: io, segmentBytes: 4096)
        var wal = try await WAL.open(options)
        let tasks = 8, perTask = 40
        let acked = try await withThrowingTaskGroup(of: [(LSN, [UInt8])].self) { group in
            for task in 0..<tasks {
                group.addTask { [wal] in
                    var done: [(LSN, [UInt8])] = []
                    for i in 0..<perTask {
                        let bytes = Array("task \(task) record \(i)".utf8)
                        done.append((try await wal.append(bytes), bytes))
                    }
                    return done
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(acked.map(\.0).sorted() == Array(1...LSN(tasks * perTask)))
        let status = wal.status
        #expect(status.durableLSN == LSN(tasks * perTask))
        #expect(status.syncStats.recordsSynced == UInt64(tasks * perTask))
        try await wal.close()
        // No close-time sync needed them: everything acknowledged was already on disk.
        var rng = SplitMix64(seed: 1)
        let survivor = io.powerCut(using: &rng)
        var reopened = options
        reopened.io = survivor
        wal = try await WAL.open(reopened)
        let records = try await readAll(wal)
        #expect(records.count == tasks * perTask)
        let byLSN = Dictionary(uniqueKeysWithValues: acked)
        #expect(records.allSatisfy { byLSN[$0.lsn] == $0.payload })
        try await wal.close()
    }

    /// Descriptors this process holds on files in `directory` (Linux /proc).
    static func openDescriptors(in directory: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd))?.hasPrefix(directory + "/") ?? false
        }.count
    }

    /// A rotation while a sync is in flight retires the old segment's descriptor until the sync
    /// ends; it must then be closed, not kept until the log closes.
    @Test func rotationDuringSyncsDoesNotLeakDescriptors() async throws {
        let dir = TempDirectory("fds")
        defer { dir.cleanup() }
        let wal = try await WAL.open(smallOptions(dir.path, segmentBytes: 2048))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<4 {
                group.addTask { [wal] in
                    for i in 0..<150 { try await wal.append(payload(UInt64(task * 1000 + i), size: 60)) }
                }
            }
            try await group.waitForAll()
        }
        let segments = wal.status.segments
        #expect(segments > 20)
        _ = try await wal.probe()
        // LOCK, the active segment, the prepared next one, and at most one in a sync's hands.
        let open = Self.openDescriptors(in: dir.path)
        #expect(open <= 4, "\(open) descriptors open on \(segments) segments")
        try await wal.close()
        #expect(Self.openDescriptors(in: dir.path) == 0)
    }

    /// Stalls the first fdatasync of one file until released, and tells the test when it stalled.
    final class SyncStall: Sendable {
        private struct State {
            var path: String?
            var stalled = false
            var waiter: CheckedContinuation<Void, Never>?
        }
        private let state = WALMutex(State())
        private let release = DispatchSemaphore(value: 0)

        func arm(path: String) { state.withLock { $0.path = path } }

        /// The sync hook: runs on the syncing thread.
        func hook(_ path: String) {
            let stall = state.withLock { s -> Bool in
                guard s.path == path else { return false }
                s.path = nil
                s.stalled = true
                s.waiter?.resume()
                s.waiter = nil
                return true
            }
            if stall { release.wait() }
        }

        func waitUntilStalled() async {
            await withCheckedContinuation { continuation in
                state.withLock { s in
                    if s.stalled { continuation.resume() } else { s.waiter = continuation }
                }
            }
        }

        func resume() { release.signal() }
    }

    /// The sync of segment 1 is held inside fdatasync while a batch that needs segment 2
    /// arrives: the rotation (seal + install) queues behind that sync on the sync thread, the
    /// writer keeps accepting meanwhile, and segment 1's handle is closed by the seal.
    @Test func rotationWaitsForTheSyncInFlightAndClosesTheOldSegment() async throws {
        let io = SimulatedFileIO()
        var options = smallOptions("/wal", io: io, segmentBytes: 2048)
        options.preallocate = false
        let stall = SyncStall()
        io.setSyncPathHook { path in stall.hook(path) }
        defer { io.setSyncPathHook(nil) }
        let wal = try await WAL.open(options)
        try await wal.append([0])
        // By path, not by count: the next segment is prepared in the background, so the
        // number of open handles depends on how far that got.
        let first = "/wal/" + SegmentName.make(prefix: "wal-", firstLSN: 1)
        #expect(io.openHandlePaths.filter { $0 == first }.count == 1)
        stall.arm(path: first)
        let durable = Task { try await wal.append([1]) }
        await stall.waitUntilStalled()
        // Needs segment 2 while segment 1's sync is still running: accepted at once.
        // 1948 bytes of frames: more than segment 1 has left, and with LSN 5 (25 bytes) under 2048.
        let big = Task { try await wal.append(contentsOf: [bytes(1000, 2), bytes(900, 3)]) }
        let deadline = ContinuousClock.now + .seconds(10)
        while wal.lastLSN < 4 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        try #require(wal.lastLSN == 4, "the batch was not accepted while the sync was stalled")
        #expect(wal.status.segments == 1)  // the seal waits behind the stalled sync
        // Behind records that wait to be written, a buffered append waits for the pause to end.
        let buffered = Task { try await wal.append([4], durability: .buffered) }
        stall.resume()
        #expect(try await durable.value == 2)
        #expect(try await big.value == 3)
        #expect(try await buffered.value == 5)
        #expect(try await wal.sync() == 5)
        #expect(wal.status.segments == 2)
        #expect(!io.openHandlePaths.contains(first), "the sealed segment's handle is still open")
        try await wal.close()
        #expect(io.openHandleCount == 0)
    }

    @Test func bufferedAppendsBecomeDurableOnTheFlushInterval() async throws {
        var options = smallOptions("/wal", io: SimulatedFileIO())
        options.flushInterval = .milliseconds(1)
        let wal = try await WAL.open(options)
        try await wal.append(contentsOf: [[1], [2]], durability: .buffered)
        // No sync() and no durable append: only the flush timer can make these durable.
        #expect(try await wal.waitForDurable(beyond: 1) == 2)
        try await wal.close()
    }

    @Test func probeSyncsEvenWithNothingNew() async throws {
        let io = SimulatedFileIO()
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: io)))
        try await wal.append([1])
        let before = wal.status.syncStats.syncs
        #expect(try await wal.probe() == 1)
        #expect(wal.status.syncStats.syncs == before + 1)
        io.failSync()
        #expect(isFailed(await walError { try await wal.probe() }))
        try await wal.close()
    }
}

final class SyncCount: Sendable {
    let value = WALMutex(0)
}

/// Completions the sync thread delivered, in order, for a test to wait on.
final class Deliveries: Sendable {
    private let state = WALMutex<(seen: [GroupCommit.Completion], waiter: (Int, CheckedContinuation<Void, Never>)?)>(([], nil))

    func deliver(_ completion: GroupCommit.Completion) {
        let resume = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.seen.append(completion)
            guard let (count, waiter) = s.waiter, s.seen.count >= count else { return nil }
            s.waiter = nil
            return waiter
        }
        resume?.resume()
    }

    /// Waits until `count` completions arrived; returns them all.
    func wait(for count: Int) async -> [GroupCommit.Completion] {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                if s.seen.count >= count { return true }
                s.waiter = (count, continuation)
                return false
            }
            if now { continuation.resume() }
        }
        return state.withLock { $0.seen }
    }
}

/// The sync thread on its own: one fdatasync covers everything written before it started,
/// records written during a sync get the next one, jobs run in order, a failed sync is
/// reported once and never retried.
@Suite struct GroupCommitThreadTests {
    let io = SimulatedFileIO()
    let path = "/g/segment"
    let commit: GroupCommit
    let stall = GroupCommitTests.SyncStall()
    let syncCalls = SyncCount()
    let deliveries = Deliveries()

    init() throws {
        try io.createDirectory("/g")
        let handle = try io.open(path, mode: .createExclusive)
        try io.write(handle, [UInt8](repeating: 7, count: 64), at: 0, path: path)
        let deliveries = self.deliveries
        commit = GroupCommit(io: io, target: .init(handle: handle, path: path), durable: 0,
                             logger: Logger(label: "wal-test") { _ in SwiftLogNoOpLogHandler() },
                             slowSyncThreshold: .seconds(60), deliver: { deliveries.deliver($0) })
        io.setSyncPathHook { [stall, syncCalls] path in
            syncCalls.value.withLock { $0 += 1 }
            stall.hook(path)
        }
    }

    func syncedThrough(_ completions: [GroupCommit.Completion]) -> [LSN] {
        completions.compactMap { if case .synced(let lsn) = $0 { lsn } else { nil } }
    }

    @Test func oneSyncCoversEverythingWrittenBeforeItStarted() async throws {
        commit.wrote(through: 2, sync: false)
        commit.wrote(through: 3, sync: true)
        #expect(syncedThrough(await deliveries.wait(for: 1)) == [3])
        #expect(commit.stats.syncs == 1)
        #expect(commit.stats.recordsSynced == 3)
        commit.stop()
    }

    @Test func recordsWrittenDuringASyncGetTheNextOne() async throws {
        stall.arm(path: path)
        commit.wrote(through: 5, sync: true)
        await stall.waitUntilStalled()
        commit.wrote(through: 7, sync: true)
        commit.wrote(through: 9, sync: true)
        stall.resume()
        #expect(syncedThrough(await deliveries.wait(for: 2)) == [5, 9])
        #expect(syncCalls.value.withLock { $0 } == 2)
        commit.stop()
    }

    @Test func writesNobodyWaitsForAreNotSyncedUntilAsked() async throws {
        commit.wrote(through: 4, sync: false)
        try await Task.sleep(for: .milliseconds(50))
        #expect(syncCalls.value.withLock { $0 } == 0)
        commit.requestSync()
        #expect(syncedThrough(await deliveries.wait(for: 1)) == [4])
        commit.stop()
    }

    @Test func jobsRunInOrderWithTheSyncs() async throws {
        stall.arm(path: path)
        commit.wrote(through: 1, sync: true)
        await stall.waitUntilStalled()
        let order = WALMutex<[String]>([])
        commit.enqueue(token: 7) {
            order.withLock { $0.append("job 7") }
            return .init(completion: .job(token: 7, result: .success(.done)))
        }
        commit.wrote(through: 2, sync: true)
        commit.enqueue(token: 8) {
            order.withLock { $0.append("job 8") }
            return .init(completion: .job(token: 8, result: .success(.synced(through: 2))), syncedThrough: 2)
        }
        stall.resume()
        let completions = await deliveries.wait(for: 3)
        #expect(order.withLock { $0 } == ["job 7", "job 8"])
        // The second job reported LSN 2 durable, so no separate sync ran for it.
        #expect(syncedThrough(completions) == [1])
        #expect(syncCalls.value.withLock { $0 } == 1)
        commit.stop()
    }

    @Test func aFailedSyncIsReportedOnceAndNeverRetried() async throws {
        io.failSync()
        commit.wrote(through: 3, sync: true)
        let completions = await deliveries.wait(for: 1)
        guard case .syncFailed(let error) = completions.first else {
            Issue.record("expected a failed sync, got \(completions)")
            return
        }
        #expect(isFailed(error))
        commit.wrote(through: 5, sync: true)
        commit.requestSync()
        try await Task.sleep(for: .milliseconds(50))
        #expect(syncCalls.value.withLock { $0 } == 1)
        commit.stop()
        #expect(syncCalls.value.withLock { $0 } == 1)
    }

    @Test func stopFinishesTheSyncAskedForFirst() async throws {
        stall.arm(path: path)
        commit.wrote(through: 2, sync: true)
        await stall.waitUntilStalled()
        let stopped = Task.detached { [commit] in commit.stop() }
        stall.resume()
        await stopped.value
        #expect(syncedThrough(await deliveries.wait(for: 1)) == [2])
        #expect(!commit.enqueue(token: 1) { .init(completion: .job(token: 1, result: .success(.done))) })
    }
}
