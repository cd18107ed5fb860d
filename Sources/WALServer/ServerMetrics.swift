// Counters the server keeps for INFO and the METRICS command.
import Synchronization
import WALCore

final class ServerMetrics: Sendable {
    private struct Counters {
        var appendedRecords: UInt64 = 0
        var appendedBytes: UInt64 = 0
        var connectionsAccepted: UInt64 = 0
        var connectionsRejected: UInt64 = 0
        var replayStreams = 0
        var followStreams = 0
    }

    private let counters = Mutex(Counters())

    func appended(records: Int, bytes: Int) {
        counters.withLock {
            $0.appendedRecords += UInt64(records)
            $0.appendedBytes += UInt64(bytes)
        }
    }

    func connectionAccepted() { counters.withLock { $0.connectionsAccepted += 1 } }
    func connectionRejected() { counters.withLock { $0.connectionsRejected += 1 } }
    func connectionClosed() {}

    func streamStarted(follow: Bool) {
        counters.withLock { if follow { $0.followStreams += 1 } else { $0.replayStreams += 1 } }
    }

    func streamEnded(follow: Bool) {
        counters.withLock { if follow { $0.followStreams -= 1 } else { $0.replayStreams -= 1 } }
    }

    func prometheusText(status: WALStatus, connections: Int) -> String {
        let c = counters.withLock { $0 }
        let stats = status.syncStats
        let lines: [(String, String, String)] = [
            ("wald_appended_records_total", "counter", "\(c.appendedRecords)"),
            ("wald_appended_bytes_total", "counter", "\(c.appendedBytes)"),
            ("wald_fsyncs_total", "counter", "\(stats.syncs)"),
            ("wald_fsync_seconds_total", "counter", "\(Double(stats.syncNanos) / 1e9)"),
            ("wald_connections", "gauge", "\(connections)"),
            ("wald_connections_rejected_total", "counter", "\(c.connectionsRejected)"),
            ("wald_replay_streams", "gauge", "\(c.replayStreams)"),
            ("wald_follow_streams", "gauge", "\(c.followStreams)"),
            ("wald_segments", "gauge", "\(status.segments)"),
            ("wald_disk_bytes", "gauge", "\(status.bytes)"),
            ("wald_last_lsn", "gauge", "\(status.lastLSN)"),
            ("wald_durable_lsn", "gauge", "\(status.durableLSN)"),
            ("wald_failed", "gauge", status.failure == nil ? "0" : "1"),
        ]
        return lines.map { "# TYPE \($0.0) \($0.1)\n\($0.0) \($0.2)\n" }.joined()
    }
}
