// Many clients at once: every acknowledgement names its own LSN, the acknowledged LSNs are
// dense, and the log holds at each LSN exactly the bytes its writer sent. Also one connection
// carrying many pipelined appends, and a follower that sees every record in order.
import Foundation
import Testing
import WALClient

@Suite(.serialized) struct ConcurrencyTests {
    @Test(.timeLimit(.minutes(2)))
    func sixtyFourClientsGetUniqueDenseLSNsAndTheirOwnBytesBack() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let acks = AckLog()
        let clients = 64
        let operations = 50

        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<clients {
                group.addTask {
                    let client = try await WALClient.connect(endpoint)
                    defer { client.close() }
                    let watchdog = Watchdog(seconds: 90) { client.close() }
                    defer { watchdog.cancel() }
                    var random = SeededGenerator(seed: UInt64(c + 1))
                    for op in 0..<operations {
                        // Every fifth operation is a batch of 2 to 5 records; sizes 0 to 2000.
                        let count = op % 5 == 4 ? Int.random(in: 2...5, using: &random) : 1
                        let records = (0..<count).map { k in
                            payload("c\(c)-op\(op)-r\(k)", size: Int.random(in: 0...2000, using: &random))
                        }
                        if count == 1 {
                            acks.add(first: try await client.append(records[0]), records)
                        } else {
                            let (first, acked) = try await client.append(batch: records)
                            #expect(acked == UInt32(count))
                            acks.add(first: first, records)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }

        let acked = acks.all
        #expect(acks.duplicateLSNs.isEmpty, "LSNs acknowledged twice: \(acks.duplicateLSNs.prefix(10))")
        let total = UInt64(acked.count)
        #expect(Set(acked.keys) == Set(1...total), "acknowledged LSNs are not exactly 1...\(total)")
        let records = try await replayAll(endpoint)
        #expect(records.count == acked.count)
        expectLog(records, holds: acked, "after 64 concurrent writers")

        let info = try await WALClient.connect(endpoint)
        defer { info.close() }
        let status = try await info.info()
        #expect(status.lastLSN == total && status.durableLSN == total)
    }

    @Test(.timeLimit(.minutes(1)))
    func twoHundredConcurrentAppendsOnOneConnectionAllSucceedWithUniqueLSNs() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let client = try await WALClient.connect(endpoint)
        defer { client.close() }
        let watchdog = Watchdog(seconds: 50) { client.close() }
        defer { watchdog.cancel() }
        let acks = AckLog()

        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let record = payload("pipelined-\(i)", size: 20 + i * 7)
                    acks.add(first: try await client.append(record, buffered: i % 4 == 3), [record])
                }
            }
            try await group.waitForAll()
        }
        try await client.sync()

        #expect(acks.duplicateLSNs.isEmpty)
        #expect(Set(acks.all.keys) == Set(1...200))
        expectLog(try await replayAll(endpoint), holds: acks.all, "after 200 pipelined appends")
        #expect(!watchdog.fired, "the server stopped answering the pipelined appends")
    }

    @Test(.timeLimit(.minutes(1)))
    func followerStartedBeforeTheLoadSeesEveryRecordInLSNOrder() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let writers = 4
        let perWriter = 150
        let total = UInt64(writers * perWriter)

        let follower = try await WALClient.connect(endpoint)
        defer { follower.close() }
        let watchdog = Watchdog(seconds: 50) { follower.close() }
        defer { watchdog.cancel() }
        let stream = follower.follow(from: 1)
        let received = Task { () throws -> [ReplayedRecord] in
            var records: [ReplayedRecord] = []
            for try await record in stream {
                records.append(record)
                if record.lsn >= total { break }
            }
            return records
        }

        let acks = AckLog()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    let client = try await WALClient.connect(endpoint)
                    defer { client.close() }
                    var i = 0
                    while i < perWriter {
                        // Singles, buffered singles and batches of 3: all reach the follower
                        // once durable.
                        if i % 10 == 9 && i + 3 <= perWriter {
                            let batch = (0..<3).map { payload("w\(w)-\(i + $0)", size: 10 + $0) }
                            acks.add(first: try await client.append(batch: batch).firstLSN, batch)
                            i += 3
                        } else {
                            let record = payload("w\(w)-\(i)", size: 10 + i % 200)
                            acks.add(first: try await client.append(record, buffered: i % 3 == 1), [record])
                            i += 1
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(Set(acks.all.keys) == Set(1...total))

        let records = try await received.value
        #expect(!watchdog.fired, "the follower stopped receiving at LSN \(records.last?.lsn ?? 0) of \(total)")
        #expect(records.map(\.lsn) == Array(1...total), "follower saw \(records.count) records, last \(records.last?.lsn ?? 0)")
        expectLog(records, holds: acks.all, "the follow stream")
    }
}
