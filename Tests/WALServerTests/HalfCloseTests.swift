// A client that half-closes while its last replies are still queued in the server must get
// them all and then EOF. The server used to decide "close once written" only if no output was
// queued at the moment it read the EOF; otherwise nothing ever decided it, and the connection
// stayed open forever (found by the session fuzzer as a "hang" after thousands of sessions).
// In process, over a socketpair with a small send buffer, so the output really is queued.
import Dispatch
import Glibc
import Logging
import Testing
import WALCore
import WALServer

@Suite struct HalfCloseTests {
    @Test(.timeLimit(.minutes(1)))
    func halfCloseWithRepliesStillQueuedGetsThemAllThenEOF() async throws {
        var options = WALOptions(directory: "/wal")
        options.io = SimulatedFileIO()
        options.maxSegmentBytes = 1 << 20
        options.preallocate = false
        options.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let wal = try await WAL.open(options)
        let records = (0..<200).map { Array(repeating: UInt8(ascii: "a") + UInt8($0 % 26), count: 1000) }
        try await wal.append(contentsOf: records)
        var serverOptions = ServerOptions()
        serverOptions.listen = []
        serverOptions.logger = options.logger
        let server = WALServer(wal: wal, options: serverOptions)

        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        var small: Int32 = 4096
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        #expect(server.serve(connectedSocket: fds[0], peer: "test"))
        let client = fds[1]
        defer { close(client) }

        // ~200 KB of replay output against a few KiB of socket buffers: most of it is queued in
        // the server when the client half-closes, after the server finished processing.
        let request = Array("REPLAY 1 0\n".utf8)
        #expect(request.withUnsafeBytes { write(client, $0.baseAddress, $0.count) } == request.count)
        try await Task.sleep(for: .milliseconds(300))
        shutdown(client, Int32(SHUT_WR))

        let received = try await Task.detached { () throws -> [UInt8] in
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
        let text = String(decoding: received, as: UTF8.self)
        #expect(text.hasSuffix("END 201\r\n"), "the replies do not end with END 201: …\(text.suffix(60))")
        #expect(text.split(separator: "\r\n").filter { $0.hasPrefix("RECORD ") }.count == 200)
        try await wal.close()
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
