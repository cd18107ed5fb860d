// Target `session`: the input is everything one client sends on one connection. It goes
// through the real server code: a socketpair(2) end is handed to an in-process `WALServer`
// (`serve(connectedSocket:)`, the same Connection code a listener's accept leads to, with
// its Dispatch sources, pipelining, backpressure and request handling) over a WAL on a
// `SimulatedFileIO`, so no network, port or disk is involved. The fuzz loop writes the input,
// reads every reply, half-closes, and reads to the end.
// Properties: no crash; no hang (the server answers and closes within 10 s of the client's
// end of input); in binary mode every reply is a whole, decodable response frame, in RESP
// mode whole RESP values, in text mode the replies end with a line end; the connection is gone from the server afterwards;
// the log stays readable with dense LSNs. With WALD_FUZZ_PAUSE_ON_HANG set, a hang pauses the
// process instead of aborting it, so a debugger can attach (`gdb -p PID`, `thread apply all bt`).
#if canImport(Glibc)
import Glibc
#endif
import Logging
import WALCore
import WALProtocol
import WALServer

enum SessionTarget {
    static let maxFrameBytes = 1 << 20

    /// One server for the whole run, like a long-running wald: state carries over between
    /// inputs, retention keeps the simulated disk small.
    nonisolated(unsafe) static var shared: (server: WALServer, wal: WAL)?
    nonisolated(unsafe) static var sessions = 0

    static func start() -> (server: WALServer, wal: WAL) {
        if let shared { return shared }
        // A write to a client that has gone must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let io = SimulatedFileIO()
        var options = WALOptions(directory: "/fuzz")
        options.io = io
        // Small segments: a REPLAY from 0 streams at most the 256 KiB retention keeps.
        options.maxSegmentBytes = 64 * 1024
        options.maxSegments = 4
        options.maxRecordBytes = 16 * 1024
        options.preallocate = false
        options.flushInterval = .milliseconds(1)
        options.logger = Logger(label: "wald-fuzz") { _ in SwiftLogNoOpLogHandler() }
        let walOptions = options
        let wal = runBlocking { try! await WAL.open(walOptions) }
        var serverOptions = ServerOptions()
        serverOptions.listen = []
        serverOptions.maxFrameBytes = maxFrameBytes
        serverOptions.logger = options.logger
        let server = WALServer(wal: wal, options: serverOptions)
        shared = (server, wal)
        return (server, wal)
    }

    static func run(_ bytes: [UInt8]) {
        let (server, wal) = start()
        var fds: [Int32] = [0, 0]
        invariant(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0, "socketpair failed: errno \(errno)")
        let client = fds[1]
        _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
        invariant(server.serve(connectedSocket: fds[0], peer: "fuzz"), "server refused the connection")

        let replies = converse(client, sending: bytes)
        close(client)
        checkReplies(replies, input: bytes)

        // The server closed its end already; its bookkeeping follows within microseconds.
        let deadline = now() + 1
        while server.connectionCount > 0 && now() < deadline { usleep(20) }
        invariant(server.connectionCount == 0, "the connection is still open on the server after the session ended")

        sessions += 1
        if sessions % 256 == 0 { checkLog(wal) }
    }

