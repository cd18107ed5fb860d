// walctl commands that talk to a running wald over the binary protocol. Failures end walctl
// with `walctl: error: …` on stderr and status 1; usage errors print the command's usage (64).
import ArgumentParser
import Foundation
import WALClient
import WALSystem
import WALProtocol
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append records: each DATA argument is one record; without DATA, one record per stdin line.",
        discussion: """
            Records go in byte for byte: a stdin line is the bytes before its "\\n" (nothing else \
            is removed or converted, invalid UTF-8 included), and --raw takes all of stdin. Lines \
            are sent as they are read, in batches of up to 1000 records that fit one frame; each \
            LSN is printed once its batch is acknowledged. If a batch fails, the error says which \
            records were appended (their LSNs) and that none after them were.
            """)

    @OptionGroup var connection: ServerOptions
    @Flag(help: "Acknowledge before fsync (durable at the next flush interval).") var buffered = false
    @Flag(help: "Read all of stdin as one record.") var raw = false
    @Option(name: .customLong("expect-lsn"),
            help: "Append only if the first record gets this LSN (the log's next); otherwise fail with CONFLICT and write nothing. Safe to retry.")
    var expectLSN: UInt64?
    @Argument(help: "Records to append.") var data: [String] = []

    func validate() throws {
        if raw && !data.isEmpty { throw ValidationError("--raw reads stdin; give no DATA with it") }
    }

    func run() async throws {
        var sender = BatchSender(buffered: buffered, expected: expectLSN)
        if !data.isEmpty {
            let client = await connection.connect()
            defer { client.close() }
            for record in rawArgumentBytes(for: data) { await sender.add(record, client) }
            await sender.finish(client)
            return
        }
        var input = StandardInput()
        if raw {
            let record = input.readAll()
            let client = await connection.connect()
            defer { client.close() }
            await sender.add(record, client)
            await sender.finish(client)
            return
        }
        var client: WALClient?
        defer { client?.close() }
        while let lines = input.nextLines() {
            // Connect once there is something to send (an empty stdin is a usage error).
            if client == nil && !lines.isEmpty { client = await connection.connect() }
            for line in lines { await sender.add(line, client!) }
            // Whatever stdin had for now goes out now: a slow producer's lines are not held back.
            if let client { await sender.flush(client) }
        }
        guard let client else { Self.usageError("nothing to append: stdin is empty and no DATA was given") }
        await sender.finish(client)
    }

    /// The raw bytes of the DATA arguments: Swift decodes argv as UTF-8 (replacing what is not),
    /// so each value is matched back to its argv entry.
    private func rawArgumentBytes(for values: [String]) -> [[UInt8]] {
        var cursor = 1
        let argc = Int(CommandLine.argc)
        return values.map { value in
            while cursor < argc {
                defer { cursor += 1 }
                guard let pointer = CommandLine.unsafeArgv[cursor] else { continue }
                let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self),
                                                      count: strlen(pointer)))
                if String(decoding: bytes, as: UTF8.self) == value { return bytes }
            }
            return Array(value.utf8)
        }
    }
}

/// Groups records into batches of up to 1000 that fit one frame, sends them, prints their LSNs,
/// and on a failure says exactly which records went in.
struct BatchSender {
    let buffered: Bool
    var expected: UInt64?
    private var batch: [[UInt8]] = []
    private var frameLength = 1 + 1 + 8 + 4
    /// Records acknowledged so far, and the LSNs they got.
    private var appended = 0
    private var firstLSN: UInt64?
    private var lastLSN: UInt64 = 0

    init(buffered: Bool, expected: UInt64?) {
        self.buffered = buffered
        self.expected = expected
    }

    mutating func add(_ record: [UInt8], _ client: WALClient) async {
        if !batch.isEmpty && (batch.count == 1000 || frameLength + 4 + record.count > WALClient.maxFrameLength) {
            await flush(client)
        }
        batch.append(record)
        frameLength += 4 + record.count
    }

    mutating func finish(_ client: WALClient) async {
        await flush(client)
        if appended == 0 { Append.usageError("nothing to append") }
    }

