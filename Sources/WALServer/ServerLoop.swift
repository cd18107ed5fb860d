// The event loop: one serial Dispatch queue runs every listener's accepts, every connection's
// reads, parsing, appends into the writer, reply encoding and socket writes, and the WAL's
// results (durable LSNs, refusals), so a request crosses no thread between its read(2) and
// its pwrite(2). The only other threads on the request path are the WAL's sync thread (one
// hand-off each way around fdatasync) and the kernel's. docs/architecture.md has the map.
//
// Once per loop turn (`scheduleFlush`: a block queued behind the read events already waiting)
// everything accepted in that turn is written with one pwrite and, when any of it is durable,
// one sync is asked for. Replies wait in their connection's output behind "gates" (see
// Connection.swift) that the WAL's events open.
import CoreMetrics
import Dispatch
import Logging
import Synchronization
import WALCore
import WALProtocol
import WALTLS
import WALSync

final class ServerLoop: @unchecked Sendable {
    // @unchecked Sendable: every `var` below, and every Connection, is touched only on
    // `queue` (Dispatch source handlers and blocks on it; other threads reach in with
    // `queue.async`/`queue.sync`). The `let`s are immutable or thread-safe themselves.

    let queue = DispatchQueue(label: "wald.loop", qos: .userInitiated)
    let wal: WAL
    let logger: Logger
    let metrics = ServerMetrics()
    let version: String
    /// Fixed for the server's life (the role object itself changes on PROMOTE).
    let replication: ReplicationRole
    /// Open connections, readable from any thread.
    let openConnections = Atomic<Int>(0)
    /// The options, for threads other than the loop (the loop reads `options`).
    let sharedOptions: WALMutex<ServerOptions>

    var options: ServerOptions
    var connections: [Int: Connection] = [:]
    private var nextID = 1
    var followers: [Int: FollowerState] = [:]
    let syncReplicas = SyncReplicas()
    /// What the WAL has reported written and durable, and its failure.
    private(set) var writtenLSN: LSN
    private(set) var durableLSN: LSN
    private(set) var failure: WALError?
    /// Connections with replies held behind a gate.
    var gated: [Int: Connection] = [:]
    /// Connections in a replay or follow stream.
    var streaming: [Int: Connection] = [:]
    /// Connections that stopped parsing because the writer's backlog is full.
    var waitingForWriter: [Int: Connection] = [:]
    /// On a follower: the stream from the upstream.
    var upstream: UpstreamStream?
    /// `stopFollowing()` was called: no stream starts again (PROMOTE, shutdown).
    var followingStopped = false
    /// RESP connections parked on an XREAD BLOCK or a WAIT.
    var respWaits: [Int: Connection] = [:]
    /// Connections waiting for a TRUNCATE's files to be deleted, by job token.
    var truncations: [UInt64: Connection] = [:]
    /// A rotation or erase holds the writer's output (appends pile up in its buffer).
    private(set) var writerPaused = false
    /// The unwritten bytes at which connections stop taking appends until the writer catches up.
    let writerBacklogLimit: Int
    private var flushScheduled = false
    private let firstLSNGauge = Gauge(label: "wald_first_lsn")
    private let lastLSNGauge = Gauge(label: "wald_last_lsn")
    private let durableLSNGauge = Gauge(label: "wald_durable_lsn")
    /// `wald_follower_lag_records{follower="ADDRESS"}`, one per follow stream served.
    private var followerLagGauges: [String: Gauge] = [:]
    private var tick: (any DispatchSourceTimer)?
    private var lastLagCheck = ContinuousClock.now

    init(wal: WAL, options: ServerOptions, version: String) {
        self.wal = wal
        self.version = version
        self.options = options
        sharedOptions = WALMutex(options)
        logger = options.logger
        replication = options.replication
        let durable = wal.durableLSN
        writtenLSN = durable
        durableLSN = durable
        failure = wal.status.failure
        writerBacklogLimit = max(16 << 20, 4 * wal.options.maxBufferBytes)
        // Strong: a weak reference would put every retain of the loop on the runtime's slow
        // path. The cycle (WAL → observer → loop → WAL) ends when the WAL closes.
        wal.attach(queue: queue) { [self] event in walEvent(event) }
        queue.async { [self] in startTick() }
    }