    /// Sends `input`, then half-closes, and returns everything received until the server closes.
    static func converse(_ fd: Int32, sending input: [UInt8]) -> [UInt8] {
        var received: [UInt8] = []
        var sent = 0
        var halfClosed = false
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var deadline = now() + 10
        while true {
            if sent == input.count && !halfClosed {
                shutdown(fd, Int32(SHUT_WR))
                halfClosed = true
                deadline = now() + 10
            }
            var events = Int16(POLLIN)
            if !halfClosed { events |= Int16(POLLOUT) }
            var entry = pollfd(fd: fd, events: events, revents: 0)
            _ = poll(&entry, 1, 100)
            if entry.revents & Int16(POLLOUT) != 0 && sent < input.count {
                let n = input.withUnsafeBytes { write(fd, $0.baseAddress! + sent, input.count - sent) }
                if n > 0 { sent += n } else if n < 0 && errno == EPIPE {
                    // The server closed after a framing error: the rest of the input is moot.
                    sent = input.count
                }
            }
            if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let n = read(fd, &chunk, chunk.count)
                if n > 0 {
                    received.append(contentsOf: chunk[0..<n])
                    invariant(received.count < 512 << 20, "the server sent over 512 MiB for one session")
                    continue
                }
                if n == 0 { return received }
                if errno == ECONNRESET { return received }
            }
            if now() >= deadline, getenv("WALD_FUZZ_PAUSE_ON_HANG") != nil {
                let states = shared?.server.connectionStates ?? []
                printError("wald-fuzz: HANG pid \(getpid()); pausing for a debugger\n" + states.joined(separator: "\n"))
                sleep(100_000)
            }
            invariant(now() < deadline, "hang: the server did not finish the session within 10 s (sent \(sent) of \(input.count) bytes, half-closed: \(halfClosed))")
        }
    }

    static func checkReplies(_ replies: [UInt8], input: [UInt8]) {
        guard let first = input.first else {
            invariant(replies.isEmpty, "replies to an empty session")
            return
        }
        if first == UInt8(ascii: "*") {
            // RESP: whole replies, one after another (an XRANGE streamed in chunks included).
            var offset = 0
            while offset < replies.count {
                guard let end = respValueEnd(replies, from: offset, depth: 0) else {
                    invariant(false, "the server's RESP output is not whole values from byte \(offset) of \(replies.count)")
                    return
                }
                offset = end
            }
            return
        }
        guard first == 0 else {
            // Text, or the one-line refusal of an unknown first byte.
            invariant(replies.isEmpty || replies.count >= 2 && replies[replies.count - 2] == 13 && replies.last == 10,
                      "text replies do not end with CRLF")
            return
        }
        var rest = replies[...]
        while !rest.isEmpty {
            do {
                guard let (frame, used) = try BinaryCodec.nextFrame(in: rest, maxFrameLength: maxFrameBytes + 64 * 1024) else {
                    invariant(false, "the server's output ends inside a frame (\(rest.count) bytes left)")
                    return
                }
                _ = try BinaryCodec.decodeResponse(frame)
                rest = rest.dropFirst(used)
            } catch {
                invariant(false, "the server sent an undecodable frame: \(error)")
                return
            }
        }
    }

    /// The end of the RESP2/RESP3 value at `from`, or nil when it is cut short or malformed.
    static func respValueEnd(_ bytes: [UInt8], from start: Int, depth: Int) -> Int? {
        guard start < bytes.count, depth < 16 else { return nil }
        var lineEnd = start + 1
        while lineEnd + 1 < bytes.count && !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
        guard lineEnd + 1 < bytes.count else { return nil }
        let line = String(decoding: bytes[(start + 1)..<lineEnd], as: UTF8.self)
        let next = lineEnd + 2
        switch bytes[start] {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "#"), UInt8(ascii: ","):
            return next
        case UInt8(ascii: ":"):
            return Int(line) == nil ? nil : next
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            guard let length = Int(line), length >= -1 else { return nil }
            if length == -1 { return next }
            guard bytes.count - next >= length + 2, bytes[next + length] == 13, bytes[next + length + 1] == 10 else { return nil }
            return next + length + 2
        case UInt8(ascii: "*"), UInt8(ascii: "%"), UInt8(ascii: "~"), UInt8(ascii: ">"):
            guard let count = Int(line), count >= -1, count < 1 << 24 else { return nil }
            var offset = next
            for _ in 0..<(bytes[start] == UInt8(ascii: "%") ? 2 * max(count, 0) : max(count, 0)) {
                guard let end = respValueEnd(bytes, from: offset, depth: depth + 1) else { return nil }
                offset = end
            }
            return offset
        default:
            return nil
        }
    }

    /// Every record still in the log reads back, densely numbered.
    static func checkLog(_ wal: WAL) {
        let problem = runBlocking { () -> String? in
            do {
                let status = wal.status
                let reader = try wal.reader(from: 0)
                var expected = status.firstLSN
                while let record = try reader.next() {
                    if record.lsn != expected { return "reader returned LSN \(record.lsn), expected \(expected)" }
                    expected += 1
                }
                if expected <= status.durableLSN { return "reader stopped at \(expected) before durable LSN \(status.durableLSN)" }
                return nil
            } catch {
                return "reading the log failed: \(error)"
            }
        }
        invariant(problem == nil, problem ?? "")
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
