// wald and walctl when their own output fails: stderr on a full device (/dev/full) or a pipe
// nobody reads any more. Logging never takes wald down (lost lines are counted), and walctl
// reports a failed stdout instead of trapping or exiting 0 with its output gone.
import Foundation
import Testing
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct OutputFailureTests {
    /// Reads the METRICS text up to `# EOF` and returns the value of `name`.
    private func metric(_ name: String, on c: RawConnection) -> Double? {
        c.send("METRICS\n")
        var value: Double?
        while let line = c.readLine(), line != "# EOF" {
            if line.hasPrefix(name + " ") { value = Double(line.dropFirst(name.count + 1)) }
        }
        return value
    }

    @Test(.timeLimit(.minutes(1)))
    func waldWithStderrOnAFullDeviceServesAndStopsCleanly() throws {
        let full = try #require(FileHandle(forWritingAtPath: "/dev/full"))
        // At info, wald logs while it opens the log and listens, and again when it stops.
        let wald = try WaldProcess(arguments: ["--log-level", "info"], standardError: full)
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("APPEND kept despite the log\nREPLAY 1\n")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "RECORD 1 20")
        #expect(c.readLine() == "kept despite the log")
        #expect(c.readLine() == "END 2")
        let dropped = try #require(metric("wald_log_lines_dropped_total", on: c), "no wald_log_lines_dropped_total in METRICS")
        #expect(dropped >= 2, "the start-up lines were not counted as dropped")
        #expect(wald.stop(signal: SIGTERM) == 0)
        #expect(wald.process.terminationReason == .exit)
    }

    @Test(.timeLimit(.minutes(1)))
    func waldWhoseStderrPipeLostItsReaderKeepsServing() throws {
        let pipe = Pipe()
        try pipe.fileHandleForReading.close()
        let wald = try WaldProcess(arguments: ["--log-level", "info"], standardError: pipe.fileHandleForWriting)
        defer { wald.cleanup() }
        let c = try RawConnection(port: wald.port)
        c.send("APPEND after EPIPE\nPING\n")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "PONG")
        #expect(wald.stop(signal: SIGTERM) == 0)
        #expect(wald.process.terminationReason == .exit)
    }

    @Test(.timeLimit(.minutes(2)))
    func waldWhoseStderrPipeIsNeverReadKeepsServing() throws {
        // The test holds the read end and never reads: the 64 KiB pipe fills with the warning
        // each refused connection logs on the event loop, which must drop lines, not wait.
        let pipe = Pipe()
        let wald = try WaldProcess(arguments: ["--log-level", "info", "--max-connections", "1"],
                                   standardError: pipe.fileHandleForWriting)
        defer { wald.cleanup() }
        let held = try RawConnection(port: wald.port)
        held.send("PING\n")
        #expect(held.readLine() == "PONG")
        for _ in 0..<1000 { _ = try RawConnection(port: wald.port) }
        held.send("APPEND while the log is stuck\n")
        let reply = held.readLine()
        #expect(reply == "OK 1", "the event loop is stuck writing a log line")
        guard reply == "OK 1" else { return }  // a stuck wald would not stop on SIGTERM either
        let dropped = try #require(metric("wald_log_lines_dropped_total", on: held))
        #expect(dropped > 0)
        #expect(wald.stop(signal: SIGTERM) == 0)
        _ = pipe  // the read end stays open (and unread) until here
    }

    @Test(.timeLimit(.minutes(1)))
    func walctlWithStdoutOnAFullDeviceSaysSoAndFails() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let server = ["--server", "127.0.0.1:\(wald.port)"]
        #expect(try runTool("walctl", ["append"] + server + ["one", "two"]).status == 0)
        for arguments in [["replay", "--from", "1", "--format", "raw"], ["replay", "--from", "1"], ["info"]] {
            let full = try #require(FileHandle(forWritingAtPath: "/dev/full"))
            let result = try runTool("walctl", arguments + server, standardOutput: full)
            #expect(result.exitedNormally, "walctl \(arguments) trapped (signal \(result.status)): \(result.stderr)")
            #expect(result.status == 1, "walctl \(arguments) exited \(result.status) with its output lost")
            #expect(result.stderr.contains("cannot write to standard output: No space left on device"), "walctl \(arguments): \(result.stderr)")
        }
        wald.stop()
        let full = try #require(FileHandle(forWritingAtPath: "/dev/full"))
        let verify = try runTool("walctl", ["verify", wald.dataDirectory], standardOutput: full)
        #expect(verify.exitedNormally && verify.status == 1)
        #expect(verify.stderr.contains("cannot write to standard output: No space left on device"), "\(verify.stderr)")
    }

    @Test(.timeLimit(.minutes(1)))
    func walctlWithStderrOnAFullDeviceStillRunsAndReportsByExitStatus() throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let server = ["--server", "127.0.0.1:\(wald.port)"]
        // bench writes its progress and a closing newline to stderr; append with no input fails.
        let full = try #require(FileHandle(forWritingAtPath: "/dev/full"))
        let bench = try runTool("walctl", ["bench"] + server + ["--clients", "1", "--pipeline", "1", "--size", "10", "--count", "5"],
                                standardError: full)
        #expect(bench.exitedNormally && bench.status == 0, "walctl bench: \(bench.status) \(bench.stdout)")
        #expect(bench.stdout.contains("5 appends in"))
        let failing = try runTool("walctl", ["truncate"] + server + ["--before", "99"], standardError: full)
        #expect(failing.exitedNormally && failing.status != 0)
    }
}
