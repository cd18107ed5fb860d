// Ends of sessions while replies are still queued in the server, both found by the session
// fuzzer: a client that half-closes must get every reply and then EOF (the connection used to
// stay open forever when output was queued at the moment the EOF was read), and a follow stream
// ended by a bad request must deliver what it queued whole (an abrupt close cut records in half).
// In process, over a socketpair with small buffers, so the output really is queued.
import Dispatch
import Glibc
import Logging
import Testing
import WALCore
import WALServer

@Suite struct HalfCloseTests {
    @Test(.timeLimit(.minutes(1)))
    func halfCloseWithRepliesStillQueuedGetsThemAllThenEOF() async throws {
        let session = try await Session.start()
        // ~200 KB of replay output against a few KiB of socket buffers: most of it is queued in
        // the server when the client half-closes, after the server finished processing.
        session.send("REPLAY 1 0\n")
        try await Task.sleep(for: .milliseconds(300))
        let text = try await session.halfCloseAndReadToEOF()
        #expect(text.hasSuffix("END 201\r\n"), "the replies do not end with END 201: …\(text.suffix(60))")
        #expect(Session.records(in: text) == 200)
        try await session.wal.close()
    }

    /// Found by the session fuzzer (Tests/Fuzz/corpus/session/found-half-close-behind-a-durable-append):
    /// the EOF arrives with the requests, while the durable APPEND's reply is still held for its
    /// fdatasync. Once the gate opened, the replies went out but nothing looked at the EOF again,
    /// and the connection stayed open (and counted) forever.
    @Test(.timeLimit(.minutes(1)), arguments: ["APPEND x\nPING\n", "APPEND x\nREPLAY 0 ND hello\nPING\n", "APPEND x\n"])
    func halfCloseRightBehindADurableAppendGetsTheRepliesThenEOF(requests: String) async throws {
        let session = try await Session.start()
        // The requests and the EOF back to back: the EOF is read while the append waits for its sync.
        session.send(requests)
        let text = try await session.halfCloseAndReadToEOF()
        #expect(text.hasPrefix("OK 201\r\n"), "\(text)")
        #expect(text.hasSuffix(requests.hasSuffix("PING\n") ? "PONG\r\n" : "OK 201\r\n"), "\(text)")
        #expect(session.server.connectionCount == 0)
        try await session.wal.close()
    }

    /// A request other than FEEDBACK on a follow stream ends it; the records queued before it
    /// still arrive whole (they used to be dropped mid-record by an abrupt close).
    @Test(.timeLimit(.minutes(1)))
    func aFollowStreamEndedByABadRequestDeliversWhatItQueuedWhole() async throws {
        let session = try await Session.start()
        session.send("REPLAY 1 0 FOLLOW\n")
        try await Task.sleep(for: .milliseconds(300))
        session.send("PING\n")
        try await Task.sleep(for: .milliseconds(100))
        let text = try await session.halfCloseAndReadToEOF()
        #expect(Session.records(in: text) == 200, "records cut off: …\(text.suffix(60))")
        #expect(text.hasSuffix("ERR BAD_REQUEST only FEEDBACK is accepted on a follow stream\r\n"), "…\(text.suffix(80))")
        try await session.wal.close()
    }
}

/// A WAL with 200 records of 1000 bytes on a simulated disk, served to one client over a
/// socketpair whose buffers hold only a few KiB.
struct Session {
    let wal: WAL
    let server: WALServer
    let client: Int32

    static func start() async throws -> Session {
        var options = WALOptions(directory: "/wal")
        options.io = SimulatedFileIO()
        options.maxSegmentBytes = 1 << 20
        options.preallocate = false
        options.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let wal = try await WAL.open(options)
        try await wal.append(contentsOf: (0..<200).map { Array(repeating: UInt8(ascii: "a") + UInt8($0 % 26), count: 1000) })
        var serverOptions = ServerOptions()
        serverOptions.listen = []
        serverOptions.logger = options.logger
        let server = WALServer(wal: wal, options: serverOptions)
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        var small: Int32 = 4096
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        #expect(server.serve(connectedSocket: fds[0], peer: "test"))
        return Session(wal: wal, server: server, client: fds[1])
    }

    func send(_ line: String) {
        let bytes = Array(line.utf8)
        #expect(bytes.withUnsafeBytes { write(client, $0.baseAddress, $0.count) } == bytes.count)
    }

    /// Half-closes, then reads until the server closes (a 20 s silence is a failure) and closes.
    func halfCloseAndReadToEOF() async throws -> String {
        shutdown(client, Int32(SHUT_WR))
        let client = self.client
        let bytes = try await Task.detached { () throws -> [UInt8] in
            defer { close(client) }
            var all: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            while true {
                let n = read(client, &chunk, chunk.count)
                if n == 0 { return all }
                if n < 0 { throw ReadFailed(errno: errno, received: all.count) }
                all.append(contentsOf: chunk[0..<n])
            }
        }.value
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whole `RECORD <lsn> 1000` entries: the header line and all 1000 payload bytes.
    static func records(in text: String) -> Int {
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        var count = 0
        for (i, line) in lines.enumerated() where line.hasPrefix("RECORD ") && i + 1 < lines.count {
            if lines[i + 1].utf8.count == 1000 { count += 1 }
        }
        return count
    }
}

struct ReadFailed: Error, CustomStringConvertible {
    let errno: Int32
    let received: Int
    var description: String {
        errno == EAGAIN
            ? "no EOF within 20 s after \(received) bytes: the server kept the half-closed connection open"
            : "read failed with errno \(errno) after \(received) bytes"
    }
}
