// Automatic failover coordinated by etcd (`--ha-etcd`), as Patroni does for PostgreSQL: etcd
// holds the consensus, wald holds none of its own. docs/replication.md has the rules; in short:
//
// - Each member holds one etcd lease (TTL `--ha-lease-ttl`), renewed every TTL/3, and publishes
//   `members/<advertise>` under it (its role, term and LSNs).
// - The leader is whoever holds `leader` under its lease. The others watch that key and follow
//   its address; when the key goes (the lease expired), an election: every member stops
//   following, fdatasyncs, publishes its last LSN, waits until every live member has published
//   after the leader went (at most one TTL), and only one that is as caught up as any of them
//   tries the transaction that takes the key (compares: no leader, the term and every member
//   key unchanged since read; puts: leader, term + 1, history/<term + 1>, log_id).
// - Fencing: a leader acknowledges appends only until the start of its last successful renewal
//   + the TTL etcd granted − a margin (TTL/5, at least 500 ms, for clock rate differences);
//   past that the server refuses appends and fails held replies (ReplicationRole's lease).
// - Rejoin: a member that must follow a newer term's leader and holds records after where its
//   log parts from the leader's (WaldCluster.keepThrough) restarts itself (`restart`): the next
//   start opens the log with `keepThrough`, which cuts that suffix keeping `.broken` copies.
//
// Runs on Swift concurrency tasks (the cooperative pool), off the request path: the event loop
// only reads the role's lease atomic.
import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization
import WALClient
import WALCore
import WALEtcd
import WALServer
import WALSync
import WALSystem

final class FailoverCoordinator: Sendable {
    struct Settings: Sendable {
        var endpoints: [String]
        var cluster: String
        var advertise: String
        var leaseTTL: Duration
        var dataDirectory: String
        var token: String?
        /// `follow_tls`: how a member reaches the leader it follows (nil: plain TCP).
        var tls: ClientTLS? = nil
    }

    private struct State {
        var lease: Int64?
        var grantedTTL: Duration = .zero
        /// Until when acknowledgements are safe under the lease (start of the last good renewal + TTL − margin).
        var validUntil: DispatchTime = DispatchTime(uptimeNanoseconds: 0)
        var leadingTerm: UInt64?
        var following: (address: String, term: UInt64)?
        var replicator: Replicator?
        var published: MemberRecord?
        /// The etcd revision of the last put of this member's key.
        var publishedRevision: Int64 = 0
        /// The revision at which this member first saw no leader in the election now running.
        var electionBarrier: Int64?
        var tasks: [Task<Void, Never>] = []
        var stopped = false
    }

    private let settings: Settings
    private let keys: WaldClusterKeys
    private let etcd: EtcdClient
    private let wal: WAL
    private let server: WALServer
    private let role: ReplicationRole
    private let logger: Logger
    /// Restarts the process (graceful stop, then exec of the same command): how a member whose
    /// log must be cut rejoins.
    private let restart: @Sendable (String) -> Void
    private let state = WALMutex(State())
    private let failovers = Counter(label: "wald_failovers_total")
    private let termGauge = Gauge(label: "wald_term")
    private let renewTimer = Timer(label: "wald_lease_renew_duration_seconds")

    init(settings: Settings, etcd: EtcdClient, wal: WAL, server: WALServer, role: ReplicationRole, logger: Logger,
         restart: @escaping @Sendable (String) -> Void) {
        self.settings = settings
        keys = WaldClusterKeys(cluster: settings.cluster)
        self.etcd = etcd
        self.wal = wal
        self.server = server
        self.role = role
        self.logger = logger
        self.restart = restart
    }

    /// The renewal interval and the fencing margin for a granted TTL.
    static func timing(ttl: Duration) -> (renewEvery: Duration, margin: Duration) {
        (ttl / 3, max(ttl / 5, .milliseconds(500)))
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let parts = duration.components
        return parts.seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? Int64.max : parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000
    }

    // MARK: Before the log is opened

