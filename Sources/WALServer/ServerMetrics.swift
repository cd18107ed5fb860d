// The server's metrics, reported through swift-metrics (the daemon installs the Prometheus
// backend; without one these are no-ops).
import CoreMetrics
import Synchronization
import WALSync

final class ServerMetrics: Sendable {
    private let connections = Gauge(label: "wald_connections")
    private let rejected = Counter(label: "wald_connections_rejected_total")
    private let handshakeFailures = Counter(label: "wald_tls_handshake_failures_total")
    private let idleClosed = Counter(label: "wald_connections_idle_closed_total")
    private let replayGauge = Gauge(label: "wald_replay_streams")
    private let followGauge = Gauge(label: "wald_follow_streams")
    private let streams = WALMutex((replay: 0, follow: 0))

    func connectionCount(_ count: Int) { connections.record(count) }
    func connectionRejected() { rejected.increment() }
    func tlsHandshakeFailed() { handshakeFailures.increment() }
    func idleConnectionClosed() { idleClosed.increment() }

    func streamStarted(follow: Bool) { adjust(follow: follow, by: 1) }
    func streamEnded(follow: Bool) { adjust(follow: follow, by: -1) }

    private func adjust(follow: Bool, by delta: Int) {
        let (replay, following) = streams.withLock { s in
            if follow { s.follow += delta } else { s.replay += delta }
            return (s.replay, s.follow)
        }
        if follow { followGauge.record(following) } else { replayGauge.record(replay) }
    }
}