    // MARK: Connections

    /// Open connections per peer IP address (unix-socket peers are not counted).
    private var perAddress: [String: Int] = [:]
    private var lastIdleCheck = ContinuousClock.now

    enum Admission {
        case admitted(Connection)
        /// The server, or the peer's address, holds as many connections as it may; or TLS
        /// could not be set up. The reason is for the log and the client.
        case refused(String)
    }

    /// Registers a new connection (served through TLS when `tls` is given), or says why not.
    func admit(fd: Int32, peer: String, tls: TLSContext? = nil) -> Admission {
        guard connections.count < options.maxConnections else { return .refused("too many connections") }
        let host = Self.host(of: peer)
        let counted = host != "unix"
        if counted && perAddress[host, default: 0] >= options.maxConnectionsPerAddress {
            return .refused("too many connections from \(host)")
        }
        var session: TLSSession?
        if let tls {
            do {
                session = try TLSSession(context: tls, fd: fd)
            } catch {
                return .refused("cannot start TLS: \(error)")
            }
        }
        let connection = Connection(id: nextID, fd: fd, peer: peer, peerHost: host, tls: session, loop: self)
        nextID += 1
        connections[connection.id] = connection
        if counted { perAddress[host, default: 0] += 1 }
        openConnections.store(connections.count, ordering: .relaxed)
        metrics.connectionCount(connections.count)
        logger.debug("connection opened", metadata: ["peer": "\(peer)", "id": "\(connection.id)", "open": "\(connections.count)"])
        return .admitted(connection)
    }

    func connectionClosed(_ connection: Connection) {
        let id = connection.id
        connections[id] = nil
        if connection.peerHost != "unix", let count = perAddress[connection.peerHost] {
            perAddress[connection.peerHost] = count > 1 ? count - 1 : nil
        }
        gated[id] = nil
        streaming[id] = nil
        waitingForWriter[id] = nil
        respWaits[id] = nil
        truncations = truncations.filter { $0.value.id != id }
        openConnections.store(connections.count, ordering: .relaxed)
        metrics.connectionCount(connections.count)
        logger.debug("connection closed", metadata: ["peer": "\(connection.peer)", "id": "\(id)", "open": "\(connections.count)"])
        if let follower = followers.removeValue(forKey: id) { follower.hold.release() }
        if syncReplicas.remove(connection: id) { releaseGates() }
    }

    // MARK: The turn

