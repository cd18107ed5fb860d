// Randomized crash trials on the simulated file system: run a seeded mix of appends,
// syncs and truncations, cut the power, reopen what survived, and check that every
// acknowledged record is there, LSNs are dense, nothing was invented, and the log goes on
// without repair. Two crash models: a prefix of the unsynced writes (torn at a sector), and
// unsynced 4 KiB pages kept in any subset and order, each torn at 512-byte sectors. With a
// bit flipped in synced data besides, every acknowledged record reads back exactly or wald
// names the damage; no LSN that was durable ever comes back with another payload.
import Synchronization
import Testing
@testable import WALCore
import WALSync

/// What the test knows about a log: every record ever appended (by LSN) and what the WAL
/// promised was durable.
struct LogModel {
    var appended: [LSN: [UInt8]] = [:]
    /// Highest LSN acknowledged as durable (a durable append's last LSN or a sync's result).
    var acknowledged: LSN = 0

    mutating func record(first: LSN, _ payloads: [[UInt8]]) {
        for (i, payload) in payloads.enumerated() { appended[first + LSN(i)] = payload }
    }

    /// Checks a reopened log: dense from its first LSN, nothing lost below `acknowledged`
    /// (above `firstAllowed`, the first LSN retention or truncation had reached), every record
    /// one that was appended. Returns the last LSN.
    func check(_ records: [Record], first: LSN, last: LSN, firstAllowed: LSN, _ comment: Comment) -> Bool {
        var ok = true
        func fail(_ text: String) {
            Issue.record("\(comment): \(text)")
            ok = false
        }
        if first > firstAllowed { fail("log starts at \(first) but only LSNs below \(firstAllowed) may be gone") }
        if last < acknowledged { fail("last LSN \(last) is below the acknowledged \(acknowledged)") }
        if records.count != Int(last + 1 - first) { fail("\(records.count) records between \(first) and \(last)") }
        for (i, record) in records.enumerated() {
            guard record.lsn == first + LSN(i) else {
                fail("LSN \(record.lsn) at position \(i), expected \(first + LSN(i)) (gap)")
                break
            }
            guard let expected = appended[record.lsn] else {
                fail("record \(record.lsn) was never appended")
                break
            }
            if record.payload != expected {
                fail("record \(record.lsn) has \(record.payload.count) bytes that differ from the appended \(expected.count)")
                break
            }
        }
        return ok
    }
}

