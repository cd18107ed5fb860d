// Group commit under concurrency: many durable appenders share fdatasyncs, every one is
// acknowledged with a dense LSN, rotation during syncs releases the old segment's descriptor,
// and the flush interval and probe drive syncs on their own.
import Dispatch
import Foundation
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
        let idle = io.openHandleCount  // LOCK, the active segment, the prepared one
        #expect(idle == 3)
        stall.arm(path: "/wal/" + SegmentName.make(prefix: "wal-", firstLSN: 1))
        let durable = Task { try await wal.append([1]) }
        await stall.waitUntilStalled()
        // Rotate while that sync is still running.
        while await wal.status.segments == 1 { try await wal.append(bytes(500, 2), durability: .buffered) }
        stall.resume()
        #expect(try await durable.value == 2)
        _ = try await wal.probe()  // a later sync completes: whatever it retired is closed by now
        #expect(io.openHandleCount == idle, "the retired segment handle is still open")
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
