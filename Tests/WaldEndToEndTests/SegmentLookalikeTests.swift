// Something in the data directory named like a segment that is not a file (a directory, a
// FIFO): wald refuses to start, and walctl verify and repair refuse to work on the log, all
// with the same message naming it; nothing in the directory changes.
import Foundation
import Testing
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct SegmentLookalikeTests {
    enum Kind: String, CaseIterable, CustomTestStringConvertible {
        case directory = "a directory"
        case fifo = "a FIFO"
        var testDescription: String { rawValue }
    }

    @Test(.timeLimit(.minutes(2)), arguments: Kind.allCases)
    func aDirectoryOrFIFONamedLikeASegmentIsRefusedWithOneMessageAndNothingChanges(kind: Kind) throws {
        // Small segments: records 1...40 fill several, so the look-alike sits among real ones.
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "1KiB"])
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        for i in 1...40 {
            c.send("APPEND record \(i) " + String(repeating: "x", count: 80) + "\n")
            #expect(c.readLine() == "OK \(i)")
        }
        #expect(wald.stop() == 0)
        let path = wald.dataDirectory + "/wal-00000000000000000005.wal"
        switch kind {
        case .directory: #expect(mkdir(path, 0o755) == 0)
        case .fifo: #expect(mkfifo(path, 0o644) == 0)
        }
        let before = try snapshot(wald.dataDirectory)
        let message = "\(path) is \(kind.rawValue), not a segment file"

        let start = try runTool("wald", ["--data-dir", wald.dataDirectory, "--listen", "127.0.0.1:0"], timeout: 20)
        #expect(!start.timedOut, "wald hung at start")
        #expect(start.exitedNormally && start.status != 0, "wald exited with \(start.status)")
        #expect(!start.stdout.contains("ready"), "wald said it was ready: \(start.stdout)")
        #expect(start.stderr.contains(message), "wald's stderr does not say \(message):\n\(start.stderr)")

        let verify = try runTool("walctl", ["verify", wald.dataDirectory], timeout: 20)
        #expect(!verify.timedOut && verify.exitedNormally && verify.status != 0, "walctl verify exited with \(verify.status)")
        #expect(verify.stderr.contains(message), "walctl verify does not say \(message):\n\(verify.stdout)\(verify.stderr)")
        #expect(!verify.stderr.contains("repair"), "walctl verify suggests a repair:\n\(verify.stderr)")

        let repair = try runTool("walctl", ["repair", wald.dataDirectory], timeout: 20)
        #expect(!repair.timedOut && repair.exitedNormally && repair.status != 0, "walctl repair exited with \(repair.status)")
        #expect(repair.stderr.contains(message), "walctl repair does not say \(message):\n\(repair.stdout)\(repair.stderr)")

        #expect(try snapshot(wald.dataDirectory) == before, "the data directory changed")

        // Taken away, the log is whole again.
        #expect(remove(path) == 0)
        let again = try WaldProcess(dataDirectory: wald.dataDirectory)
        defer { again.stop() }
        let r = try RawConnection(port: again.port)
        r.send("INFO\n")
        let info = try #require(r.readLine())
        #expect(info.contains("\"first_lsn\":1,\"last_lsn\":40,"), "\(info)")
    }
}
