// Group commit under concurrency: many durable appenders share fdatasyncs, every one is
// acknowledged with a dense LSN, rotation during syncs releases the old segment's descriptor,
// and the flush interval and probe drive syncs on their own. The leader path (a lone waiter
// syncs itself) covers, hands over, fails and stops like the sync thread.
import Dispatch
import Foundation
import Logging
import Synchronization
import Testing
@testable import WALCore

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
        let status = await wal.status
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
        let segments = await wal.status.segments
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
        private let state = Mutex(State())
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

    /// Deterministic version: the group-commit sync of segment 1 is held inside fdatasync while
    /// the writer rotates to segment 2, so segment 1's handle is retired, and must be closed once
    /// that sync returns.
    @Test func handleRetiredDuringASyncIsClosedWhenTheSyncEnds() async throws {
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
        // Rotate while that sync is still running.
        while await wal.status.segments == 1 { try await wal.append(bytes(500, 2), durability: .buffered) }
        stall.resume()
        #expect(try await durable.value == 2)
        _ = try await wal.probe()  // a later sync completes: whatever it retired is closed by now
        #expect(!io.openHandlePaths.contains(first), "the retired segment handle is still open")
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
        let before = await wal.status.syncStats.syncs
        #expect(try await wal.probe() == 1)
        #expect(await wal.status.syncStats.syncs == before + 1)
        io.failSync()
        #expect(isFailed(await walError { try await wal.probe() }))
        try await wal.close()
    }
}

/// Runs jobs on a dedicated thread, so a test's "leader" can block inside a stalled fdatasync
/// without taking one of the few cooperative-pool threads.
final class DedicatedThreadExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "wald.tests.leader")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

final class SyncCount: Sendable {
    let value = Mutex(0)
}

/// The leader path of group commit: a waiter that finds no sync in flight runs fdatasync
/// itself. Each test drives a GroupCommit directly, with its own leader slot so no other
/// test's log can take the leadership away.
@Suite struct GroupCommitLeaderTests {
    let io = SimulatedFileIO()
    let path = "/g/segment"
    let commit: GroupCommit
    let stall = GroupCommitTests.SyncStall()
    let syncCalls = SyncCount()
    let executor = DedicatedThreadExecutor()

    init() throws {
        try io.createDirectory("/g")
        let handle = try io.open(path, mode: .createExclusive)
        try io.write(handle, [UInt8](repeating: 7, count: 64), at: 0, path: path)
        commit = GroupCommit(io: io, target: .init(handle: handle, path: path), durable: 0,
                             logger: Logger(label: "wal-test") { _ in SwiftLogNoOpLogHandler() },
                             slowSyncThreshold: .seconds(60), leaderSlot: LeaderSlot())
        io.setSyncPathHook { [stall, syncCalls] path in
            syncCalls.value.withLock { $0 += 1 }
            stall.hook(path)
        }
    }

    /// Starts a leader for `lsn` and returns once it is stalled inside its fdatasync.
    func stalledLeader(_ lsn: LSN) async -> Task<LSN, any Error> {
        stall.arm(path: path)
        let leader = Task(executorPreference: executor) { [commit] in try await commit.waitDurable(lsn) }
        await stall.waitUntilStalled()
        return leader
    }

    func parked(_ lsns: [LSN]) async -> [Task<LSN, any Error>] {
        let tasks = lsns.map { lsn in Task { [commit] in try await commit.waitDurable(lsn) } }
        while commit.parkedWaiters < lsns.count { await Task.yield() }
        return tasks
    }

    @Test func aLoneWaiterSyncsItselfWithoutTheSyncThread() async throws {
        commit.didWrite(upTo: 3)
        #expect(try await commit.waitDurable(3) == 3)
        #expect(commit.leaderSyncs == 1)
        #expect(commit.stats.syncs == 1)
        #expect(commit.stats.recordsSynced == 3)
        commit.stop()
        #expect(io.openHandleCount == 0)
    }

    @Test func theLeadersSyncResumesEveryWaiterItCovers() async throws {
        commit.didWrite(upTo: 10)
        let leader = await stalledLeader(10)
        let watcher = Task { [commit] in try await commit.waitForDurable(beyond: 0) }
        let waiters = await parked([3, 7, 10])
        stall.resume()
        #expect(try await leader.value == 10)
        for waiter in waiters { #expect(try await waiter.value == 10) }
        #expect(try await watcher.value == 10)
        // One fdatasync covered all of them; nothing was left for the sync thread.
        #expect(commit.stats.syncs == 1)
        #expect(commit.leaderSyncs == 1)
        #expect(syncCalls.value.withLock { $0 } == 1)
        commit.stop()
    }

    @Test func waitersBeyondTheLeadersSyncAreServedByTheSyncThread() async throws {
        commit.didWrite(upTo: 5)
        let leader = await stalledLeader(5)
        commit.didWrite(upTo: 9)  // written after the leader's sync started: not covered by it
        let waiters = await parked([4, 9])
        stall.resume()
        #expect(try await leader.value == 5)
        #expect(try await waiters[0].value >= 5)
        #expect(try await waiters[1].value == 9)
        #expect(commit.stats.syncs == 2)
        #expect(commit.leaderSyncs == 1)
        // The thread handed the path back: the next lone waiter leads again.
        commit.didWrite(upTo: 10)
        #expect(try await commit.waitDurable(10) == 10)
        #expect(commit.leaderSyncs == 2)
        commit.stop()
    }

    @Test func aFailedLeaderSyncFailsEveryWaiterAndIsNeverRetried() async throws {
        commit.didWrite(upTo: 10)
        io.failSync()
        let leader = await stalledLeader(10)
        commit.didWrite(upTo: 12)
        let waiters = await parked([3, 10, 12])
        let watcher = Task { [commit] in try await commit.waitForDurable(beyond: 0) }
        stall.resume()
        #expect(isFailed(await walError { try await leader.value }))
        for waiter in waiters { #expect(isFailed(await walError { try await waiter.value })) }
        #expect(isFailed(await walError { try await watcher.value }))
        #expect(commit.failure != nil)
        #expect(commit.durableLSN == 0)
        // Later waiters fail at once; no second fdatasync is attempted.
        #expect(isFailed(await walError { try await commit.waitDurable(12) }))
        #expect(isFailed(await walError { try await commit.probe() }))
        commit.requestSync()
        #expect(syncCalls.value.withLock { $0 } == 1)
        commit.stop()
        #expect(syncCalls.value.withLock { $0 } == 1)
        #expect(io.openHandleCount == 0)
    }

    @Test func stopWaitsForARunningLeader() async throws {
        commit.didWrite(upTo: 2)
        let leader = await stalledLeader(2)
        let stopped = Task.detached { [commit] in commit.stop() }
        stall.resume()
        await stopped.value
        #expect(try await leader.value == 2)
        #expect(io.openHandleCount == 0)
        #expect(await walError { try await commit.waitDurable(3) } == .closed)
    }
}
