// The background scrub (`WALOptions.scrubInterval`): every interval (the first pass at most 10
// minutes after open), one pass reads every sealed
// segment through SegmentScanner — the same checks as `walctl verify` — at no more than
// `scrubBytesPerSecond`, on its own queue `wald.wal.scrub` (never the event loop, never the
// sync thread; it only reads, through its own file handles). Damage goes to the DamageLog.
import CoreMetrics
import Dispatch
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
import WALSync
#endif

/// How far scrubbing has got, for INFO.
public struct ScrubStatus: Sendable, Equatable {
    public var interval: Duration = .zero
    public var passes = 0
    /// Bytes read by scrub passes since open.
    public var bytes = 0
    public var running = false
}

final class Scrubber: Sendable {
    private struct State {
        var interval: Duration
        var rate: Int
        var timer: Timer?
        var stopped = false
        var status = ScrubStatus()
    }

    private struct Timer: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated; only touched under `state`.
        let source: any DispatchSourceTimer
    }

    private let queue = DispatchQueue(label: "wald.wal.scrub", qos: .background)
    private let state: WALMutex<State>
    private let budget: ReadBudget
    private let io: any FileIO
    private let directory: String
    private let catalog: SegmentCatalog
    private let damage: DamageLog
    private let logger: Logger
    private let scrubbedBytes = Counter(label: "wald_scrubbed_bytes_total")
    private let passes = Counter(label: "wald_scrub_passes_total")

    init(options: WALOptions, catalog: SegmentCatalog, damage: DamageLog) {
        state = WALMutex(State(interval: options.scrubInterval, rate: options.scrubBytesPerSecond))
        budget = ReadBudget(bytesPerSecond: options.scrubBytesPerSecond)
        io = ThrottledFileIO(base: options.io, budget: budget)
        directory = options.directory
        self.catalog = catalog
        self.damage = damage
        logger = options.logger
    }

    /// The first pass after open waits at most this long: a wald restarted more often than its
    /// interval (a daily scrub, a deploy every few hours) would otherwise never scrub.
    static let firstPassDelay: Duration = .seconds(600)

    /// Arms the next pass one interval from now (none when the interval is zero or stopped);
    /// the first, `min(interval, firstPassDelay)` from now.
    func schedule(first: Bool = false) {
        state.withLock { s in
            s.timer?.source.cancel()
            s.timer = nil
            s.status.interval = s.interval
            guard s.interval > .zero, !s.stopped else { return }
            let delay = first ? min(s.interval, Self.firstPassDelay) : s.interval
            let nanos = Int(clamping: delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
            let source = DispatchSource.makeTimerSource(queue: queue)
            source.schedule(deadline: .now() + .nanoseconds(nanos))
            source.setEventHandler { [self] in
                pass()
                schedule()
            }
            source.resume()
            s.timer = Timer(source: source)
        }
    }

    /// New interval and rate (a reload); the next pass is one new interval away.
    func update(interval: Duration, bytesPerSecond: Int) {
        let changed = state.withLock { s -> Bool in
            defer { (s.interval, s.rate) = (interval, bytesPerSecond) }
            return s.interval != interval
        }
        budget.setRate(bytesPerSecond)
        if changed { schedule() }
    }

    /// Ends scrubbing: a pass under way stops at its next read; returns once it has.
    func stop() {
        state.withLock { s in
            s.stopped = true
            s.timer?.source.cancel()
            s.timer = nil
        }
        budget.stop()
        queue.sync {}
    }

    var status: ScrubStatus { state.withLock { $0.status } }

    /// One pass over the sealed segments, on the scrub queue.
    private func pass() {
        let segments = catalog.segments
        guard segments.count > 1 else { return }
        state.withLock { $0.status.running = true }
        defer { state.withLock { $0.status.running = false } }
        let started = ContinuousClock.now
        var bytes = 0
        var found = 0
        for (index, segment) in segments.dropLast().enumerated() {
            let path = joinPath(directory, segment.name)
            do {
                let scan = try SegmentScanner.scan(io: io, path: path, maxPayload: Int(UInt32.max))
                bytes += scan.fileSize
                scrubbedBytes.increment(by: Int64(scan.fileSize))
                state.withLock { $0.status.bytes += scan.fileSize }
                // Retention may have dropped it meanwhile: then its state no longer matters.
                guard catalog.segments.contains(segment) else { continue }
                if let problem = scan.damage {
                    found += 1
                    damage.report(.corruption(file: path, offset: problem.offset, lsn: problem.expectedLSN, reason: problem.reason),
                                  foundBy: "scrub")
                } else if scan.lastLSN != segments[index + 1].firstLSN - 1 {
                    found += 1
                    damage.report(.corruption(file: path, offset: scan.endOffset, lsn: scan.lastLSN + 1,
                                              reason: "segment ends at LSN \(scan.lastLSN) but the next one starts at \(segments[index + 1].firstLSN)"),
                                  foundBy: "scrub")
                }
            } catch WALError.corruption(let file, let offset, _, let reason) {
                found += 1
                damage.report(.corruption(file: file, offset: offset, lsn: segment.firstLSN, reason: reason), foundBy: "scrub")
            } catch is ReadBudget.Stopped {
                return
            } catch let error as IOError where error.isNotFound {
                continue  // deleted by retention before the scrub reached it
            } catch {
                logger.warning("scrub could not read a segment", metadata: ["file": "\(path)", "error": "\(error)"])
            }
        }
        passes.increment()
        state.withLock { $0.status.passes += 1 }
        let elapsed = ContinuousClock.now - started
        logger.info("scrub pass done", metadata: [
            "segments": "\(segments.count - 1)", "bytes": "\(bytes)", "damaged": "\(found)",
            "seconds": "\(elapsed.components.seconds)",
        ])
    }
}

