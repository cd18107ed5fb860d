// State shared by the listeners and every connection: the WAL, the limits (some reloadable),
// the connection table, and the one I/O queue all socket sources run on.
import Dispatch
import Logging
import Synchronization
import WALCore
import WALProtocol

final class ServerCore: @unchecked Sendable {
    // @unchecked Sendable: `readBuffer` is only touched from read handlers, which all run on
    // the serial `ioQueue`; everything else is immutable or inside a Mutex.

    let wal: WAL
    let ioQueue = DispatchQueue(label: "wald.io")
    let logger: Logger
    let metrics = ServerMetrics()
    let version: String
    /// Scratch space for read(2) on the I/O queue.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)

    private struct Mutable {
        var options: ServerOptions
        var connections: [Int: Connection] = [:]
        var nextID = 1
        var followers: [Int: FollowerState] = [:]
    }

    let syncReplicas = SyncReplicas()
    /// Fixed for the server's life (the role object itself changes on PROMOTE); read without
    /// copying the options on every append.
    let replication: ReplicationRole

    private let mutable: Mutex<Mutable>

    init(wal: WAL, options: ServerOptions, version: String) {
        self.wal = wal
        self.version = version
        logger = options.logger
        replication = options.replication
        mutable = Mutex(Mutable(options: options))
    }

    deinit { readBuffer.deallocate() }

    var options: ServerOptions { mutable.withLock { $0.options } }
    var authToken: String? { mutable.withLock { $0.options.authToken } }
    var connectionCount: Int { mutable.withLock { $0.connections.count } }

    func update(_ change: (inout ServerOptions) -> Void) {
        mutable.withLock { change(&$0.options) }
    }

    /// Registers a new connection, or returns nil when the server is full.
    func admit(fd: Int32, peer: String) -> Connection? {
        mutable.withLock { m in
            guard m.connections.count < m.options.maxConnections else { return nil }
            let connection = Connection(id: m.nextID, fd: fd, peer: peer, server: self)
            m.nextID += 1
            m.connections[connection.id] = connection
            metrics.connectionCount(m.connections.count)
            return connection
        }
    }

    func connectionClosed(_ connection: Connection) {
        let follower = mutable.withLock { m -> FollowerState? in
            m.connections[connection.id] = nil
            metrics.connectionCount(m.connections.count)
            return m.followers.removeValue(forKey: connection.id)
        }
        follower?.hold.release()
        syncReplicas.remove(connection: connection.id)
    }

    var allConnections: [Connection] { mutable.withLock { Array($0.connections.values) } }

    /// Compares in constant time, so the token cannot be guessed byte by byte from timing.
    func checkToken(_ candidate: ArraySlice<UInt8>) -> Bool {
        guard let token = authToken else { return true }
        let expected = Array(token.utf8)
        var difference = UInt8(expected.count == candidate.count ? 0 : 1)
        for index in 0..<expected.count {
            let other = index < candidate.count ? candidate[candidate.startIndex + index] : 0
            difference |= expected[index] ^ other
        }
        return difference == 0
    }

    /// A follow stream started at `lsn`: hold the segments it still needs.
    func followStarted(_ connection: Connection, from lsn: LSN) {
        let state = FollowerState(address: connection.peer, start: lsn, hold: wal.hold(from: lsn))
        mutable.withLock { $0.followers[connection.id] = state }
    }

    func recordFeedback(from connection: Connection, durableLSN: LSN) {
        let follower = mutable.withLock { m -> FollowerState? in
            guard var f = m.followers[connection.id] else { return nil }
            f.durableLSN = max(f.durableLSN, durableLSN)
            f.lastFeedback = ContinuousClock.now
            m.followers[connection.id] = f
            return f
        }
        guard let follower else { return }
        follower.hold.move(to: follower.durableLSN + 1)
        syncReplicas.feedback(connection: connection.id, durableLSN: durableLSN)
    }

    /// Drops followers that fell more than `maxFollowerHoldBytes` behind, releasing what
    /// they held; they get OUT_OF_RANGE when they come back after retention deleted it.
    func dropLaggingFollowers() async {
        let (limit, followers) = mutable.withLock { m in (m.options.maxFollowerHoldBytes, m.followers) }
        guard limit > 0 else { return }
        for (id, follower) in followers {
            let position = max(follower.durableLSN + 1, follower.start)
            let behind = await wal.bytes(from: position)
            guard behind > limit, let connection = mutable.withLock({ $0.connections[id] }) else { continue }
            logger.warning("dropping a follower that fell too far behind", metadata: [
                "follower": "\(follower.address)", "durable_lsn": "\(follower.durableLSN)",
                "bytes_behind": "\(behind)", "max_follower_hold_bytes": "\(limit)",
            ])
            connection.close()
        }
    }

    /// The INFO object.
    func infoJSON() async -> String {
        let status = await wal.status
        let (connections, options, followers) = mutable.withLock { m in (m.connections.count, m.options, Array(m.followers.values)) }
        let role = replication
        var fields: [(String, String)] = [
            ("version", jsonString(version)),
            ("log_id", jsonString(status.logID.description)),
            ("first_lsn", "\(status.firstLSN)"),
            ("last_lsn", "\(status.lastLSN)"),
            ("durable_lsn", "\(status.durableLSN)"),
            ("segments", "\(status.segments)"),
            ("bytes", "\(status.bytes)"),
            ("connections", "\(connections)"),
            ("role", jsonString(role.isFollower ? "follower" : "primary")),
            ("failed", status.failure == nil ? "false" : "true"),
            ("syncs", "\(status.syncStats.syncs)"),
        ]
        if let failure = status.failure { fields.append(("failure", jsonString(failure.description))) }
        if let upstream = role.upstream {
            fields.append(("upstream", jsonString(upstream)))
            fields.append(("upstream_connected", role.upstreamConnected ? "true" : "false"))
            if let error = role.lastError { fields.append(("upstream_error", jsonString(error))) }
        }
        let now = ContinuousClock.now
        var followerObjects: [String] = []
        for f in followers.sorted(by: { $0.address < $1.address }) {
            let since = (now - f.lastFeedback).components
            let elapsed = since.seconds * 1000 + since.attoseconds / 1_000_000_000_000_000
            let lag = status.durableLSN > f.durableLSN ? status.durableLSN - f.durableLSN : 0
            let lagBytes = lag == 0 ? 0 : await wal.bytes(from: f.durableLSN + 1)
            followerObjects.append(
                "{\"address\":\(jsonString(f.address)),\"durable_lsn\":\(f.durableLSN),\"lag_records\":\(lag),"
                    + "\"lag_bytes\":\(lagBytes),\"last_feedback_ms\":\(elapsed)}")
        }
        fields.append(("followers", "[" + followerObjects.joined(separator: ",") + "]"))
        fields.append(("min_sync_replicas", "\(options.minSyncReplicas)"))
        let timeouts = syncReplicas.timeouts
        fields.append(("sync_replica_timeouts", "\(timeouts.count)"))
        if let last = timeouts.last { fields.append(("sync_replica_error", jsonString(last))) }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    /// Prometheus text from the daemon's registry, or a note when metrics are off.
    func metricsText() -> String {
        options.metricsText?() ?? "# metrics are not enabled in this process\n"
    }
}

struct FollowerState {
    let address: String
    /// Where the stream started; the follower has everything before it.
    let start: LSN
    let hold: SegmentHold
    var durableLSN: LSN = 0
    var lastFeedback = ContinuousClock.now
}

/// A JSON string literal with the required escapes.
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
