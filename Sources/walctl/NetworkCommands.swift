// walctl commands that talk to a running wald over the binary protocol.
import ArgumentParser
import Foundation
import WALClient

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append records: each DATA argument is one record; without DATA, one record per stdin line.")

    @OptionGroup var connection: ServerOptions
    @Flag(help: "Acknowledge before fsync (durable at the next flush interval).") var buffered = false
    @Flag(help: "Read all of stdin as one record.") var raw = false
    @Option(name: .customLong("expect-lsn"),
            help: "Append only if the first record gets this LSN (the log's next); otherwise fail with CONFLICT and write nothing. Safe to retry.")
    var expectLSN: UInt64?
    @Argument(help: "Records to append.") var data: [String] = []

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        var records: [[UInt8]]
        if !data.isEmpty {
            records = data.map { Array($0.utf8) }
        } else if raw {
            records = [Array(FileHandle.standardInput.readDataToEndOfFile())]
        } else {
            records = []
            while let line = readLine(strippingNewline: true) { records.append(Array(line.utf8)) }
        }
        guard !records.isEmpty else { throw ValidationError("nothing to append") }
        // Batches of up to 1000 records and one frame (flags, an expected LSN, count, then a
        // length per record); a single record too large for a frame fails with `requestTooLarge`.
        // With --expect-lsn each batch expects the LSN after the previous one.
        var index = 0
        var expected = expectLSN
        while index < records.count {
            var end = index + 1
            var frameLength = 1 + 1 + 8 + 4 + 4 + records[index].count
            while end < records.count && end - index < 1000 && frameLength + 4 + records[end].count <= WALClient.maxFrameLength {
                frameLength += 4 + records[end].count
                end += 1
            }
            let batch = Array(records[index..<end])
            // The client checked that first ... first + count − 1 are LSNs: no overflow here.
            let (first, count) = try await client.append(batch: batch, buffered: buffered, expectedLSN: expected)
            if expected != nil {
                let (next, overflow) = first.addingReportingOverflow(UInt64(count))
                expected = overflow ? .max : next  // the server refuses that one by name
            }
            for offset in 0..<UInt64(count) { print(first + offset) }
            index = end
        }
    }
}

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print records from an LSN on.")

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json, raw, hex }

    @OptionGroup var connection: ServerOptions
    @Option(help: "First LSN (0 = first available).") var from: UInt64 = 0
    @Option(help: "At most this many records (0 = all).") var count: UInt64 = 0
    @Flag(help: "Keep printing new records as they become durable.") var follow = false
    @Option(help: "text | json | raw | hex") var format: Format = .text

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        let stream = follow ? client.follow(from: from, count: count) : client.replay(from: from, count: count)
        for try await record in stream {
            switch format {
            case .text:
                print("\(record.lsn)\t\(String(decoding: record.payload, as: UTF8.self))")
            case .json:
                print("{\"lsn\":\(record.lsn),\"size\":\(record.payload.count),\"payload_base64\":\"\(Data(record.payload).base64EncodedString())\"}")
            case .raw:
                StandardStreams.write(record.payload)
            case .hex:
                print("\(record.lsn)\t\(record.payload.map { String(format: "%02x", $0) }.joined())")
            }
            StandardStreams.checkStandardOutput()
        }
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make everything appended durable; prints the durable LSN.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        print(try await client.sync())
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the server's INFO JSON.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        print(try await client.info().json)
    }
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check the server answers; prints the round trip time.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        let start = ContinuousClock.now
        _ = try await client.ping(Array("walctl".utf8))
        print("PONG in \(ContinuousClock.now - start)")
    }
}

struct Truncate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop whole segments below an LSN (a checkpoint); prints the first LSN left.")
    @OptionGroup var connection: ServerOptions
    @Option(help: "Drop segments whose records are all below this LSN.") var before: UInt64

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        print(try await client.truncate(before: before))
    }
}

struct Promote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a follower accept appends (no-op on a primary); prints the last LSN.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = try await connection.connect()
        defer { client.close() }
        print(try await client.promote())
    }
}
