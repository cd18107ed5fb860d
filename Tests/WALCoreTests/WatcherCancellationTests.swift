// A tail watcher (`waitForDurable(beyond:)`) cancelled at the moment a sync wakes it.
// Cancelling holds the task's status lock while the cancellation handler takes the writer's
// lock; resuming a continuation takes the status lock. Resuming watchers while holding the lock
// therefore deadlocked against a cancel (found by the TSan run: a
// connection closing while its follow stream was being woken hung wald for good).
import Dispatch
import Glibc
import Synchronization
import Testing
@testable import WALCore

/// Runs jobs on a dedicated thread, so a test's busy tasks do not take one of the few
/// cooperative-pool threads.
final class DedicatedThreadExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "wald.tests.dedicated")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

@Suite struct WatcherCancellationTests {
    final class Shared: Sendable {
        let lastAcked = Atomic<UInt64>(0)
        let stop = Atomic<Bool>(false)
    }

    @Test func cancellingWatchersWhileSyncsWakeThemNeverDeadlocks() async throws {
        let wal = try await WAL.open(quiet(smallOptions("/wal", io: SimulatedFileIO(), segmentBytes: 1 << 20)))
        let shared = Shared()
        // Durable appends, one at a time: every sync wakes the watchers parked below its LSN.
        // Appender and watchers run on their own threads: thousands of short tasks on the
        // cooperative pool would starve every other suite running in parallel.
        let appendThread = DedicatedThreadExecutor(), watcherThread = DedicatedThreadExecutor()
        let appender = Task.detached(executorPreference: appendThread) { [wal] in
            while !shared.stop.load(ordering: .relaxed) {
                let lsn = try await wal.append([1, 2, 3])
                shared.lastAcked.store(lsn, ordering: .relaxed)
            }
        }
        // Cancels from plain threads, outside the cooperative pool, so a deadlock here leaves
        // the pool free to notice it and fail the test instead of hanging the run.
        #if WALD_TSAN
        let rounds = 500  // TSan makes a round ~8x slower; there it checks the accesses, not the odds.
        #else
        let rounds = 5000  // The unfixed code deadlocked in every run of this (9 of 9).
        #endif
        let finished = DispatchSemaphore(value: 0)
        let cancellers = 2
        for canceller in 0..<cancellers {
            DispatchQueue(label: "wald.tests.canceller.\(canceller)").async { [wal] in
                var rng = SplitMix64(seed: UInt64(canceller))
                for _ in 0..<rounds {
                    let beyond = shared.lastAcked.load(ordering: .relaxed)
                    let watcher = Task.detached(executorPreference: watcherThread) {
                        try await wal.waitForDurable(beyond: beyond)
                    }
                    // Cancel at a random point: before it parks, while it parks, or as a sync wakes it.
                    usleep(UInt32(rng.next() % 50))  // sleeps, not spins: the parallel suites need the cores
                    watcher.cancel()
                }
                finished.signal()
            }
        }
        // A deadlock also blocks the cooperative pool (new watchers wait for the stuck lock), so
        // no test code could report it: a plain thread ends the process with a message instead.
        let deadline = DispatchTime.now() + 120
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue(label: "wald.tests.deadline").async {
                for _ in 0..<cancellers where finished.wait(timeout: deadline) == .timedOut {
                    fatalError("a watcher's cancel and a sync deadlocked: the cancellers did not finish in 120 s")
                }
                continuation.resume()
            }
        }
        shared.stop.store(true, ordering: .relaxed)
        try await appender.value
        #expect(shared.lastAcked.load(ordering: .relaxed) > 0)
        try await wal.close()
    }
}
