// Damage in an older segment, which open does not scan (by design), made visible on a real
// wald: a replay that reaches it gets CORRUPTION (not UNAVAILABLE), wald logs it once at error
// with file, offset and LSN, and INFO and the metrics show it; the background scrub finds it
// without any replay.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct DamageVisibilityTests {
    /// The client used to get UNAVAILABLE, the server logged nothing and INFO said all was well.
    @Test(.timeLimit(.minutes(1)))
    func aReplayThatReachesDamageGetsCorruptionLoggedOnceAndShownInInfoAndMetrics() async throws {
        let directory = try await smallSegmentLog(count: 20)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try flipPayloadBit(directory, lsn: 3)
        let wald = try WaldProcess(dataDirectory: directory, arguments: ["--max-segment-bytes", "1KiB", "--scrub-interval", "0"])
        defer { wald.cleanup() }
        let file = directory + "/" + segmentName(1)

        for _ in 0..<2 {
            let replay = try runTool("walctl", ["replay", "--server", wald.address])
            let lines = replay.stdout.split(separator: "\n")
            #expect(replay.status == 1 && lines.count == 2 && lines.first?.hasPrefix("1\t") == true, "\(replay.stdout)")
            #expect(replay.stderr.contains("CORRUPTION: corruption in \(file) at byte \(64 + 2 * 124) (LSN 3)"), "\(replay.stderr)")
        }
        let text = try RawConnection(port: wald.port)
        text.send("REPLAY 3\n")
        let line = text.readLine() ?? ""
        #expect(line.hasPrefix("ERR CORRUPTION corruption in \(file)"), "\(line)")
        // Other LSNs can still be read.
        let later = try runTool("walctl", ["replay", "--server", wald.address, "--from", "8", "--count", "2"])
        #expect(later.status == 0 && later.stdout.split(separator: "\n").count == 2, "\(later.stderr)")

        let info = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port)).info()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(info.json.utf8)) as? [String: Any])
        let damage = try #require(object["damage"] as? [[String: Any]], "\(info.json)")
        #expect(damage.count == 1, "\(info.json)")
        #expect(damage.first?["file"] as? String == file && damage.first?["lsn"] as? Int == 3
                && damage.first?["offset"] as? Int == 64 + 2 * 124 && damage.first?["found_by"] as? String == "replay", "\(damage)")
        let metrics = text.metricsText()
        #expect(metrics.contains("\nwald_damaged_places 1"), "\(metrics)")
        wald.stop(signal: SIGTERM)
        let logged = wald.stderrText.split(separator: "\n").filter { $0.contains("the log is damaged") }
        #expect(logged.count == 1, "logged \(logged.count) times:\n\(wald.stderrText)")
        #expect(logged.first?.contains(" error ") == true && logged.first?.contains("lsn=3") == true
                && logged.first?.contains("offset=\(64 + 2 * 124)") == true, "\(logged)")
    }

    /// Nobody replays the old segment: only the scrub can find its damage.
    @Test(.timeLimit(.minutes(1)))
    func theScrubFindsDamageInASealedSegment() async throws {
        let directory = try await smallSegmentLog(count: 20)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try flipPayloadBit(directory, lsn: 10)
        let wald = try WaldProcess(dataDirectory: directory, arguments: ["--max-segment-bytes", "1KiB", "--scrub-interval", "50ms"])
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        var json = ""
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            json = try await WALClient.connect(endpoint).info().json
            if json.contains("\"found_by\":\"scrub\"") { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let file = directory + "/" + segmentName(8)
        #expect(json.contains("\"damage\":[{\"file\":\"\(file)\",\"offset\":\(64 + 2 * 124),\"lsn\":10,"), "\(json)")
        #expect(json.contains("\"found_by\":\"scrub\""), "\(json)")
        // Passes go on; the damage is reported once.
        let passes = { (text: String) -> Int in
            Int(text.split(separator: "\"passes\":").last?.prefix { $0.isNumber } ?? "") ?? 0
        }
        let first = passes(json)
        while ContinuousClock.now < deadline && passes(json) < first + 2 {
            json = try await WALClient.connect(endpoint).info().json
            try await Task.sleep(for: .milliseconds(50))
        }
        wald.stop(signal: SIGTERM)
        let logged = wald.stderrText.split(separator: "\n").filter { $0.contains("the log is damaged") }
        #expect(logged.count == 1 && logged.first?.contains("found_by=scrub") == true, "\(wald.stderrText)")
    }
}
