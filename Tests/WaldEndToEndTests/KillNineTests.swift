// SIGKILL under load, many times on the same data directory: after each restart every
// acknowledged durable record is there with its exact bytes, LSNs stay dense, and whatever a
// restarted server once showed stays there in later rounds.
import Foundation
import Testing
import WALClient
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct KillNineTests {
    @Test(.timeLimit(.minutes(2)))
    func acknowledgedRecordsSurviveSIGKILLUnderLoad() async throws {
        let seed = testSeed()
        var random = SeededGenerator(seed: seed)
        let directory = NSTemporaryDirectory() + "wald-e2e-kill9-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: directory + ".stderr.log")
        }
        let rounds = 12
        let writers = 4
        var acked: [UInt64: [UInt8]] = [:]     // every acknowledged record of every round
        var known: [UInt64: [UInt8]] = [:]     // everything a restarted server has replayed
        var sent = Set<[UInt8]>()              // every payload ever sent, acknowledged or not

        for round in 0...rounds {
            let context = "E2E_SEED=\(seed) round \(round)"
            // Small segments so kills also land around segment rotation.
            let wald = try WaldProcess(dataDirectory: directory, arguments: ["--max-segment-bytes", "65536"])
            defer { wald.stop(signal: SIGKILL) }
            let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)

            // Verify what the previous rounds left.
            let records = try await replayAll(endpoint)
            let log = expectLog(records, holds: acked, context)
            let lost = known.filter { log[$0.key] != $0.value }
            #expect(lost.isEmpty, "\(context): \(lost.count) records seen after an earlier restart are gone or changed, e.g. LSN \(lost.keys.min() ?? 0)")
            let strangers = records.filter { !sent.contains($0.payload) }
            #expect(strangers.isEmpty, "\(context): \(strangers.count) records nobody sent, e.g. LSN \(strangers.first?.lsn ?? 0)")
            known = log
            if round == rounds { break }

            // Load, then SIGKILL at a random moment after the first acknowledgement.
            let acks = AckLog()
            let sentNow = Locked<[[UInt8]]>([])
            let killDelay = Int.random(in: 0...250, using: &random)
            let writerSeeds = (0..<writers).map { _ in random.next() }
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for w in 0..<writers {
                        group.addTask {
                            guard let client = try? await WALClient.connect(endpoint) else { return }
                            defer { client.close() }
                            var random = SeededGenerator(seed: writerSeeds[w])
                            var i = 0
                            while true {
                                let count = i % 4 == 3 ? Int.random(in: 2...6, using: &random) : 1
                                let batch = (0..<count).map { k in
                                    payload("round\(round)-w\(w)-\(i)-\(k)", size: Int.random(in: 24...1500, using: &random))
                                }
                                sentNow.withLock { $0 += batch }
                                do {
                                    let (first, _) = try await client.append(batch: batch)
                                    acks.add(first: first, batch)
                                } catch {
                                    return  // the server died
                                }
                                i += 1
                            }
                        }
                    }
                }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while acks.count == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
            #expect(acks.count > 0, "\(context): no acknowledgement within 30 s")
            try await Task.sleep(for: .milliseconds(killDelay))
            wald.stop(signal: SIGKILL)
            await load.value

            #expect(acks.duplicateLSNs.isEmpty, "\(context): LSNs acknowledged twice: \(acks.duplicateLSNs.prefix(5))")
            for (lsn, bytes) in acks.all {
                if let earlier = acked[lsn] {
                    Issue.record("\(context): LSN \(lsn) acknowledged again (\(earlier.prefix(16)) then \(bytes.prefix(16)))")
                }
                acked[lsn] = bytes
            }
            sent.formUnion(sentNow.current)
        }
        #expect(acked.count > rounds * 10, "E2E_SEED=\(seed): only \(acked.count) records acknowledged in \(rounds) rounds")
    }
}
