// systemd's watchdog, tied to the writer's health: a ping (WATCHDOG=1) is sent only after a
// round trip through the writer actor and an fdatasync completed within the interval. A
// process that is alive but cannot make anything durable is not healthy: if an fdatasync
// hangs, pings stop and systemd restarts wald; if the WAL enters its failed state,
// WATCHDOG=trigger asks for the restart at once.
import Logging
import Synchronization
import WALCore
import WALSync

struct WriterWatchdog: Sendable {
    let wal: WAL
    let interval: Duration
    let logger: Logger

    private struct ProbeState: Sendable {
        var outstanding = false
        var lastSuccess: ContinuousClock.Instant?
        var failure: String?
    }

    /// Shared between the ping loop and the probe task in flight.
    private final class Probe: Sendable {
        let state = WALMutex(ProbeState())
    }

    /// Runs until cancelled; returns early after triggering the watchdog for a failed WAL.
    func run() async {
        let probe = Probe()
        let period = interval / 2
        var withheld = false
        while !Task.isCancelled {
            let start = probe.state.withLock { s -> Bool in
                guard !s.outstanding else { return false }
                s.outstanding = true
                return true
            }
            if start {
                let wal = self.wal
                Task {
                    do {
                        _ = try await wal.probe()
                        probe.state.withLock { $0.lastSuccess = ContinuousClock.now; $0.outstanding = false }
                    } catch {
                        probe.state.withLock { $0.failure = "\(error)"; $0.outstanding = false }
                    }
                }
            }
            do { try await Task.sleep(for: period) } catch { return }
            let snapshot = probe.state.withLock { $0 }
            if let failure = snapshot.failure {
                logger.critical("the WAL has failed; asking systemd to restart wald", metadata: ["reason": "\(failure)"])
                Systemd.notify("STATUS=failed: \(failure)\nWATCHDOG=trigger")
                return
            }
            if let last = snapshot.lastSuccess, ContinuousClock.now - last < interval {
                Systemd.notify("WATCHDOG=1")
                if withheld {
                    logger.notice("writer healthy again; watchdog pings resumed")
                    withheld = false
                }
            } else if !withheld {
                withheld = true
                logger.error("no fdatasync round trip completed within the watchdog interval; withholding pings",
                             metadata: ["interval": "\(interval)"])
            }
        }
    }
}