/// A token bucket for scrub reads: after each read, sleeps as long as it takes for the bytes
/// read so far to fit `bytesPerSecond`; throws `Stopped` once `stop()` was called.
final class ReadBudget: Sendable {
    struct Stopped: Error {}

    private struct State {
        var rate: Int
        var windowStart = ContinuousClock.now
        var bytes = 0
        var stopped = false
    }

    private let state: WALMutex<State>

    init(bytesPerSecond: Int) { state = WALMutex(State(rate: bytesPerSecond)) }

    func setRate(_ bytesPerSecond: Int) {
        state.withLock { s in
            s.rate = bytesPerSecond
            s.windowStart = .now
            s.bytes = 0
        }
    }

    func stop() { state.withLock { $0.stopped = true } }

    func spend(_ count: Int) throws {
        var wait = try state.withLock { s -> Duration in
            if s.stopped { throw Stopped() }
            let now = ContinuousClock.now
            var due = s.windowStart + .nanoseconds(Int64(Double(s.bytes) / Double(s.rate) * 1e9))
            // Caught up and idle for a while: start a fresh window (idle time is not saved up).
            if due <= now && now - s.windowStart > .seconds(1) {
                s.windowStart = now
                s.bytes = 0
            }
            s.bytes += count
            due = s.windowStart + .nanoseconds(Int64(Double(s.bytes) / Double(s.rate) * 1e9))
            return due > now ? due - now : .zero
        }
        // Sleep in slices, so that stop() ends a pass quickly.
        while wait > .zero {
            let slice = min(wait, .milliseconds(100))
            usleep(UInt32(slice.components.seconds * 1_000_000 + slice.components.attoseconds / 1_000_000_000_000))
            wait -= slice
            if state.withLock({ $0.stopped }) { throw Stopped() }
        }
    }
}

/// The file system as the scrub sees it: every read pays into a ReadBudget.
struct ThrottledFileIO: FileIOLayer {
    let base: any FileIO
    let budget: ReadBudget

    func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        let n = try base.read(handle, into: buffer, at: offset, path: path)
        try budget.spend(n)
        return n
    }
}