    /// At start, before the log is opened: the last LSN to keep when this member must follow a
    /// leader of a later term than its log belongs to (nil: keep everything, or etcd could not
    /// say; the running coordinator checks again and restarts if a cut turns out to be needed).
    static func keepThroughAtStart(settings: Settings, etcd: EtcdClient, logger: Logger) async -> UInt64? {
        let keys = WaldClusterKeys(cluster: settings.cluster)
        do {
            let localTerm = try TermFile.read(directory: settings.dataDirectory)
            guard let kv = try await etcd.get(keys.leader).kv,
                  let leader = JSONDecoder.walRecord(LeaderRecord.self, from: kv.value),
                  leader.address != settings.advertise else { return nil }
            let history = try await etcd.getPrefix(keys.historyPrefix).kvs.compactMap {
                JSONDecoder.walRecord(TermRecord.self, from: $0.value)
            }
            return try WaldCluster.keepThrough(localTerm: localTerm, history: history, leaderTerm: leader.term)
        } catch {
            logger.warning("automatic failover: could not check at start whether this log must be cut; checking again once running",
                           metadata: ["error": "\(error)"])
            return nil
        }
    }

    // MARK: Running

    func start() {
        // The term this log belongs to is the least a leader to follow may have.
        if let localTerm = try? TermFile.read(directory: settings.dataDirectory) { role.setLeader(nil, term: localTerm) }
        let tasks = [
            Task { await self.keepLease() },
            Task { await self.coordinate() },
            Task { await self.publishPeriodically() },
        ]
        state.withLock { $0.tasks = tasks }
    }