    mutating func flush(_ client: WALClient) async {
        guard !batch.isEmpty else { return }
        let records = batch
        batch.removeAll(keepingCapacity: true)
        frameLength = 1 + 1 + 8 + 4
        do {
            let (first, count) = try await client.append(batch: records, buffered: buffered, expectedLSN: expected)
            if expected != nil {
                let (next, overflow) = first.addingReportingOverflow(UInt64(count))
                expected = overflow ? .max : next  // the server refuses that one by name
            }
            // The client checked that first ... first + count − 1 are LSNs: no overflow here.
            var text = ""
            for offset in 0..<UInt64(count) { text += "\(first + offset)\n" }
            StandardStreams.write(Array(text.utf8))
            StandardStreams.flush()
            firstLSN = firstLSN ?? first
            lastLSN = first + UInt64(count) - 1
            appended += Int(count)
        } catch {
            let done = firstLSN.map { "the first \(appended) records were appended as LSN \($0)...\(lastLSN) (printed above)" }
                ?? "no record was appended before it"
            let batchRange = "records \(appended + 1)...\(appended + records.count)"
            let outcome: String
            switch error {
            case WALClientError.server(let code, _) where code != .unavailable:
                outcome = "\(batchRange) were not appended, nor any after them"
            case WALClientError.requestTooLarge:
                outcome = "record \(appended + 1) was not sent, nor any after it"
            default:
                // The connection ended (or the fsync failed) while the batch waited for its reply.
                outcome = "whether \(batchRange) were appended is unknown (replay from LSN \(firstLSN == nil ? "the end of the log" : String(lastLSN + 1)) to see); no record after them was sent"
            }
            fail("\(error); \(done); \(outcome)")
        }
    }
}

/// Reads stdin in chunks and splits it into lines (byte-exact, "\n" removed).
struct StandardInput {
    private var pending: [UInt8] = []
    private var atEnd = false
    private var chunk = [UInt8](repeating: 0, count: 1 << 20)

