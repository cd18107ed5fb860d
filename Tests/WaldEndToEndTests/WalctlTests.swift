// The built walctl binary against a real wald: append, replay, info, bench, and the offline
// verify of the data directory once the server has stopped.
import Foundation
import Testing
import WALTestSupport

@Suite(.serialized) struct WalctlTests {
    @Test(.timeLimit(.minutes(2)))
    func walctlAppendsReplaysInfosBenchesAndVerifies() async throws {
        // Small segments: verify reads every byte of each (preallocated) segment.
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "1MiB"])
        defer { wald.cleanup() }
        let server = ["--server", wald.address]

        let append = try runTool("walctl", ["append"] + server + ["a", "b", "c"])
        #expect(append.status == 0, "walctl append failed: \(append.stderr)")
        #expect(append.stdout.split(separator: "\n") == ["1", "2", "3"])

        let replay = try runTool("walctl", ["replay"] + server + ["--from", "1", "--format", "text"])
        #expect(replay.status == 0, "walctl replay failed: \(replay.stderr)")
        #expect(replay.stdout.split(separator: "\n") == ["1\ta", "2\tb", "3\tc"])

        let info = try runTool("walctl", ["info"] + server)
        #expect(info.status == 0, "walctl info failed: \(info.stderr)")
        let infoObject = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any],
                                      "walctl info did not print a JSON object: \(info.stdout)")
        #expect(infoObject["last_lsn"] as? Int == 3)

        let bench = try runTool("walctl", ["bench"] + server + ["--clients", "4", "--pipeline", "4", "--size", "100",
                                                              "--count", "2000", "--json"], timeout: 90)
        #expect(bench.status == 0 && !bench.timedOut, "walctl bench failed (\(bench.status)): \(bench.stdout) \(bench.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any],
                                  "walctl bench --json did not print one JSON object: \(bench.stdout)")
        for key in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "max_us"] {
            let value = (result[key] as? NSNumber)?.doubleValue
            #expect(value != nil && value! > 0, "\(key) is \(String(describing: result[key]))")
        }
        #expect((result["errors"] as? NSNumber)?.intValue == 0)
        #expect((result["completed"] as? NSNumber)?.intValue == 2000)
        let p50 = (result["p50_us"] as? NSNumber)?.doubleValue ?? 0
        let p99 = (result["p99_us"] as? NSNumber)?.doubleValue ?? 0
        let p999 = (result["p999_us"] as? NSNumber)?.doubleValue ?? 0
        let maximum = (result["max_us"] as? NSNumber)?.doubleValue ?? 0
        #expect(p50 <= p99 && p99 <= p999 && p999 <= maximum, "percentiles out of order: \(result)")

        let after = try runTool("walctl", ["info"] + server)
        let afterObject = try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any]
        #expect(afterObject?["last_lsn"] as? Int == 2003, "the bench's appends are not all in the log: \(after.stdout)")

        #expect(wald.stop(signal: SIGTERM) == 0, "wald did not stop cleanly: \(wald.stderrText)")
        let verify = try runTool("walctl", ["verify", wald.dataDirectory])
        #expect(verify.status == 0, "walctl verify exited \(verify.status): \(verify.stdout) \(verify.stderr)")
        #expect(verify.stdout.contains("2003 records"), "verify output: \(verify.stdout)")
    }

    @Test func walctlVerifyOfAMissingLogFails() throws {
        let missing = NSTemporaryDirectory() + "wald-e2e-nothing-\(UUID().uuidString)"
        let verify = try runTool("walctl", ["verify", missing])
        #expect(verify.exitedNormally && verify.status != 0, "verify of \(missing) exited \(verify.status)")
        #expect(!FileManager.default.fileExists(atPath: missing), "verify created \(missing)")
    }
}
