// The list of segment files and the holds on them, shared between the writer (which adds
// and deletes segments) and readers (which look up where an LSN lives).
import Synchronization
import WALSync

/// One segment file of the log.
public struct SegmentInfo: Equatable, Sendable {
    public let firstLSN: LSN
    public let name: String
}

final class SegmentCatalog: Sendable {
    private struct State {
        var logID: LogID
        var generation: UInt32
        var segments: [SegmentInfo] = []
        var holds: [Int: LSN] = [:]
        var nextHoldID = 1
    }

    private let state: WALMutex<State>

    init(logID: LogID, generation: UInt32, segments: [SegmentInfo]) {
        state = WALMutex(State(logID: logID, generation: generation, segments: segments))
    }

    /// The log's identity (changes only when an empty follower adopts its primary's).
    var logID: LogID { state.withLock { $0.logID } }

    /// The log's generation (docs/format.md): raised by a repair that cut records.
    var generation: UInt32 { state.withLock { $0.generation } }

    /// Replaces the whole list and identity (adopting an identity on an empty log).
    func reset(logID: LogID, generation: UInt32, segments: [SegmentInfo]) {
        state.withLock {
            $0.logID = logID
            $0.generation = generation
            $0.segments = segments
        }
    }

    var segments: [SegmentInfo] { state.withLock { $0.segments } }

    /// First LSN still on disk (the oldest segment's first LSN).
    var firstLSN: LSN { state.withLock { $0.segments.first?.firstLSN ?? 1 } }

    /// The segment that holds `lsn`, and the first LSN of the segment after it (nil for the last).
    func segment(containing lsn: LSN) -> (segment: SegmentInfo, nextFirstLSN: LSN?)? {
        state.withLock { s in
            guard let index = s.segments.lastIndex(where: { $0.firstLSN <= lsn }) else { return nil }
            let next = index + 1 < s.segments.count ? s.segments[index + 1].firstLSN : nil
            return (s.segments[index], next)
        }
    }

    func append(_ segment: SegmentInfo) {
        state.withLock { $0.segments.append(segment) }
    }

    func removeFirst(_ count: Int) {
        state.withLock { $0.segments.removeFirst(count) }
    }

    // MARK: Holds

    /// The lowest LSN any hold protects, or nil.
    var lowestHold: LSN? { state.withLock { $0.holds.values.min() } }

    func addHold(from lsn: LSN) -> Int {
        state.withLock { s in
            let id = s.nextHoldID
            s.nextHoldID += 1
            s.holds[id] = lsn
            return id
        }
    }

    func moveHold(_ id: Int, to lsn: LSN) {
        state.withLock { s in if s.holds[id] != nil { s.holds[id] = lsn } }
    }

    func removeHold(_ id: Int) {
        state.withLock { _ = $0.holds.removeValue(forKey: id) }
    }
}

/// Keeps the segments holding LSNs at or after `lsn` from being deleted by retention or
/// `truncate(before:)` until released (or deinitialised). Followers and long replays take one.
public final class SegmentHold: Sendable {
    private let catalog: SegmentCatalog
    private let id: Int

    init(catalog: SegmentCatalog, lsn: LSN) {
        self.catalog = catalog
        id = catalog.addHold(from: lsn)
    }

    /// Moves the hold forward (or back) to `lsn`.
    public func move(to lsn: LSN) { catalog.moveHold(id, to: lsn) }

    /// Releases the hold; further calls do nothing.
    public func release() { catalog.removeHold(id) }

    deinit { catalog.removeHold(id) }
}
