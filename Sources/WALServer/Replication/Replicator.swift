// A follower's replication: check that the upstream holds the same log (adopting the
// upstream's identity when ours is empty), then hand a connected socket to the server's event
// loop, which streams the upstream's records into the WAL under their LSNs and sends FEEDBACK
// after each fdatasync (UpstreamStream.swift, beside this file). Reconnects with backoff; refuses a
// foreign, diverged or ahead log without touching it.
import Logging
import Synchronization
import WALClient
import WALCore
import WALSync
import WALSystem

public final class Replicator: Sendable {
    private let wal: WAL
    private let server: WALServer
    private let upstream: Endpoint
    private let token: String?
    private let tls: ClientTLS?
    private let role: ReplicationRole
    private let logger: Logger
    /// Under automatic failover: the term of the leader this follower was pointed at; an
    /// upstream whose INFO shows a lower term is refused (a deposed leader).
    private let minimumTerm: UInt64
    private let task = WALMutex<Task<Void, Never>?>(nil)

    /// Follows `upstream` into `wal` through `server`'s loop once `start()` is called; `token`
    /// authenticates, `tls` (nil: plain TCP) says how to reach it, `minimumTerm` refuses a
    /// deposed leader under automatic failover.
    public init(wal: WAL, server: WALServer, upstream: Endpoint, token: String?, tls: ClientTLS?, role: ReplicationRole,
         logger: Logger, minimumTerm: UInt64 = 0) {
        self.minimumTerm = minimumTerm
        self.wal = wal
        self.server = server
        self.upstream = upstream
        self.token = token
        self.tls = tls
        self.role = role
        self.logger = logger
    }

    public func start() {
        let loop = Task { await run() }
        task.withLock { $0 = loop }
    }

    /// Stops following (PROMOTE or shutdown) and waits until no more records are appended.
    public func stop() async {
        let loop = task.withLock { $0 }
        loop?.cancel()
        await server.stopFollowing()
        await loop?.value
    }

    private func run() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await followOnce()
                backoff = .milliseconds(100)
            } catch is CancellationError {
                break
            } catch UpstreamError.stopped {
                break
            } catch {
                if Task.isCancelled { break }
                role.setConnected(false, error: "\(error)")
                logger.warning("replication from upstream stopped; retrying", metadata: [
                    "upstream": "\(upstream)", "error": "\(error)", "retry_in": "\(backoff)",
                ])
            }
            role.setConnected(false)
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
        role.setConnected(false)
    }

    /// One stream: returns (throws) when it ends.
    private func followOnce() async throws {
        let start = try await checkIdentity()
        try Task.checkCancellation()
        let (fd, session) = try WALClient.connectStream(upstream, token: token, tls: tls)
        role.setConnected(true)
        logger.notice("following upstream", metadata: [
            "upstream": "\(upstream)", "from_lsn": "\(start)", "tls": "\(session?.protocolVersion ?? "off")",
        ])
        try await server.follow(upstreamSocket: fd, tls: session, from: start)
    }

    /// Makes sure we follow the same log and returns the LSN to stream from.
    private func checkIdentity() async throws -> LSN {
        // Bounded: an upstream that accepts and never answers must not hold the follower for ever.
        let control = try await WALClient.connect(upstream, token: token, timeout: .seconds(10), tls: tls)
        defer { control.close() }
        // stop() cancels this task: closing the connection ends a call waiting on an upstream
        // that stopped answering (a paused leader) at once, instead of after the timeout.
        return try await withTaskCancellationHandler {
            try await checkIdentity(control)
        } onCancel: {
            control.close()
        }
    }

    private func checkIdentity(_ control: WALClient) async throws -> LSN {
        let info = try await control.info()
        if info.term < minimumTerm {
            throw ReplicationError.staleTerm(upstream: info.term, seen: minimumTerm)
        }
        var local = wal.status
        let localIsEmpty = local.lastLSN < local.firstLSN
        let upstreamGeneration = UInt32(clamping: info.generation)
        if local.logID.description != info.logID || (localIsEmpty && local.firstLSN < info.firstLSN) {
            guard localIsEmpty, let id = LogID(info.logID) else {
                throw ReplicationError.foreignLog(local: local.logID.description, upstream: info.logID)
            }
            // A new follower takes the upstream's identity and starts where its log starts.
            try await wal.adoptIdentity(logID: id, generation: upstreamGeneration, firstLSN: max(info.firstLSN, 1))
            local = wal.status
        } else if local.generation != upstreamGeneration {
            // A repair cut the upstream's log (or ours): the same LSN may name another record on
            // each side. Only an empty log can simply take the upstream's generation.
            guard localIsEmpty else {
                throw ReplicationError.generation(local: local.generation, upstream: upstreamGeneration)
            }
            try await wal.adoptIdentity(logID: local.logID, generation: upstreamGeneration,
                                        firstLSN: max(info.firstLSN, local.firstLSN, 1))
            local = wal.status
        }
        if local.lastLSN > info.lastLSN {
            throw ReplicationError.ahead(local: local.lastLSN, upstream: info.lastLSN)
        }
        if local.lastLSN >= local.firstLSN && local.lastLSN >= info.firstLSN {
            // Same history? Compare our last record with the upstream's record at that LSN.
            let reader = try wal.reader(from: local.lastLSN)
            let mine = try reader.next()
            var theirs: ReplayedRecord?
            for try await record in control.replay(from: local.lastLSN, count: 1) { theirs = record }
            if mine?.payload != theirs?.payload {
                throw ReplicationError.diverged(lsn: local.lastLSN)
            }
        }
        return local.lastLSN + 1
    }
}

public enum ReplicationError: Error, CustomStringConvertible {
    case foreignLog(local: String, upstream: String)
    case ahead(local: LSN, upstream: LSN)
    case diverged(lsn: LSN)
    case generation(local: UInt32, upstream: UInt32)
    case staleTerm(upstream: UInt64, seen: UInt64)

    public var description: String {
        switch self {
        case .foreignLog(let local, let upstream):
            "refusing to follow: the local log \(local) is not the upstream's log \(upstream) (local data left untouched)"
        case .ahead(let local, let upstream):
            "refusing to follow: the local log ends at LSN \(local), beyond the upstream's last LSN \(upstream) (local data left untouched)"
        case .generation(let local, let upstream):
            "refusing to follow: the upstream's log is of generation \(upstream) but this follower's is of generation \(local): "
                + "a repair cut one of them, so the same LSN may name different records; rebuild this follower from an "
                + "empty data directory (local data left untouched)"
        case .staleTerm(let upstream, let seen):
            "refusing to follow: the upstream leads term \(upstream), but term \(seen) has been seen (a deposed leader)"
        case .diverged(let lsn):
            "refusing to follow: the local record at LSN \(lsn) differs from the upstream's (the logs diverged; local data left untouched)"
        }
    }
}