    /// Asks for one write of everything accepted in this turn, after the read events already
    /// queued on the loop (so many connections' appends share a pwrite and an fdatasync).
    func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        queue.async { [self] in
            flushScheduled = false
            wal.flushOnLoop()
        }
    }

    /// The WAL's results, on the loop, in order.
    private func walEvent(_ event: WALEvent) {
        switch event {
        case .written(let lsn):
            writtenLSN = max(writtenLSN, lsn)
            releaseGates()
        case .durable(let lsn):
            durableLSN = max(durableLSN, lsn)
            writtenLSN = max(writtenLSN, lsn)
            releaseGates()
            upstream?.durable(through: lsn)
            for connection in streaming.values where connection.isFollowing { connection.pumpStream() }
            for connection in Array(respWaits.values) { connection.checkRESPWait() }
        case .refused(let epoch, let lsns, let error):
            let response = Response.failure(error)
            for connection in gated.values { connection.refuse(epoch: epoch, lsns: lsns, with: response) }
            releaseGates()
        case .failed(let error):
            failure = error
            upstream?.end(.local(error.description))
            for connection in gated.values { connection.failUnsatisfiedGates(with: error) }
            releaseGates()
        case .writingPaused:
            writerPaused = true
        case .writable:
            writerPaused = false
            let waiting = waitingForWriter
            waitingForWriter.removeAll()
            for connection in waiting.values { connection.service() }
        case .job(let token, let result):
            truncations.removeValue(forKey: token)?.truncationDone(result)
        }
    }

    /// Whether a held reply may go out.
    func isSatisfied(_ gate: Gate) -> Bool {
        // A fenced primary (its leader lease ran out) acknowledges nothing: the tick turns
        // what is held into READ_ONLY.
        guard replication.mayAcknowledgeWrites else { return false }
        switch gate.condition {
        case .written: return writtenLSN >= gate.lsn
        case .durable(let replicas):
            guard durableLSN >= gate.lsn else { return false }
            return replicas == 0 || syncReplicas.position(count: replicas) >= gate.lsn
        }
    }

    /// Sends every reply whose gate has opened.
    func releaseGates() {
        for connection in Array(gated.values) { connection.releaseGates() }
    }

    // MARK: Replication

    /// The upstream stream ended (it already told its waiter why).
    func upstreamEnded(_ stream: UpstreamStream) {
        if upstream === stream { upstream = nil }
    }

    /// A follow stream started at `lsn`: hold the segments it still needs.
    func followStarted(_ connection: Connection, from lsn: LSN) {
        followers[connection.id] = FollowerState(address: connection.peer, start: lsn, hold: wal.hold(from: lsn))
    }

    func recordFeedback(from connection: Connection, durableLSN lsn: LSN) {
        guard var follower = followers[connection.id] else { return }
        follower.durableLSN = max(follower.durableLSN, lsn)
        follower.lastFeedback = ContinuousClock.now
        follower.sendsFeedback = true
        followers[connection.id] = follower
        follower.hold.move(to: follower.durableLSN + 1)
        if syncReplicas.feedback(connection: connection.id, durableLSN: lsn) {
            releaseGates()
            for waiting in Array(respWaits.values) { waiting.checkRESPWait() }
        }
    }

    /// How long a follow stream may go without its first FEEDBACK before it counts as a plain
    /// client (held and measured from what it was sent).
    static let feedbackGrace: Duration = .seconds(2)

    /// Every 100 ms: durable appends that waited too long for replicas fail; every 500 ms,
    /// streams that fell more than `maxFollowerHoldBytes` behind are dropped.
    private func startTick() {
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100), leeway: .milliseconds(20))
        source.setEventHandler { [self] in onTick() }
        source.resume()
        tick = source
    }

    /// Stops the timer (at shutdown; it holds the loop).
    func stopTick() {
        tick?.cancel()
        tick = nil
    }

    private func onTick() {
        let now = ContinuousClock.now
        if !gated.isEmpty && !replication.mayAcknowledgeWrites {
            let reason = replication.appendRefusal ?? "the leader lease ran out"
            for connection in Array(gated.values) { connection.failGatesFenced(reason: reason) }
        }
        for connection in Array(gated.values) { connection.expireReplicaWaits(now: now) }
        if now - lastIdleCheck >= .seconds(1) {
            lastIdleCheck = now
            closeIdleConnections(now: now)
        }
        if now - lastLagCheck >= .milliseconds(500) {
            lastLagCheck = now
            dropLaggingStreams()
        }
    }

    /// Closes connections that sent nothing for `idleTimeout` while the server owed them nothing:
    /// silent clients must not hold `max_connections` slots for ever. A connection waiting for
    /// the server (held replies, a replay or follow stream, XREAD BLOCK, WAIT) is not idle.
    private func closeIdleConnections(now: ContinuousClock.Instant) {
        guard let limit = options.idleTimeout, limit > .zero else { return }
        for connection in Array(connections.values) where now - connection.lastRead >= limit {
            guard connection.gates.isEmpty, connection.blocked == nil, connection.stream == nil,
                  !connection.closed else { continue }
            logger.info("closing an idle connection", metadata: [
                "peer": "\(connection.peer)", "id": "\(connection.id)", "idle_timeout": "\(limit)",
            ])
            metrics.idleConnectionClosed()
            connection.close()
        }
    }

    /// A TLS client finished its handshake.
    func tlsHandshakeDone(_ connection: Connection) {
        connection.adoptCertificateRole()
        logger.debug("TLS handshake done", metadata: [
            "peer": "\(connection.peer)", "id": "\(connection.id)",
            "version": "\(connection.transport.tls?.protocolVersion ?? "")",
        ])
    }

    /// `1.2.3.4:5` → `1.2.3.4`, `[::1]:5` → `::1`; a unix peer, or a socket handed over with
    /// a name rather than an address (`serve(connectedSocket:)`), → `unix` (not counted).
    static func host(of peer: String) -> String {
        if peer.hasPrefix("["), let close = peer.firstIndex(of: "]") {
            return String(peer[peer.index(after: peer.startIndex)..<close])
        }
        if !peer.hasPrefix("unix"), let colon = peer.lastIndex(of: ":") { return String(peer[..<colon]) }
        return "unix"
    }

    /// Drops follow and replay streams that fell more than `maxFollowerHoldBytes` behind,
    /// releasing the segments they held; a follower gets OUT_OF_RANGE when it comes back after
    /// retention deleted them. A follower is as far as its FEEDBACK says; a follow client that
    /// sends none (`walctl replay --follow`) is as far as it was sent, and after a grace
    /// (`feedbackGrace`: a wald follower's first FEEDBACK follows its first fdatasync) holds
    /// segments only from there: it used to be measured from where it started, so a client
    /// keeping up was dropped once the log had grown by the limit, and held retention until then.
    private func dropLaggingStreams() {
        let limit = options.maxFollowerHoldBytes
        guard limit > 0 else { return }
        let now = ContinuousClock.now
        for connection in Array(streaming.values) {
            guard let position = connection.streamPosition else { continue }
            let follower = followers[connection.id]
            let from: LSN
            if let follower, follower.sendsFeedback {
                from = max(follower.durableLSN + 1, follower.start)
            } else {
                from = position
                if let follower, now - follower.started >= Self.feedbackGrace { follower.hold.move(to: position) }
            }
            let behind = wal.bytes(from: from)
            guard behind > limit else { continue }
            logger.warning("dropping a stream that fell too far behind", metadata: [
                "peer": "\(connection.peer)", "follow": "\(connection.isFollowing)", "next_lsn": "\(position)",
                "bytes_behind": "\(behind)", "max_follower_hold_bytes": "\(limit)",
            ])
            connection.dropLaggingStream(behind: behind, limit: limit)
        }
    }

    // MARK: Info

    /// Compares in constant time, so the token cannot be guessed byte by byte from timing.
    func checkToken(_ candidate: UnsafeRawBufferPointer) -> Bool {
        guard let token = options.authToken else { return true }
        let expected = Array(token.utf8)
        var difference = UInt8(expected.count == candidate.count ? 0 : 1)
        for index in 0..<expected.count {
            let other = index < candidate.count ? candidate[index] : 0
            difference |= expected[index] ^ other
        }
        return difference == 0
    }

    /// The INFO object. `hidingAddresses` (for a `read` user) leaves out where the upstream
    /// and the followers are: a reader needs the log's state, not the replication topology.
    func infoJSON(hidingAddresses: Bool = false) -> String {
        let status = wal.status
        let role = replication
        var fields: [(String, String)] = [
            ("version", jsonString(version)),
            ("log_id", jsonString(status.logID.description)),
            ("generation", "\(status.generation)"),
            ("first_lsn", "\(status.firstLSN)"),
            ("last_lsn", "\(status.lastLSN)"),
            ("durable_lsn", "\(status.durableLSN)"),
            ("segments", "\(status.segments)"),
            ("bytes", "\(status.bytes)"),
            ("connections", "\(connections.count)"),
            ("role", jsonString(role.isFollower || !role.mayAcknowledgeWrites ? "follower" : "primary")),
            ("term", "\(role.term)"),
            ("leader", (role.leader ?? role.upstream).map(jsonString) ?? "null"),
            ("failed", status.failure == nil ? "false" : "true"),
            ("syncs", "\(status.syncStats.syncs)"),
        ]
        if let failure = status.failure { fields.append(("failure", jsonString(failure.description))) }
        if let upstream = role.upstream {
            if !hidingAddresses { fields.append(("upstream", jsonString(upstream))) }
            fields.append(("upstream_connected", role.upstreamConnected ? "true" : "false"))
            if let error = role.lastError { fields.append(("upstream_error", jsonString(error))) }
        }
        let now = ContinuousClock.now
        if let ha = role.highAvailability {
            let renewal = ha.lastRenewal.map { "\(Self.millis(now - $0))" } ?? "null"
            var object = "{\"etcd\":[" + ha.endpoints.map(jsonString).joined(separator: ",") + "],\"cluster\":\(jsonString(ha.cluster)),"
                + "\"connected\":\(ha.connected),\"lease_ttl_ms\":\(Self.millis(ha.leaseTTL)),\"last_renewal_ms\":\(renewal)"
            if let error = ha.error { object += ",\"error\":\(jsonString(error))" }
            fields.append(("ha", object + "}"))
        } else {
            fields.append(("ha", "null"))
        }
        var followerObjects: [String] = []
        for f in followers.values.sorted(by: { $0.address < $1.address }) {
            let since = (now - f.lastFeedback).components
            let elapsed = since.seconds * 1000 + since.attoseconds / 1_000_000_000_000_000
            let lag = status.durableLSN > f.durableLSN ? status.durableLSN - f.durableLSN : 0
            let lagBytes = lag == 0 ? 0 : wal.bytes(from: f.durableLSN + 1)
            followerObjects.append(
                "{" + (hidingAddresses ? "" : "\"address\":\(jsonString(f.address)),") + "\"durable_lsn\":\(f.durableLSN),\"lag_records\":\(lag),"
                    + "\"lag_bytes\":\(lagBytes),\"last_feedback_ms\":\(elapsed)}")
        }
        fields.append(("followers", "[" + followerObjects.joined(separator: ",") + "]"))
        fields.append(("min_sync_replicas", "\(options.minSyncReplicas)"))
        fields.append(("sync_replica_timeouts", "\(syncReplicas.timeouts)"))
        if let last = syncReplicas.lastTimeout { fields.append(("sync_replica_error", jsonString(last))) }
        let damage = wal.damage.prefix(16).map {
            "{\"file\":\(jsonString($0.file)),\"offset\":\($0.offset),\"lsn\":\($0.lsn),\"reason\":\(jsonString($0.reason)),"
                + "\"found_by\":\(jsonString($0.foundBy))}"
        }
        fields.append(("damage", "[" + damage.joined(separator: ",") + "]"))
        let scrub = wal.scrubStatus
        let intervalMillis = scrub.interval.components.seconds * 1000 + scrub.interval.components.attoseconds / 1_000_000_000_000_000
        fields.append(("scrub", "{\"interval_ms\":\(intervalMillis),\"passes\":\(scrub.passes),\"bytes\":\(scrub.bytes),"
                       + "\"running\":\(scrub.running)}"))
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    static func millis(_ duration: Duration) -> Int64 {
        let parts = duration.components
        return parts.seconds &* 1000 &+ parts.attoseconds / 1_000_000_000_000_000
    }

    /// Prometheus text from the daemon's registry, or a note when metrics are off.
    func metricsText() -> String {
        refreshGauges()
        return options.metricsText?() ?? "# metrics are not enabled in this process\n"
    }

    /// Sets the gauges that are read, not counted, to their values now (before each scrape):
    /// first, last and durable LSN, and each follow stream's lag in records.
    func refreshGauges() {
        let status = wal.status
        firstLSNGauge.record(Double(status.firstLSN))
        lastLSNGauge.record(Double(status.lastLSN))
        durableLSNGauge.record(Double(status.durableLSN))
        var current: [String: UInt64] = [:]
        for follower in followers.values {
            let lag = status.durableLSN > follower.durableLSN ? status.durableLSN - follower.durableLSN : 0
            current[follower.address] = max(current[follower.address] ?? 0, lag)
        }
        for (address, gauge) in followerLagGauges where current[address] == nil {
            gauge.destroy()
            followerLagGauges[address] = nil
        }
        for (address, lag) in current {
            let gauge = followerLagGauges[address] ?? Gauge(label: "wald_follower_lag_records", dimensions: [("follower", address)])
            followerLagGauges[address] = gauge
            gauge.record(Double(lag))
        }
    }
}

struct FollowerState {
    let address: String
    /// Where the stream started; the follower has everything before it.
    let start: LSN
    let hold: SegmentHold
    var durableLSN: LSN = 0
    var lastFeedback = ContinuousClock.now
    /// Whether the client has sent FEEDBACK (a wald follower does after each fdatasync; a
    /// `walctl replay --follow` never does).
    var sendsFeedback = false
    let started = ContinuousClock.now
}
