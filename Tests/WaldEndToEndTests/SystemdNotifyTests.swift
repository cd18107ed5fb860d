// wald's conversation with systemd, seen from the service manager's side without systemd:
// readiness and status, the watchdog tied to the writer's health, reload, stop, fatal start,
// socket activation, metrics, and journald-formatted logs. Every notification is recorded from
// NOTIFY_SOCKET with its arrival time and sender pid (NotifyAccess=main: wald sends its own).
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct SystemdNotifyTests {
    // MARK: readiness and status

    @Test(.timeLimit(.minutes(1)))
    func readyComesAfterRecoveryAndTheReadyLineAndStatusTracksTheLog() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let wald = try h.start()
        let n = h.notifications
        let ready = try await n.require("READY=1") { $0.value("READY") == "1" }
        // wald prints its ready line and flushes stdout before READY=1: it is already there.
        let readyLine = try #require(wald.readyAddresses, "READY=1 arrived before the ready line; stdout: \(wald.stdoutText)")
        let port = try wald.tcpPort(readyLine)
        // A client connecting the moment READY=1 arrives is served.
        let c = try RawConnection(port: port)
        c.send("PING\n")
        #expect(c.readLine() == "PONG")

        let recovering = n.messages.first { $0.value("STATUS")?.hasPrefix("recovering ") == true }
        #expect(recovering?.value("STATUS") == "recovering \(wald.dataDirectory)", "\(n.dump())")
        #expect((recovering?.index ?? .max) < ready.index, "STATUS=recovering must come before READY=1:\n\(n.dump())")
        #expect(n.messages.filter { $0.value("READY") != nil }.count == 1, "READY sent more than once:\n\(n.dump())")
        let readyStatus = ready.value("STATUS") ?? ""
        #expect(readyStatus.hasPrefix("serving ") && readyStatus.contains("127.0.0.1:\(port)")
                    && readyStatus.contains("last LSN 0") && readyStatus.contains("durable LSN 0")
                    && readyStatus.contains("connections"),
                "READY=1 without a serving STATUS: \(ready)")

        // The periodic STATUS follows the log and the connection count.
        c.send("APPEND one\nAPPEND two\nAPPEND three\n")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "OK 2")
        #expect(c.readLine() == "OK 3")
        let mark = n.count
        let first = try await n.require("a periodic STATUS after three appends", from: mark, timeout: .seconds(6)) {
            $0.value("STATUS") != nil
        }
        let status = first.value("STATUS") ?? ""
        #expect(status.contains("last LSN 3") && status.contains("durable LSN 3") && status.contains(" 1 connections"),
                "STATUS does not show last LSN 3, durable LSN 3, 1 connection: \(status)")
        let second = try await n.require("a second periodic STATUS", from: first.index + 1, timeout: .seconds(6)) {
            $0.value("STATUS") != nil
        }
        let gap = second.time - first.time
        #expect(gap > .milliseconds(1000) && gap < .milliseconds(5000), "STATUS refreshed after \(gap), expected about 2 s")

        // Every notification came from wald itself, and without WATCHDOG_USEC there are no pings.
        #expect(n.messages.allSatisfy { $0.pid == wald.pid }, "a notification not from wald's pid \(wald.pid):\n\(n.dump())")
        #expect(!n.messages.contains { $0.value("WATCHDOG") != nil }, "watchdog messages without WATCHDOG_USEC:\n\(n.dump())")
        #expect(!wald.stderrText.contains("watchdog enabled"))
    }

    // MARK: watchdog

    @Test(.timeLimit(.minutes(1)))
    func watchdogPingsOnlyWhileFdatasyncCompletes() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let fault = h.path("fault")
        let wald = try h.start(environment: ["WATCHDOG_USEC": "500000", "WALD_TEST_FAULT_FILE": fault],
                               launcher: .watchdogPIDIsSelf)
        let n = h.notifications
        _ = try await n.require("READY=1") { $0.value("READY") == "1" }
        _ = try await n.require("a first WATCHDOG=1", timeout: .seconds(5)) { $0.value("WATCHDOG") == "1" }
        #expect(wald.stderrText.contains("watchdog enabled"), "stderr:\n\(wald.stderrText)")

        // Healthy: a ping every interval/2 (250 ms), counted loosely over 2 s.
        let windowStart = ContinuousClock.now
        try await Task.sleep(for: .seconds(2))
        let windowEnd = ContinuousClock.now
        let pings = n.messages.filter { $0.value("WATCHDOG") == "1" && $0.time >= windowStart && $0.time <= windowEnd }
        // Loose on purpose: under a loaded CI machine one fdatasync can take hundreds of ms, and
        // the 2 s sleep itself can last 5 s (seen: 22 pings in 5.56 s), so the ceiling follows
        // the window this process really slept.
        let window = windowEnd - windowStart
        let expected = Int(window / .milliseconds(250))
        #expect(pings.count >= 2 && pings.count <= expected + 4, "\(pings.count) WATCHDOG=1 in \(window), expected about \(expected)")
        #expect(pings.allSatisfy { $0.pid == wald.pid }, "pings not from wald's pid \(wald.pid)")

        // fdatasync blocks: the process is alive but nothing becomes durable, so pings stop
        // within one interval (0.5 s, plus slack) of the stall.
        try h.write("stall", to: fault)
        let stallStart = ContinuousClock.now
        try await Task.sleep(for: .seconds(2))
        #expect(wald.isRunning, "wald died during the stall; stderr:\n\(wald.stderrText)")
        // The last good fdatasync ended by stallStart plus one sync's time (a sync already running
        // when the stall began still completes): pings may go on until one interval after it.
        // Slack for a slow sync on a loaded machine: none after 1.5 s, at most 6 in all.
        let during = n.messages.filter { $0.value("WATCHDOG") == "1" && $0.time > stallStart }
        let late = during.filter { $0.time > stallStart + .milliseconds(1500) }
        #expect(late.isEmpty && during.count <= 6,
                "WATCHDOG=1 kept coming during a stalled fdatasync, at \(during.map { $0.time - stallStart }) after the stall")
        #expect(!n.messages.contains { $0.value("WATCHDOG") == "trigger" }, "a stall is not a failure:\n\(n.dump())")
        #expect(wald.stderrText.contains("withholding pings"), "no log line about withheld pings; stderr:\n\(wald.stderrText)")

        // The sync completes: pings resume.
        try h.write("", to: fault)
        let resumeStart = ContinuousClock.now
        let resumed = await n.wait(timeout: .seconds(5)) { $0.value("WATCHDOG") == "1" && $0.time > resumeStart }
        #expect(resumed != nil, "no WATCHDOG=1 within 5 s after the stall ended:\n\(n.dump())")
        try await Task.sleep(for: .milliseconds(1500))
        let after = n.messages.filter { $0.value("WATCHDOG") == "1" && $0.time > resumeStart }
        #expect(after.count >= 1, "no ping in the first ~1.5 s after the stall ended")
        #expect(wald.stderrText.contains("pings resumed"), "stderr:\n\(wald.stderrText)")
    }

    @Test(.timeLimit(.minutes(1)))
    func watchdogIsOffWhenWatchdogPIDNamesAnotherProcess() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        // PID 1 is not wald: the watchdog is meant for another process.
        let wald = try h.start(environment: ["WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
        let n = h.notifications
        let ready = try await n.require("READY=1") { $0.value("READY") == "1" }
        try await Task.sleep(for: .milliseconds(1200))
        #expect(!n.messages.contains { $0.value("WATCHDOG") != nil }, "pings for a watchdog meant for PID 1:\n\(n.dump())")
        #expect(!wald.stderrText.contains("watchdog enabled"))
        #expect(ready.pid == wald.pid)
    }

    @Test(.timeLimit(.minutes(1)))
    func failedFdatasyncTriggersTheWatchdogAndAppendsAreUnavailable() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let fault = h.path("fault")
        let wald = try h.start(environment: ["WATCHDOG_USEC": "500000", "WALD_TEST_FAULT_FILE": fault],
                               launcher: .watchdogPIDIsSelf)
        let n = h.notifications
        _ = try await n.require("READY=1") { $0.value("READY") == "1" }
        let port = try wald.tcpPort(try await wald.waitForReady())
        _ = try await n.require("a first WATCHDOG=1", timeout: .seconds(5)) { $0.value("WATCHDOG") == "1" }
        let c = try RawConnection(port: port)
        c.send("APPEND before\n")
        #expect(c.readLine() == "OK 1")

        // The next fdatasync fails with EIO; the watchdog's own probe finds it, no append needed.
        try h.write("fail", to: fault)
        let trigger = try await n.require("WATCHDOG=trigger", timeout: .seconds(5)) { $0.value("WATCHDOG") == "trigger" }
        #expect(trigger.pid == wald.pid)
        #expect(trigger.value("STATUS")?.hasPrefix("failed") == true, "WATCHDOG=trigger without STATUS=failed…: \(trigger)")
        c.send("APPEND after\n")
        let reply = c.readLine() ?? "<closed>"
        #expect(reply.hasPrefix("ERR UNAVAILABLE"), "APPEND on a failed WAL got \(reply)")
        c.send("PING\n")
        #expect(c.readLine() == "PONG", "the connection should stay open after UNAVAILABLE")

        // The periodic STATUS says failed too, and no WATCHDOG=1 follows the trigger.
        let status = try await n.require("a periodic STATUS after the trigger", from: trigger.index + 1, timeout: .seconds(6)) {
            $0.value("STATUS") != nil
        }
        #expect(status.value("STATUS")?.hasPrefix("failed") == true, "STATUS after the failure: \(status)")
        #expect(!n.messages.contains { $0.value("WATCHDOG") == "1" && $0.index > trigger.index },
                "WATCHDOG=1 after WATCHDOG=trigger:\n\(n.dump(from: trigger.index))")
        #expect(wald.isRunning, "wald should stay up for systemd to restart it")

        // Stopping cannot make the log durable: a fatal exit with the reason and an errno.
        let stopMark = n.count
        wald.signal(SIGTERM)
        let exit = try #require(await wald.waitForExit(), "wald did not exit within 30 s of SIGTERM")
        #expect(exit.exited && exit.status != 0, "exit \(exit) after SIGTERM on a failed WAL")
        let final = n.messages.filter { $0.index >= stopMark }
        #expect(final.contains { $0.value("STOPPING") == "1" }, "no STOPPING=1:\n\(n.dump(from: stopMark))")
        #expect(final.contains { $0.value("ERRNO") != nil && $0.value("STATUS") != nil },
                "no STATUS= with ERRNO= on the fatal stop:\n\(n.dump(from: stopMark))")
    }

    // MARK: reload

    /// Sends SIGHUP and returns the RELOADING=1 and the READY=1 that follows it, checking
    /// MONOTONIC_USEC against this process's CLOCK_MONOTONIC around the reload.
    private func reload(_ wald: NotifiedWald, _ n: NotifySocket,
                        sourceLocation: SourceLocation = #_sourceLocation) async throws -> (NotifyMessage, NotifyMessage) {
        let mark = n.count
        let before = monotonicMicroseconds()
        wald.signal(SIGHUP)
        let reloading = try await n.require("RELOADING=1", from: mark, timeout: .seconds(10), sourceLocation: sourceLocation) {
            $0.value("RELOADING") == "1"
        }
        let after = monotonicMicroseconds()
        let usec = UInt64(reloading.value("MONOTONIC_USEC") ?? "")
        #expect(usec.map { $0 >= before && $0 <= after } == true,
                "MONOTONIC_USEC \(reloading.value("MONOTONIC_USEC") ?? "missing") is not CLOCK_MONOTONIC between \(before) and \(after)",
                sourceLocation: sourceLocation)
        #expect(reloading.pid == wald.pid, sourceLocation: sourceLocation)
        let ready = try await n.require("READY=1 after RELOADING=1", from: reloading.index + 1, timeout: .seconds(10),
                                        sourceLocation: sourceLocation) { $0.value("READY") == "1" }
        #expect(ready.value("STATUS")?.hasPrefix("serving") == true, "READY=1 after reload: \(ready)", sourceLocation: sourceLocation)
        return (reloading, ready)
    }

    @Test(.timeLimit(.minutes(1)))
    func sighupReloadsTheConfigFileAndKeepsTheOldOneWhenTheNewOneIsBroken() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let config = h.path("wald.yaml")
        try h.write("max_connections: 8\n", to: config)
        let wald = try h.start(["--listen", "127.0.0.1:0", "--config", config])
        let n = h.notifications
        _ = try await n.require("READY=1") { $0.value("READY") == "1" }
        let port = try wald.tcpPort(try await wald.waitForReady())
        let a = try RawConnection(port: port)
        a.send("PING\n")
        #expect(a.readLine() == "PONG")

        // max_connections 8 → 1: with `a` open, a second connection is refused.
        try h.write("max_connections: 1\n", to: config)
        _ = try await reload(wald, n)
        let b = try RawConnection(port: port, timeoutSeconds: 5)
        #expect(b.readLine() == "ERR BUSY too many connections", "a second connection with max_connections 1")
        #expect(b.readLine() == nil, "a BUSY connection is closed")
        a.send("PING\n")
        #expect(a.readLine() == "PONG", "the connection that was already open is still served")

        // auth_token set (max_connections back to the default): appends need AUTH.
        try h.write("auth_token: s3cret\n", to: config)
        _ = try await reload(wald, n)
        let c = try RawConnection(port: port)
        c.send("APPEND x\n")
        #expect(c.readLine()?.hasPrefix("ERR UNAUTHORIZED") == true, "APPEND without AUTH after auth_token was set")
        c.send("AUTH s3cret\nAPPEND x\n")
        #expect(c.readLine() == "OK")
        #expect(c.readLine() == "OK 1")

        // Broken files: rejected with an error line; the running configuration stays; READY=1 still follows.
        for broken in ["max_conections: 1\n", "auth_token: s3cret\nmax_connections: lots\n", "max_connections: [1\n"] {
            let errorsBefore = errorLines(wald.stderrText).count
            try h.write(broken, to: config)
            _ = try await reload(wald, n)
            #expect(errorLines(wald.stderrText).count > errorsBefore,
                    "no error logged for a broken config \(broken.debugDescription); stderr:\n\(wald.stderrText)")
            let d = try RawConnection(port: port)
            d.send("APPEND y\n")
            #expect(d.readLine()?.hasPrefix("ERR UNAUTHORIZED") == true,
                    "after the broken config \(broken.debugDescription) the token no longer applies")
            let e = try RawConnection(port: port)  // max_connections is still 1024: a third connection is served
            e.send("PING\n")
            #expect(e.readLine() == "PONG", "after the broken config \(broken.debugDescription)")
        }
        #expect(wald.isRunning)
        #expect(wald.stderrText.contains("reload rejected"), "stderr:\n\(wald.stderrText)")
    }

    private func errorLines(_ stderr: String) -> [Substring] {
        stderr.split(separator: "\n").filter { $0.contains(" error ") && $0.contains("reload") }
    }

    // MARK: stop and fatal start

    @Test(.timeLimit(.minutes(1)))
    func sigtermSendsStoppingAndExitsZero() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let wald = try h.start()
        let n = h.notifications
        let ready = try await n.require("READY=1") { $0.value("READY") == "1" }
        let c = try RawConnection(port: try wald.tcpPort(try await wald.waitForReady()))
        c.send("APPEND kept\n")
        #expect(c.readLine() == "OK 1")
        wald.signal(SIGTERM)
        let exit = try #require(await wald.waitForExit(), "wald did not exit within 30 s of SIGTERM")
        #expect(exit.exited && exit.status == 0, "exit \(exit); stderr:\n\(wald.stderrText)")
        let stopping = n.messages.first { $0.value("STOPPING") == "1" }
        #expect(stopping != nil, "no STOPPING=1:\n\(n.dump())")
        #expect((stopping?.index ?? 0) > ready.index)
        #expect(stopping?.pid == wald.pid)
        let afterStop = n.messages.filter { $0.index > (stopping?.index ?? 0) }
        #expect(!afterStop.contains { $0.value("READY") != nil || $0.value("ERRNO") != nil },
                "READY= or ERRNO= after STOPPING=1 on a clean stop:\n\(n.dump())")
        // The periodic status task used to wake from its cancelled sleep and send one more.
        #expect(!afterStop.contains { $0.value("STATUS")?.hasPrefix("serving") == true },
                "STATUS=serving after STOPPING=1:\n\(n.dump())")
    }

    @Test(.timeLimit(.minutes(1)))
    func lockedDataDirectoryIsAFatalStartWithStatusAndErrno() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let first = try h.start(notify: false)
        _ = try await first.waitForReady()
        let second = try h.start(dataDirectory: first.dataDirectory)
        let exit = try #require(await second.waitForExit(), "the second wald kept running")
        #expect(exit.exited && exit.status != 0, "the second wald exited with \(exit)")
        #expect(second.readyAddresses == nil, "the second wald printed a ready line")
        let n = h.notifications
        let mine = n.messages.filter { $0.pid == second.pid }
        #expect(mine.count == n.count, "notifications from another pid than the second wald:\n\(n.dump())")
        #expect(!mine.contains { $0.value("READY") != nil }, "READY from a wald that could not start:\n\(n.dump())")
        let fatal = mine.first { $0.value("ERRNO") != nil }
        #expect(fatal?.value("ERRNO") == "\(EWOULDBLOCK)", "ERRNO for a locked directory:\n\(n.dump())")
        let reason = fatal?.value("STATUS") ?? ""
        #expect(reason.lowercased().contains("locked") && reason.contains(first.dataDirectory),
                "STATUS does not give the reason: \(reason)")
        #expect(first.isRunning, "the first wald stopped")
    }

    @Test(.timeLimit(.minutes(1)))
    func invalidConfigurationIsReportedBeforeAnythingElse() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let wald = try h.start(["--listen", "127.0.0.1:0", "--max-connections", "0"])
        let exit = try #require(await wald.waitForExit(), "wald kept running with --max-connections 0")
        #expect(exit.exited && exit.status != 0, "exit \(exit)")
        let n = h.notifications
        let status = n.messages.first { $0.value("STATUS") != nil }?.value("STATUS") ?? ""
        #expect(status.hasPrefix("invalid configuration") && status.contains("max-connections"), "\(n.dump())")
        #expect(!n.messages.contains { $0.value("READY") != nil || $0.value("STATUS")?.hasPrefix("recovering") == true },
                "\(n.dump())")
    }

    // MARK: socket activation

    @Test(.timeLimit(.minutes(1)))
    func socketActivationServesOnTheInheritedSockets() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let walPort = try freeLoopbackPort()
        let metricsPort = try freeLoopbackPort()
        let unixPath = h.path("wal.sock")
        // No --listen: the default (or the config file's) is replaced by the inherited sockets.
        let wald = try h.start([], launcher: .socketActivate([
            "-l", "127.0.0.1:\(walPort)", "-l", unixPath, "-l", "127.0.0.1:\(metricsPort)",
            "--fdname=wal:wal:metrics", "-E", "NOTIFY_SOCKET",
        ]))
        // systemd-socket-activate execs wald at the first connection.
        let c = try await connectWhenListening(port: walPort)
        c.send("PING\n")
        #expect(c.readLine() == "PONG", "PING over the inherited TCP socket; stderr:\n\(wald.stderrText)")
        let addresses = try await wald.waitForReady()
        #expect(Set(addresses) == ["127.0.0.1:\(walPort)", "unix:" + unixPath, "metrics=127.0.0.1:\(metricsPort)"],
                "ready line \(addresses)")
        let n = h.notifications
        let ready = try await n.require("READY=1") { $0.value("READY") == "1" }
        #expect(ready.pid == wald.pid, "READY=1 from pid \(ready.pid.map(String.init) ?? "?"), wald is \(wald.pid)")
        #expect(ready.value("STATUS")?.contains("127.0.0.1:\(walPort)") == true, "\(ready)")

        let u = try UnixLineConnection(path: unixPath)
        u.send("PING\nAPPEND over unix\n")
        #expect(u.readLine() == "PONG")
        #expect(u.readLine() == "OK 1")
        let metrics = try httpGet(port: metricsPort, path: "/metrics")
        #expect(metrics.statusLine.hasSuffix(" 200 OK") || metrics.statusLine.contains(" 200"), "\(metrics.statusLine)")
        #expect(metrics.response.contains("wald_appended_records_total"))
        #expect(wald.stderrText.contains("serving on sockets passed by systemd"), "stderr:\n\(wald.stderrText)")

        wald.signal(SIGTERM)
        let exit = try #require(await wald.waitForExit(), "wald did not exit within 30 s of SIGTERM")
        #expect(exit.exited && exit.status == 0, "exit \(exit); stderr:\n\(wald.stderrText)")
    }

    /// An explicit --listen that names other addresses than the sockets systemd passes used to
    /// be ignored in silence.
    @Test(.timeLimit(.minutes(1)))
    func socketActivationWithAnExplicitListenThatDoesNotMatchIsAnError() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let walPort = try freeLoopbackPort()
        let otherPort = try freeLoopbackPort()
        let wald = try h.start(["--listen", "127.0.0.1:\(otherPort)"], launcher: .socketActivate([
            "-l", "127.0.0.1:\(walPort)", "--fdname=wal", "-E", "NOTIFY_SOCKET",
        ]))
        _ = try? await connectWhenListening(port: walPort)
        let exit = try #require(await wald.waitForExit(), "wald kept running with a --listen systemd did not pass")
        #expect(exit.exited && exit.status != 0, "exit \(exit)")
        #expect(wald.stderrText.contains("--listen 127.0.0.1:\(otherPort) does not match the sockets systemd passed (127.0.0.1:\(walPort))"),
                "\(wald.stderrText)")
        #expect(!FileManager.default.fileExists(atPath: wald.dataDirectory), "a refused start created the data directory")
    }

    // MARK: metrics

    @Test(.timeLimit(.minutes(1)))
    func metricsOverTheTextProtocolAndHTTP() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let wald = try h.start(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], notify: false)
        let addresses = try await wald.waitForReady()
        let port = try wald.tcpPort(addresses)
        let metricsAddress = try #require(addresses.first { $0.hasPrefix("metrics=") }, "no metrics= on the ready line \(addresses)")
        let metricsPort = try #require(UInt16(metricsAddress.split(separator: ":").last ?? ""), "\(metricsAddress)")
        let names = ["wald_appended_records_total", "wald_fsync_duration_seconds", "wald_connections"]

        let c = try RawConnection(port: port)
        c.send("APPEND a\nAPPEND b\nMETRICS\n")
        #expect(c.readLine() == "OK 1")
        #expect(c.readLine() == "OK 2")
        var lines: [String] = []
        while lines.count < 5000, let line = c.readLine() {
            lines.append(line)
            if line == "# EOF" { break }
        }
        #expect(lines.last == "# EOF", "METRICS did not end with # EOF: \(lines.suffix(3))")
        for name in names {
            #expect(lines.contains { $0.hasPrefix(name) }, "METRICS lacks \(name)")
        }
        #expect(lines.contains { $0.hasPrefix("wald_appended_records_total") && $0.split(separator: " ").last == "2" },
                "wald_appended_records_total is not 2: \(lines.filter { $0.hasPrefix("wald_appended_records_total") })")
        c.send("PING\n")
        #expect(c.readLine() == "PONG", "the connection is usable after METRICS")

        let ok = try httpGet(port: metricsPort, path: "/metrics")
        #expect(ok.statusLine.hasPrefix("HTTP/1.") && ok.statusLine.contains(" 200"), "GET /metrics: \(ok.statusLine)")
        #expect(ok.response.lowercased().contains("content-type: text/plain"), "\(ok.response.prefix(300))")
        for name in names {
            #expect(ok.response.contains(name), "GET /metrics lacks \(name)")
        }
        let missing = try httpGet(port: metricsPort, path: "/nothing-here")
        #expect(missing.statusLine.hasPrefix("HTTP/1.") && missing.statusLine.contains(" 404"), "GET /nothing-here: \(missing.statusLine)")
    }

    // MARK: journald

    private func runAndStop(_ h: NotifyHarness, environment: [String: String], stderrPath: String) async throws -> [String] {
        let wald = try h.start(environment: environment.merging(["WALD_TEST_FAULT_FILE": h.path("no-fault")]) { $1 },
                               notify: false, stderrPath: stderrPath)
        _ = try await wald.waitForReady()
        wald.signal(SIGTERM)
        let exit = try #require(await wald.waitForExit(), "wald did not exit within 30 s of SIGTERM")
        #expect(exit.exited && exit.status == 0)
        return wald.stderrText.split(separator: "\n").map(String.init)
    }

    @Test(.timeLimit(.minutes(1)))
    func logLinesHaveAPriorityPrefixOnlyWhenStderrIsTheJournalStream() async throws {
        let h = try NotifyHarness()
        defer { h.cleanup() }
        let timestamp = #/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z /#
        let priority = #/^<[0-7]>\S/#

        // stderr is the stream JOURNAL_STREAM names (st_dev:st_ino, as systemd writes it).
        let journalPath = h.path("journal.stderr")
        _ = FileManager.default.createFile(atPath: journalPath, contents: nil)
        var info = stat()
        try #require(stat(journalPath, &info) == 0)
        let journal = try await runAndStop(h, environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"], stderrPath: journalPath)
        #expect(!journal.isEmpty)
        for line in journal {
            #expect(line.firstMatch(of: priority) != nil, "a journal line without a <N> prefix: \(line)")
            #expect(line.firstMatch(of: #/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/#) == nil, "a journal line with a timestamp: \(line)")
        }
        #expect(journal.contains { $0.hasPrefix("<4>") && $0.contains("fault injection") }, "no <4> warning:\n\(journal)")
        #expect(journal.contains { $0.hasPrefix("<5>") && $0.contains("stopped cleanly") }, "no <5> notice:\n\(journal)")
        #expect(journal.contains { $0.hasPrefix("<6>") && $0.contains("listening") }, "no <6> info:\n\(journal)")

        // No JOURNAL_STREAM, and one naming another file: human-readable lines with a timestamp.
        let other = try await runAndStop(h, environment: [:], stderrPath: h.path("plain.stderr"))
        let mismatched = try await runAndStop(h, environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"],
                                              stderrPath: h.path("mismatched.stderr"))
        for (name, lines) in [("without JOURNAL_STREAM", other), ("with another file's JOURNAL_STREAM", mismatched)] {
            #expect(!lines.isEmpty, "\(name): no log lines")
            for line in lines {
                #expect(line.firstMatch(of: timestamp) != nil, "\(name): a line without a timestamp: \(line)")
                #expect(line.firstMatch(of: #/^</#) == nil, "\(name): a line with a priority prefix: \(line)")
            }
            #expect(lines.contains { $0.contains(" warning ") && $0.contains("fault injection") }, "\(name):\n\(lines)")
            // The documented test variable is known, not an "unknown environment variable".
            #expect(!lines.contains { $0.contains("unknown environment variable") }, "\(name):\n\(lines)")
        }
    }
}