/// A random batch: 1–5 records of 0–300 bytes.
func randomBatch<G: RandomNumberGenerator>(_ rng: inout G) -> [[UInt8]] {
    (0..<Int.random(in: 1...5, using: &rng)).map { _ in
        (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }
}

func simulatedOptions<G: RandomNumberGenerator>(_ io: SimulatedFileIO, _ rng: inout G) -> WALOptions {
    var options = smallOptions("/wal", io: io, segmentBytes: Int.random(in: 2048...8192, using: &rng))
    options.preallocate = Bool.random(using: &rng)
    // Sometimes let retention delete segments on its own, so cuts land mid-deletion too.
    options.maxSegments = Int.random(in: 0...3, using: &rng) == 0 ? Int.random(in: 2...4, using: &rng) : 0
    // Trials fail fsyncs and fill the disk on purpose: keep the expected critical logs out.
    return quiet(options)
}

@Suite struct PowerCutTests {
    static let sequentialChunks = 8
    static let trialsPerChunk = 130

    /// 8 × 130 sequential trials: each runs 15–45 operations, cuts the power after the last one
    /// (so whatever was written but not synced is at the mercy of the cut), and checks the survivor.
    @Test(arguments: 0..<sequentialChunks)
    func acknowledgedRecordsSurvivePowerCut(chunk: Int) async throws {
        for trial in 0..<Self.trialsPerChunk {
            let seed = UInt64(0x5EED_0000 + chunk * Self.trialsPerChunk + trial)
            do { try await Self.sequentialTrial(seed: seed) } catch {
                Issue.record(error, "seed \(seed)")
            }
        }
    }

    /// 8 × 130 trials whose cut keeps any subset of the unsynced pages, each whole, missing or
    /// torn at sectors: only unacknowledged data is lost, so the log always opens by itself.
    @Test(arguments: 0..<sequentialChunks)
    func acknowledgedRecordsSurviveAPowerCutThatKeepsPagesInAnyOrder(chunk: Int) async throws {
        for trial in 0..<Self.trialsPerChunk {
            let seed = UInt64(0x9A6E_0000 + chunk * Self.trialsPerChunk + trial)
            do { try await Self.sequentialTrial(seed: seed, model: .pages) } catch {
                Issue.record(error, "seed \(seed)")
            }
        }
    }

    /// 4 × 130 trials with a page-model cut and then one bit flipped anywhere in a segment's
    /// synced bytes: an acknowledged record reads back exactly, or open or the read names the
    /// damage; it is never silently cut or replaced.
    @Test(arguments: 0..<4)
    func bitRotIsReportedNeverCutSilently(chunk: Int) async throws {
        for trial in 0..<Self.trialsPerChunk {
            let seed = UInt64(0xB17_0000 + chunk * Self.trialsPerChunk + trial)
            do { try await Self.sequentialTrial(seed: seed, model: .pages, bitFlip: true) } catch {
                Issue.record(error, "seed \(seed)")
            }
        }
    }

    static func sequentialTrial(seed: UInt64, model crashModel: SimulatedFileIO.CrashModel = .prefix,
                                bitFlip: Bool = false) async throws {
        let comment: Comment = "seed \(seed)"
        var rng = SplitMix64(seed: seed)
        let io = SimulatedFileIO()
        let options = simulatedOptions(io, &rng)
        var model = LogModel()
        var wal = try await WAL.open(options)
        let operations = Int.random(in: 15...45, using: &rng)
        do {
            operations: for _ in 0..<operations {
                switch Int.random(in: 0..<100, using: &rng) {
                case 0..<4:
                    // A full disk for one append: ENOSPC means nothing of the batch is in the log.
                    io.setCapacity(io.usedBytes + Int.random(in: 0...600, using: &rng))
                    let batch = randomBatch(&rng)
                    let durability: Durability = Bool.random(using: &rng) ? .durable : .buffered
                    do {
                        let first = try await wal.append(contentsOf: batch, durability: durability)
                        model.record(first: first, batch)
                        if durability == .durable { model.acknowledged = first + LSN(batch.count) - 1 }
                    } catch WALError.noSpace {
                        #expect(wal.lastLSN == (model.appended.keys.max() ?? 0), comment)
                    }
                    io.setCapacity(nil)
                case 4..<6:
                    // fdatasync fails: the log is failed from here on; the cut decides what survived.
                    io.failSync()
                    let batch = randomBatch(&rng)
                    do {
                        let first = try await wal.append(contentsOf: batch)
                        Issue.record("durable append after a failed fsync succeeded at \(first). \(comment)")
                    } catch WALError.failed {
                        model.record(first: (model.appended.keys.max() ?? 0) + 1, batch)  // may or may not survive
                    }
                    break operations
                case 6..<50:
                    let batch = randomBatch(&rng)
                    let first = try await wal.append(contentsOf: batch)
                    model.record(first: first, batch)
                    model.acknowledged = first + LSN(batch.count) - 1
                case 50..<80:
                    let batch = randomBatch(&rng)
                    let first = try await wal.append(contentsOf: batch, durability: .buffered)
                    model.record(first: first, batch)
                case 80..<90:
                    let durable = try await wal.sync()
                    #expect(durable == (model.appended.keys.max() ?? 0), comment)
                    model.acknowledged = durable
                case 90..<96:
                    let status = wal.status
                    let target = LSN.random(in: status.firstLSN...(status.durableLSN + 1), using: &rng)
                    let first = try await wal.truncate(before: target)
                    #expect(first <= max(target, status.firstLSN), comment)
                default:
                    // A clean restart in the middle: close syncs everything.
                    try await wal.close()
                    model.acknowledged = model.appended.keys.max() ?? 0
                    wal = try await WAL.open(options)
                }
            }
        } catch {
            try? await wal.close()  // an open log would keep its sync thread forever
            throw error
        }
        let firstAllowed = wal.status.firstLSN
        let survivor = io.powerCut(using: &rng, model: crashModel)
        try await wal.close()
        if bitFlip {
            try await checkSurvivorWithBitRot(survivor, options: options, model: model, firstAllowed: firstAllowed, &rng, comment)
        } else {
            try await checkSurvivor(survivor, options: options, model: model, firstAllowed: firstAllowed, comment)
        }
    }

    /// Flips one random bit of a random segment's synced bytes, then: open fails naming
    /// corruption, or reading fails naming it, or every acknowledged record is there intact.
    static func checkSurvivorWithBitRot<G: RandomNumberGenerator>(
        _ survivor: SimulatedFileIO, options: WALOptions, model: LogModel, firstAllowed: LSN, _ rng: inout G,
        _ comment: Comment
    ) async throws {
        let segments = survivor.filePaths.filter { $0.hasSuffix(".wal") }.sorted()
        guard let path = segments.randomElement(using: &rng), let size = survivor.contents(of: path)?.count, size > 0 else { return }
        let offset = Int.random(in: 0..<size, using: &rng)
        survivor.flipBit(path, at: offset, bit: Int.random(in: 0..<8, using: &rng))
        let where_: Comment = "\(comment), bit flipped at byte \(offset) of \(path)"
        var options = options
        options.io = survivor
        let wal: WAL
        do {
            wal = try await WAL.open(options)
        } catch WALError.corruption {
            return  // named: acceptable
        }
        let status = wal.status
        let records: [Record]
        do {
            records = try await readAll(wal)
        } catch WALError.corruption {
            try await wal.close()
            return
        }
        _ = model.check(records, first: status.firstLSN, last: status.lastLSN, firstAllowed: firstAllowed, where_)
        try await wal.close()
    }

    /// Reopens the survivor, checks it against the model, appends once more and checks that the
    /// append survives a clean reopen.
    static func checkSurvivor(
        _ survivor: SimulatedFileIO, options: WALOptions, model: LogModel, firstAllowed: LSN, _ comment: Comment
    ) async throws {
        var options = options
        options.io = survivor
        let report = try verifyLog(directory: options.directory, io: survivor)
        #expect(report.damage == nil, comment)
        var wal = try await WAL.open(options)
        let status = wal.status
        let records = try await readAll(wal)
        guard model.check(records, first: status.firstLSN, last: status.lastLSN, firstAllowed: firstAllowed, comment) else {
            try await wal.close()
            return
        }
        #expect(status.durableLSN == status.lastLSN, comment)
        let extra: [UInt8] = Array("after the cut".utf8)
        #expect(try await wal.append(extra) == status.lastLSN + 1, comment)
        try await wal.close()
        wal = try await WAL.open(options)
        let again = try await readAll(wal)
        // The extra append may rotate and let retention trim the front; the rest is unchanged.
        #expect(again.dropLast().elementsEqual(records.suffix(again.count - 1)), comment)
        #expect(again.last == Record(lsn: status.lastLSN + 1, payload: extra), comment)
        #expect(wal.lastLSN == status.lastLSN + 1, comment)
        try await wal.close()
    }

    /// Cuts the power from inside a random fdatasync while several tasks keep appending, so
    /// the cut lands with writes in flight, mid-rotation or mid-preparation of a segment.
    @Test(arguments: 0..<4)
    func durableRecordsSurvivePowerCutDuringConcurrentAppends(chunk: Int) async throws {
        for trial in 0..<60 {
            let seed = UInt64(0xC0_0000 + chunk * 60 + trial)
            do { try await Self.concurrentTrial(seed: seed) } catch {
                Issue.record(error, "seed \(seed)")
            }
        }
    }

    /// The cut taken by the sync hook: the survivor and the durable LSN just before it.
    final class CutBox: Sendable {
        struct State {
            var wal: WAL?
            var syncsLeft: Int
            var rng: SplitMix64
            var cut: (io: SimulatedFileIO, durable: LSN, first: LSN)?
        }
        let state: WALMutex<State>
        init(syncsLeft: Int, seed: UInt64) { state = WALMutex(State(syncsLeft: syncsLeft, rng: SplitMix64(seed: seed))) }
    }

    static func concurrentTrial(seed: UInt64) async throws {
        let comment: Comment = "seed \(seed)"
        var rng = SplitMix64(seed: seed)
        let io = SimulatedFileIO()
        let options = simulatedOptions(io, &rng)
        let box = CutBox(syncsLeft: Int.random(in: 1...40, using: &rng), seed: rng.next())
        io.setSyncHook { [box, io] in
            box.state.withLock { s in
                guard let wal = s.wal, s.cut == nil else { return }
                s.syncsLeft -= 1
                guard s.syncsLeft == 0 else { return }
                // Durable LSN first: everything it covers is already in the durable state. The
                // first LSN after: segments leave the catalog before they are unlinked, so none
                // the survivor lacks can still be listed then.
                let durable = wal.durableLSN
                let survivor = io.powerCut(using: &s.rng)
                s.cut = (survivor, durable, wal.catalog.firstLSN)
            }
        }
        defer { io.setSyncHook(nil) }
        let wal = try await WAL.open(options)
        box.state.withLock { $0.wal = wal }
        let plans: [(seed: UInt64, operations: Int)] = (0..<3).map { _ in (rng.next(), Int.random(in: 5...15, using: &rng)) }
        let results: [(LSN, [[UInt8]])]
        do {
            results = try await withThrowingTaskGroup(of: [(LSN, [[UInt8]])].self) { group in
                for plan in plans {
                    group.addTask {
                        var rng = SplitMix64(seed: plan.seed)
                        var done: [(LSN, [[UInt8]])] = []
                        for _ in 0..<plan.operations {
                            let batch = randomBatch(&rng)
                            switch Int.random(in: 0..<20, using: &rng) {
                            case 0..<12: done.append((try await wal.append(contentsOf: batch), batch))
                            case 12..<18: done.append((try await wal.append(contentsOf: batch, durability: .buffered), batch))
                            case 18: _ = try await wal.sync()
                            default:
                                let durable = wal.durableLSN
                                _ = try await wal.truncate(before: durable + 1 - min(durable, LSN.random(in: 0...10, using: &rng)))
                            }
                        }
                        return done
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        } catch {
            try? await wal.close()
            throw error
        }
        box.state.withLock { $0.wal = nil }
        let last = wal.lastLSN
        let durableAtFallback = wal.durableLSN
        let fallback = io.powerCut(using: &rng)
        let firstAtFallback = wal.catalog.firstLSN
        try await wal.close()
        var model = LogModel()
        for (first, batch) in results { model.record(first: first, batch) }
        #expect(model.appended.count == Int(last), comment)
        let cut = box.state.withLock { $0.cut }
        let survivor = cut?.io ?? fallback
        model.acknowledged = cut?.durable ?? durableAtFallback
        try await checkSurvivor(survivor, options: options, model: model,
                                firstAllowed: cut?.first ?? firstAtFallback, comment)
    }
}