    /// Stops every task and the replicator, gives up leadership (revoking the lease, so a
    /// successor need not wait for it to expire) and stops acknowledging.
    func stop() async {
        let (tasks, replicator, lease) = state.withLock { s in
            s.stopped = true
            return (s.tasks, s.replicator, s.lease)
        }
        role.fence(reason: "stopping")
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        await replicator?.stop()
        if let lease {
            // The held replies were failed by the fence; our leader and member keys go with it.
            try? await etcd.revoke(lease: lease)
        }
        await etcd.shutdown()
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    // MARK: The lease

    /// Grants the member's lease and renews it every TTL/3; each renewal moves the fencing
    /// deadline. A lease that etcd no longer knows fences at once and a new one is granted.
    private func keepLease() async {
        let requested = Int64(settings.leaseTTL.components.seconds)
        while !Task.isCancelled {
            do {
                var lease = state.withLock { $0.lease }
                if lease == nil {
                    let started = DispatchTime.now()
                    let granted = try await etcd.grantLease(ttl: requested)
                    if granted.ttl != requested {
                        logger.warning("etcd granted another lease TTL than asked", metadata: [
                            "asked_s": "\(requested)", "granted_s": "\(granted.ttl)"])
                    }
                    state.withLock {
                        $0.lease = granted.id
                        $0.grantedTTL = .seconds(granted.ttl)
                        $0.published = nil
                    }
                    renewed(startedAt: started, ttl: .seconds(granted.ttl))
                    lease = granted.id
                    await publish(force: true)
                }
                let ttl = state.withLock { $0.grantedTTL }
                try await Task.sleep(for: Self.timing(ttl: ttl).renewEvery)
                let started = DispatchTime.now()
                let clock = ContinuousClock.now
                let remaining = try await etcd.keepAlive(lease: lease!)
                renewTimer.recordNanoseconds(Self.nanoseconds(ContinuousClock.now - clock))
                // etcd answers with the full TTL from when it handled the renewal (after `started`).
                renewed(startedAt: started, ttl: .seconds(remaining))
            } catch is CancellationError {
                return
            } catch EtcdError.leaseNotFound {
                lostLease("the leader lease expired in etcd before it was renewed")
            } catch {
                role.updateHighAvailability {
                    $0.connected = false
                    $0.error = "etcd: \(error)"
                }
                logger.warning("automatic failover: lease renewal failed", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    private func renewed(startedAt started: DispatchTime, ttl: Duration) {
        let margin = Self.timing(ttl: ttl).margin
        let valid = ttl > margin ? ttl - margin : .zero
        let end = started + .nanoseconds(Int(Self.nanoseconds(valid)))
        let leading = state.withLock { s -> Bool in
            if end > s.validUntil { s.validUntil = end }
            return s.leadingTerm != nil
        }
        if leading { role.renewLease(until: end) }
        role.updateHighAvailability {
            $0.connected = true
            $0.error = nil
            $0.lastRenewal = .now
            $0.leaseTTL = ttl
        }
    }

    /// The lease is gone: nothing more is acknowledged; the coordinator finds out who leads.
    private func lostLease(_ reason: String) {
        let wasLeading = state.withLock { s -> Bool in
            s.lease = nil
            s.validUntil = DispatchTime(uptimeNanoseconds: 0)
            defer { s.leadingTerm = nil }
            return s.leadingTerm != nil
        }
        if wasLeading {
            role.fence(reason: "not the leader any more: \(reason)", leader: .some(nil))
            logger.error("automatic failover: lost the leader lease; appends are refused", metadata: ["reason": "\(reason)"])
        }
        role.updateHighAvailability { $0.error = reason }
    }

    // MARK: Publishing this member

    private func publishPeriodically() async {
        while !Task.isCancelled {
            await publish(force: false)
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// Puts `members/<advertise>` under the lease when what it says changed (or `force`).
    /// Returns the revision of the put (0 when nothing was put).
    @discardableResult
    private func publish(force: Bool) async -> Int64 {
        let status = wal.status
        let (lease, record, previous) = state.withLock { s -> (Int64?, MemberRecord, MemberRecord?) in
            let roleName = s.leadingTerm != nil ? "leader" : (s.following != nil ? "follower" : "candidate")
            let record = MemberRecord(address: settings.advertise, role: roleName, term: role.term, logID: status.logID.description,
                                      lastLSN: status.lastLSN, durableLSN: status.durableLSN)
            return (s.lease, record, s.published)
        }
        guard let lease, force || record != previous else { return 0 }
        do {
            let revision = try await etcd.put(keys.member(settings.advertise), value: record.etcdValue, lease: lease)
            state.withLock {
                $0.published = record
                $0.publishedRevision = revision
            }
            return revision
        } catch {
            return 0
        }
    }

    // MARK: Leadership

    /// Follows whoever holds the leader key, and runs an election when nobody does.
    private func coordinate() async {
        while !Task.isCancelled {
            do {
                guard state.withLock({ $0.lease }) != nil else {
                    try await Task.sleep(for: .milliseconds(100))
                    continue
                }
                let (kv, revision) = try await etcd.get(keys.leader)
                if let kv, let leader = JSONDecoder.walRecord(LeaderRecord.self, from: kv.value) {
                    try await leaderIs(leader, kv: kv)
                } else if kv != nil {
                    logger.error("automatic failover: the leader key holds no leader record; waiting for it to change",
                                 metadata: ["key": "\(keys.leader)"])
                } else {
                    try await election(after: revision)
                    continue
                }
                try await waitForLeaderChange(after: revision)
            } catch is CancellationError {
                return
            } catch {
                role.updateHighAvailability { $0.error = "etcd: \(error)" }
                logger.warning("automatic failover: etcd request failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Returns when the leader key changes after `revision` (or the watch breaks).
    private func waitForLeaderChange(after revision: Int64) async throws {
        for try await _ in etcd.watch(key: keys.leader, startRevision: revision + 1) {
            return
        }
    }

    private func leaderIs(_ leader: LeaderRecord, kv: EtcdKeyValue) async throws {
        let (leading, lease, following) = state.withLock { s in
            s.electionBarrier = nil
            return (s.leadingTerm, s.lease, s.following)
        }
        role.setLeader(leader.address, term: leader.term)
        termGauge.record(Double(role.term))
        if leader.address == settings.advertise {
            if leading == leader.term && kv.lease == lease { return }
            // Ours, but from an earlier life of this process (or an expired lease of ours):
            // nobody acknowledges under it any more. Take it away so an election can run.
            logger.notice("automatic failover: the leader key names this member from an earlier lease; releasing it")
            _ = try await etcd.txn(compare: [.modRevision(key: keys.leader, equals: kv.modRevision)],
                                   success: [.delete(key: keys.leader)])
            return
        }
        if leading != nil {
            lostLease("another member leads term \(leader.term)")
        }
        if let following, following.address == leader.address, following.term == leader.term { return }
        guard leader.term >= role.term else {
            logger.error("automatic failover: the leader key's term is below one seen before; not following it",
                         metadata: ["leader": "\(leader.address)", "term": "\(leader.term)", "seen": "\(role.term)"])
            return
        }
        try await follow(leader)
    }

    /// Points this member at `leader`: restarts first when its log holds records the leader's lacks.
    private func follow(_ leader: LeaderRecord) async throws {
        let localTerm = try TermFile.read(directory: settings.dataDirectory)
        let history = try await etcd.getPrefix(keys.historyPrefix).kvs.compactMap {
            JSONDecoder.walRecord(TermRecord.self, from: $0.value)
        }
        let keep: UInt64?
        do {
            keep = try WaldCluster.keepThrough(localTerm: localTerm, history: history, leaderTerm: leader.term)
        } catch {
            role.updateHighAvailability { $0.error = "\(error)" }
            logger.error("automatic failover: not following the leader", metadata: ["error": "\(error)"])
            return
        }
        let old = state.withLock { s -> Replicator? in
            defer { s.replicator = nil; s.following = nil }
            return s.replicator
        }
        await old?.stop()
        if let keep, keep < wal.lastLSN {
            let reason = "this log holds LSNs \(keep + 1)...\(wal.lastLSN), which the leader of term \(leader.term) "
                + "(\(leader.address)) never received: restarting to cut them (kept in .broken copies) and follow"
            logger.warning("automatic failover: rejoining", metadata: ["reason": "\(reason)"])
            role.fence(reason: "rejoining the leader \(leader.address)", leader: .some(leader.address))
            state.withLock { $0.stopped = true }
            restart(reason)
            throw CancellationError()
        }
        // Durable before the first record of the new term arrives (docs/replication.md).
        if localTerm != leader.term { try TermFile.write(leader.term, directory: settings.dataDirectory) }
        role.follow(leader.address, term: leader.term)
        await server.allowFollowing()
        guard let endpoint = Endpoint(parsing: leader.address) else {
            logger.error("automatic failover: the leader's address is not HOST:PORT", metadata: ["address": "\(leader.address)"])
            return
        }
        let replicator = Replicator(wal: wal, server: server, upstream: endpoint, token: settings.token, tls: settings.tls,
                                    role: role, logger: logger, minimumTerm: leader.term)
        state.withLock {
            $0.replicator = replicator
            $0.following = (leader.address, leader.term)
        }
        replicator.start()
        logger.notice("automatic failover: following the leader", metadata: [
            "leader": "\(leader.address)", "term": "\(leader.term)", "last_lsn": "\(wal.lastLSN)"])
        await publish(force: true)
    }

    /// No leader: stop following, publish the final position, wait for the live members to
    /// publish theirs, and try to take the key when none of them is further ahead.
    private func election(after revision: Int64) async throws {
        let (old, wasLeading, barrier) = state.withLock { s -> (Replicator?, Bool, Int64) in
            defer { s.replicator = nil; s.following = nil }
            if s.electionBarrier == nil { s.electionBarrier = revision }
            return (s.replicator, s.leadingTerm != nil, s.electionBarrier!)
        }
        if wasLeading { lostLease("the leader key is gone from etcd") }
        role.fence(reason: "no leader: an election is running", leader: .some(nil))
        await old?.stop()
        _ = try? await wal.sync()
        let mine = wal.status
        // Published once after the barrier (and again only if it changes), so that a member
        // that loses and retries does not keep moving the revisions the winner compares.
        let force = state.withLock { $0.publishedRevision <= barrier }
        await publish(force: force)
        guard state.withLock({ $0.publishedRevision > barrier }) else {
            try await Task.sleep(for: .milliseconds(100))
            return
        }
        // Every live member reacts to the same deletion; wait (up to one TTL) until each has
        // published after it, so that nobody compares against a stale position.
        let deadline = ContinuousClock.now + settings.leaseTTL
        var members: [EtcdKeyValue] = []
        while true {
            members = try await etcd.getPrefix(keys.membersPrefix).kvs
            let stale = members.filter { $0.modRevision <= barrier }
            if stale.isEmpty || ContinuousClock.now >= deadline { break }
            if try await etcd.get(keys.leader).kv != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        let clusterLogID = try await etcd.get(keys.logID).kv.map { String(decoding: $0.value, as: UTF8.self) }
        let logID = mine.logID.description
        if let clusterLogID, clusterLogID != logID {
            // A member whose log is not the cluster's (a new, empty one) never leads it.
            try await Task.sleep(for: .milliseconds(200))
            return
        }
        // Before the cluster has a log, every member counts (one with records must not lose to
        // an empty one); after, only members of that log.
        let peers = members.compactMap { kv -> (EtcdKeyValue, MemberRecord)? in
            guard let record = JSONDecoder.walRecord(MemberRecord.self, from: kv.value), record.address != settings.advertise,
                  clusterLogID == nil || record.logID == clusterLogID else { return nil }
            return (kv, record)
        }
        logger.info("automatic failover: election", metadata: [
            "last_lsn": "\(mine.lastLSN)", "cluster_log_id": "\(clusterLogID ?? "none")",
            "members": "\(members.compactMap { JSONDecoder.walRecord(MemberRecord.self, from: $0.value) }.map { "\($0.address) last_lsn=\($0.lastLSN) log_id=\($0.logID)" })",
        ])
        if let ahead = peers.first(where: { $0.1.lastLSN > mine.lastLSN }) {
            logger.info("automatic failover: another member is further ahead; letting it lead", metadata: [
                "member": "\(ahead.1.address)", "its_last_lsn": "\(ahead.1.lastLSN)", "last_lsn": "\(mine.lastLSN)"])
            try await Task.sleep(for: .milliseconds(200))
            return
        }
        let termKV = try await etcd.get(keys.term).kv
        let current = termKV.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
        let term = max(current, role.term) + 1
        let lease = state.withLock { $0.lease }
        guard let lease else { return }
        let leader = LeaderRecord(address: settings.advertise, term: term, logID: logID, startLSN: mine.lastLSN + 1)
        var compares: [EtcdCompare] = [
            .createRevision(key: keys.leader, equals: 0),
            .modRevision(key: keys.term, equals: termKV?.modRevision ?? 0),
        ]
        for (kv, _) in peers { compares.append(.modRevision(key: kv.key, equals: kv.modRevision)) }
        let result = try await etcd.txn(compare: compares, success: [
            .put(key: keys.leader, value: leader.etcdValue, lease: lease),
            .put(key: keys.term, value: Array(String(term).utf8)),
            .put(key: keys.history(term), value: TermRecord(term: term, startLSN: leader.startLSN, address: settings.advertise).etcdValue),
            .put(key: keys.logID, value: Array(logID.utf8)),
        ])
        guard result.succeeded else { return }
        // Durable before the first acknowledgement of the new term.
        try TermFile.write(term, directory: settings.dataDirectory)
        let validUntil = state.withLock { s -> DispatchTime in
            s.leadingTerm = term
            return s.validUntil
        }
        role.lead(term: term, advertised: settings.advertise, leaseEnd: validUntil)
        failovers.increment()
        termGauge.record(Double(term))
        logger.notice("automatic failover: leading", metadata: [
            "term": "\(term)", "first_lsn_of_term": "\(leader.startLSN)", "members": "\(peers.map(\.1.address))"])
        await publish(force: true)
    }
}