    /// The complete lines of the next chunk read (the last line at the end may lack its "\n");
    /// nil once stdin is exhausted.
    mutating func nextLines() -> [[UInt8]]? {
        guard !atEnd else { return nil }
        let n = readChunk()
        if n <= 0 {
            atEnd = true
            if pending.isEmpty { return nil }
            defer { pending.removeAll() }
            return [pending]
        }
        pending.append(contentsOf: chunk[0..<n])
        var lines: [[UInt8]] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: 10) {
            lines.append(Array(pending[start..<newline]))
            start = newline + 1
        }
        pending.removeFirst(start)
        return lines
    }

    mutating func readAll() -> [UInt8] {
        while true {
            let n = readChunk()
            if n <= 0 { return pending }
            pending.append(contentsOf: chunk[0..<n])
        }
    }

    /// One read(2) into `chunk`; fails walctl on an error.
    private mutating func readChunk() -> Int {
        do {
            return try chunk.withUnsafeMutableBytes { try Descriptors.read(0, into: $0, what: "standard input") }
        } catch {
            fail("cannot read standard input: \(SystemError.describe(errno: (error as? SystemError)?.errno ?? EIO))")
        }
    }
}

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print records from an LSN on.",
        discussion: RecordFormat.help + """


            With --follow each record is written as soon as it arrives (unbuffered, also into a \
            pipe or file). If the server stops or the connection drops, walctl says after which \
            LSN and exits with status 1; with --reconnect it connects again and resumes at the \
            next LSN (after checking it is still the same log).
            """)

    @OptionGroup var connection: ServerOptions
    @Option(help: "First LSN (0 = first available).") var from: UInt64 = 0
    @Option(help: "At most this many records (0 = all).") var count: UInt64 = 0
    @Flag(help: "Keep printing new records as they become durable.") var follow = false
    @Flag(help: "With --follow: when the connection drops, connect again and go on from the next LSN.") var reconnect = false
    @Option(help: "text | json | hex | raw") var format: RecordFormat = .text

    func validate() throws {
        if reconnect && !follow { throw ValidationError("--reconnect only applies with --follow") }
    }

    func run() async throws {
        let output = OutputBuffer()
        var next = from
        var remaining = count
        var identity: String?
        var backoff = Duration.milliseconds(100)
        while true {
            let client: WALClient
            if identity != nil {
                // Reconnecting: a server that is still restarting refuses the connection; try
                // again with the same backoff instead of giving up at the first refusal.
                do {
                    client = try await connection.tryConnect()
                } catch {
                    guard Self.isConnectionLoss(error) else { fail("\(error)") }
                    printError("cannot reconnect yet (\(error)); retrying in \(backoff)")
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                    continue
                }
            } else {
                client = await connection.connect()
            }
            defer { client.close() }
            if follow {
                let info: ServerInfo
                do { info = try await client.info() } catch { fail("\(error)") }
                let current = "\(info.logID) generation \(info.generation)"
                if let identity, identity != current {
                    fail("the server now holds another log (\(current), was \(identity)): LSNs from \(next) on would not continue what was printed")
                }
                identity = current
            }
            let stream = follow ? client.follow(from: next, count: remaining) : client.replay(from: next, count: remaining)
            do {
                for try await record in stream {
                    record.payload.withUnsafeBytes { format.write(lsn: record.lsn, payload: $0, to: output) }
                    if follow { output.flush() }
                    next = record.lsn + 1
                    if remaining > 0 {
                        remaining -= 1
                        if remaining == 0 { break }
                    }
                    backoff = .milliseconds(100)
                }
                output.flush()
                return
            } catch {
                output.flush()
                let position = next == from ? "before any record" : "after LSN \(next - 1)"
                guard follow, reconnect, Self.isConnectionLoss(error) else {
                    if follow {
                        fail("the follow stream ended \(position): \(error); rerun with --from \(next) to go on")
                    }
                    fail("\(error)")
                }
                printError("connection lost \(position) (\(error)); reconnecting to resume at LSN \(next)")
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    private static func isConnectionLoss(_ error: any Error) -> Bool {
        switch error as? WALClientError {
        case .connectionClosed, .connectionFailed, .timedOut: true
        case .server(let code, _): code == .unavailable
        default: false
        }
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make everything appended durable; prints the durable LSN.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = await connection.connect()
        defer { client.close() }
        do { StandardStreams.printLine("\(try await client.sync())") } catch { fail("\(error)") }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the server's INFO JSON.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = await connection.connect()
        defer { client.close() }
        do { StandardStreams.printLine(try await client.info().json) } catch { fail("\(error)") }
    }
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the server answers; prints each round trip in milliseconds.",
        discussion: """
            One line per PING: `PONG from HOST:PORT: 0.183 ms`; with --count above 1 a last line \
            `N pings: min … ms, avg … ms, max … ms` (redis-cli --latency's figures). The time \
            does not include connecting.
            """)
    @OptionGroup var connection: ServerOptions
    @Option(help: "PINGs to send (one connection).") var count: Int = 1
    @Option(help: "Seconds between PINGs.") var interval: Double = 1

    func validate() throws {
        guard count >= 1 && count <= 1_000_000 else { throw ValidationError("--count must be from 1 to 1000000") }
        guard interval.isFinite && interval >= 0 && interval <= 3600 else {
            throw ValidationError("--interval must be a number of seconds from 0 to 3600")
        }
    }

    func run() async throws {
        let client = await connection.connect()
        defer { client.close() }
        var samples: [Double] = []
        for index in 0..<count {
            if index > 0 { try? await Task.sleep(for: .nanoseconds(Int64(interval * 1e9))) }
            let start = ContinuousClock.now
            do { _ = try await client.ping(Array("walctl".utf8)) } catch { fail("\(error)") }
            let elapsed = ContinuousClock.now - start
            let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            samples.append(ms)
            StandardStreams.printLine("PONG from \(client.endpoint): \(String(format: "%.3f", ms)) ms")
        }
        if samples.count > 1 {
            let avg = samples.reduce(0, +) / Double(samples.count)
            StandardStreams.printLine(String(format: "%d pings: min %.3f ms, avg %.3f ms, max %.3f ms", samples.count, samples.min()!,
                                             avg, samples.max()!))
        }
    }
}

struct Truncate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop whole segments below an LSN (a checkpoint); prints the first LSN left.",
        discussion: """
            Prints the first LSN still in the log on stdout, and on stderr how many segments and \
            records were dropped (from INFO before and after: retention running at the same time \
            is counted too).
            """)
    @OptionGroup var connection: ServerOptions
    @Option(help: "Drop segments whose records are all below this LSN.") var before: UInt64

    func run() async throws {
        let client = await connection.connect()
        defer { client.close() }
        do {
            let old = try await client.info()
            let first = try await client.truncate(before: before)
            let new = try await client.info()
            StandardStreams.printLine("\(first)")
            let segments = old.segments > new.segments ? old.segments - new.segments : 0
            if first > old.firstLSN {
                printError("dropped \(segments) segments, \(first - old.firstLSN) records (LSN \(old.firstLSN)...\(first - 1)); the log now starts at LSN \(first)")
            } else {
                printError("dropped nothing: the log starts at LSN \(first) (the segment being written, or one a follower or reader still needs, is kept)")
            }
        } catch {
            fail("\(error)")
        }
    }
}

struct Promote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a follower accept appends (no-op on a primary); prints the last LSN.")
    @OptionGroup var connection: ServerOptions

    func run() async throws {
        let client = await connection.connect()
        defer { client.close() }
        do { StandardStreams.printLine("\(try await client.promote())") } catch { fail("\(error)") }
    }
}
