// The offline tools on real data directories: `dump` and `verify` never write (a before/after
// snapshot of the directory), `verify` reports every damage to the end of the log, `repair`
// shows what it cuts, needs --force for acknowledged-looking records and starts a new
// generation, which INFO shows and a follower of the old generation refuses.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A log of `count` records of 100 bytes, one append each, in 1 KiB segments (7 records to a
/// segment: 64-byte header, 124-byte frames), stopped cleanly. Returns the data directory.
func smallSegmentLog(count: Int, arguments: [String] = []) async throws -> String {
    let wald = try WaldProcess(arguments: ["--max-segment-bytes", "1KiB"] + arguments)
    let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
    for i in 1...count { try await client.append(payload("r\(i)", size: 100)) }
    client.close()
    #expect(wald.stop(signal: SIGTERM) == 0, "\(wald.stderrText)")
    return wald.dataDirectory
}

/// Flips one payload bit of the record with `lsn` in that 1 KiB-segment log.
func flipPayloadBit(_ directory: String, lsn: Int) throws {
    let first = (lsn - 1) / 7 * 7 + 1
    let path = directory + "/" + segmentName(first)
    var bytes = Array(try #require(FileManager.default.contents(atPath: path)))
    bytes[64 + (lsn - first) * 124 + 24 + 10] ^= 0x20
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func segmentName(_ firstLSN: Int) -> String {
    let digits = String(firstLSN)
    return "wal-" + String(repeating: "0", count: 20 - digits.count) + digits + ".wal"
}

@Suite(.serialized) struct OfflineToolTests {
    /// dump used to open the log like wald: it took the lock, removed the prepared segment and
    /// cut the torn tail; beside a running wald it failed with "locked".
    @Test(.timeLimit(.minutes(1)))
    func dumpAndVerifyChangeNothingAndDumpWorksBesideARunningWald() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        for i in 1...3 { try await client.append(Array("record \(i)".utf8)) }
        client.close()
        let running = try runTool("walctl", ["dump", wald.dataDirectory])
        #expect(running.status == 0 && running.stdout == "1\trecord 1\n2\trecord 2\n3\trecord 3\n", "\(running.stderr)")

        // A crash (no CLEAN marker, the prepared segment left), then the start of a write
        // that never finished: a frame header whose length reaches into unwritten sectors.
        wald.stop(signal: SIGKILL)
        let segment = wald.dataDirectory + "/" + segmentName(1)
        var bytes = Array(try #require(FileManager.default.contents(atPath: segment)))
        let end = 64 + 3 * (24 + 8)
        let torn: [UInt8] = [0xde, 0xad, 0xbe, 0xef] + [0xd0, 0x07, 0, 0] + [4, 0, 0, 0, 0, 0, 0, 0] + [3, 0, 0, 0, 0, 0, 0, 0] + [0x55, 0x66]
        bytes.replaceSubrange(end..<(end + torn.count), with: torn)
        try Data(bytes).write(to: URL(fileURLWithPath: segment))
        let names = try FileManager.default.contentsOfDirectory(atPath: wald.dataDirectory)
        #expect(names.contains { $0.hasSuffix(".tmp") }, "no prepared segment to leave alone: \(names)")
        let before = try snapshot(wald.dataDirectory)
        for format in ["text", "json", "raw", "hex"] {
            let dump = try runTool("walctl", ["dump", wald.dataDirectory, "--format", format])
            #expect(dump.status == 0, "dump --format \(format): \(dump.stderr)")
        }
        let dump = try runTool("walctl", ["dump", wald.dataDirectory])
        #expect(dump.stdout == running.stdout)
        #expect(dump.stderr.contains("torn tail in \(segment) at byte \(end) (from LSN 4)"), "\(dump.stderr)")
        let verify = try runTool("walctl", ["verify", wald.dataDirectory])
        #expect(verify.status == 0 && verify.stdout.contains("note: torn tail"), "\(verify.stdout) \(verify.stderr)")
        #expect(try snapshot(wald.dataDirectory) == before, "an offline read changed the data directory")
    }

    /// verify stopped at the first damage: the second was only found after a repair.
    @Test(.timeLimit(.minutes(1)))
    func verifyReadsEverySegmentToTheEndAndReportsEveryDamage() async throws {
        let directory = try await smallSegmentLog(count: 24)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try flipPayloadBit(directory, lsn: 2)
        try flipPayloadBit(directory, lsn: 17)
        let verify = try runTool("walctl", ["verify", directory])
        #expect(verify.status == 2)
        let damage = verify.stderr.split(separator: "\n").filter { $0.contains("DAMAGE in") }
        #expect(damage.count == 2, "\(verify.stderr)")
        #expect(damage.first?.contains("\(segmentName(1)) at byte \(64 + 124) (LSN 2)") == true, "\(damage)")
        #expect(damage.last?.contains("\(segmentName(15)) at byte \(64 + 2 * 124) (LSN 17)") == true, "\(damage)")
        #expect(verify.stdout.contains("total: 4 segments, 22 records (LSN 1...24)"), "\(verify.stdout)")
    }

    /// repair threw away everything after one flipped bit in an old segment, without a word of
    /// how much, and the next appends reused those LSNs under the same log identity.
    @Test(.timeLimit(.minutes(1)))
    func repairShowsTheCutNeedsForceAndStartsANewGeneration() async throws {
        let directory = try await smallSegmentLog(count: 24)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try flipPayloadBit(directory, lsn: 5)
        let before = try snapshot(directory)

        let refused = try runTool("walctl", ["repair", directory])
        #expect(refused.status == 3, "\(refused.stdout) \(refused.stderr)")
        #expect(refused.stdout.contains("damage in \(directory)/\(segmentName(1)) at byte \(64 + 4 * 124) (LSN 5)"), "\(refused.stdout)")
        #expect(refused.stdout.contains("records: LSN 5...24: 19 intact records"), "\(refused.stdout)")
        #expect(refused.stdout.contains("3 segments (3072 bytes), renamed to <name>.broken"), "\(refused.stdout)")
        #expect(refused.stdout.contains("records through LSN 24 look acknowledged"), "\(refused.stdout)")
        #expect(refused.stdout.contains("generation 1"), "\(refused.stdout)")
        #expect(refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(try snapshot(directory) == before, "a refused repair changed the directory")
        let dryRun = try runTool("walctl", ["repair", "--dry-run", directory])
        #expect(dryRun.status == 0 && dryRun.stdout.contains("dry run: nothing was changed"), "\(dryRun.stdout)")
        #expect(try snapshot(directory) == before, "a dry run changed the directory")

        let forced = try runTool("walctl", ["repair", "--force", directory])
        #expect(forced.status == 0, "\(forced.stdout) \(forced.stderr)")
        #expect(forced.stdout.contains("generation 1; the next append gets LSN 5"), "\(forced.stdout)")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.filter { $0.hasSuffix(".broken") }.count == 4, "\(names.sorted())")
        let verify = try runTool("walctl", ["verify", directory])
        #expect(verify.status == 0 && verify.stdout.contains("generation 1"), "\(verify.stdout) \(verify.stderr)")

        let wald = try WaldProcess(dataDirectory: directory)
        defer { wald.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        defer { client.close() }
        let info = try await client.info()
        #expect(info.generation == 1 && info.lastLSN == 4, "\(info.json)")
        #expect(try await client.append(Array("after the repair".utf8)) == 5)
    }

    /// A flipped bit after the last record of a sealed segment loses no record: repair needs no
    /// --force, zeroes it, keeps every segment and the generation, and the log reads whole.
    @Test(.timeLimit(.minutes(1)))
    func damageAfterASealedSegmentsLastRecordIsZeroedWithoutCuttingAnything() async throws {
        let directory = try await smallSegmentLog(count: 24)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/" + segmentName(1)
        var bytes = Array(try #require(FileManager.default.contents(atPath: path)))
        bytes[64 + 7 * 124 + 8] ^= 0x01  // after LSN 7, the segment's last
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let verify = try runTool("walctl", ["verify", directory])
        #expect(verify.status == 2 && verify.stderr.contains("no record is lost"), "\(verify.stdout) \(verify.stderr)")
        let repair = try runTool("walctl", ["repair", directory])
        #expect(repair.status == 0, "\(repair.stdout) \(repair.stderr)")
        #expect(repair.stdout.contains("cuts nothing: every record and segment stays, in the same generation"), "\(repair.stdout)")
        #expect(repair.stdout.contains("generation 0; the next append gets LSN 25"), "\(repair.stdout)")
        let after = try runTool("walctl", ["verify", directory])
        #expect(after.status == 0 && after.stdout.contains("total: 4 segments, 24 records (LSN 1...24)"), "\(after.stdout)")
    }

    /// A follower's log and a repaired primary's hold different records under the same LSNs:
    /// the follower must refuse to go on, and say why.
    @Test(.timeLimit(.minutes(2)))
    func aFollowerOfTheOldGenerationRefusesToContinue() async throws {
        let primaryDirectory = try await smallSegmentLog(count: 10)
        defer { try? FileManager.default.removeItem(atPath: primaryDirectory) }
        var primary = try WaldProcess(dataDirectory: primaryDirectory, arguments: ["--max-segment-bytes", "1KiB"])
        var follower = try WaldProcess(arguments: ["--follow", primary.address, "--max-segment-bytes", "1KiB"])
        defer { follower.cleanup() }
        let followerDirectory = follower.dataDirectory
        let followerEndpoint = Endpoint.tcp(host: "127.0.0.1", port: follower.port)
        try await waitForInfo(followerEndpoint, "the follower to catch up") { $0.lastLSN == 10 }
        #expect(follower.stop(signal: SIGTERM) == 0)
        #expect(primary.stop(signal: SIGTERM) == 0)

        try flipPayloadBit(primaryDirectory, lsn: 3)
        #expect(try runTool("walctl", ["repair", "--force", primaryDirectory]).status == 0)
        primary = try WaldProcess(dataDirectory: primaryDirectory, arguments: ["--max-segment-bytes", "1KiB"])
        defer { primary.cleanup() }
        try await WALClient.connect(.tcp(host: "127.0.0.1", port: primary.port)).append(Array("LSN 3 again".utf8))
        follower = try WaldProcess(dataDirectory: followerDirectory, arguments: ["--follow", primary.address, "--max-segment-bytes", "1KiB"])
        let info = try await waitForInfo(.tcp(host: "127.0.0.1", port: follower.port), "the follower to refuse") {
            ($0.raw["upstream_error"] as? String)?.contains("generation") == true
        }
        let error = info.raw["upstream_error"] as? String ?? ""
        #expect(error.contains("upstream's log is of generation 1 but this follower's is of generation 0"), "\(error)")
        #expect(info.lastLSN == 10 && info.generation == 0, "the follower's log changed: \(info.json)")
    }

    @discardableResult
    private func waitForInfo(_ endpoint: Endpoint, _ what: String, until condition: (ServerInfo) -> Bool) async throws -> ServerInfo {
        let deadline = ContinuousClock.now + .seconds(30)
        var last: ServerInfo?
        while ContinuousClock.now < deadline {
            let client = try await WALClient.connect(endpoint)
            last = try await client.info()
            client.close()
            if condition(last!) { return last! }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("waited 30 s for \(what); INFO: \(last?.json ?? "none")")
        return try #require(last)
    }
}
