// wald's keys in etcd under automatic failover (docs/replication.md has the rules), shared by
// the daemon's coordinator and walctl: where each key lives, what its JSON value holds, and
// the one rule computed from them that both need, where a rejoining member's log must be cut.
//
//   /wald/<cluster>/leader            {"address","term","log_id","start_lsn"}   under the leader's lease
//   /wald/<cluster>/term              "<highest term ever granted>"             no lease
//   /wald/<cluster>/log_id            "<the cluster's log id>"                  no lease
//   /wald/<cluster>/history/<term>    {"term","start_lsn","address"}            no lease, one per term
//   /wald/<cluster>/members/<address> {"address","role","term","last_lsn",...}  under that member's lease
import Foundation

/// The etcd keys of one wald cluster.
public struct WaldClusterKeys: Sendable {
    public let cluster: String
    public let prefix: String

    public init(cluster: String) {
        self.cluster = cluster
        prefix = "/wald/\(cluster)/"
    }

    public var leader: String { prefix + "leader" }
    public var term: String { prefix + "term" }
    public var logID: String { prefix + "log_id" }
    public var membersPrefix: String { prefix + "members/" }
    public func member(_ address: String) -> String { membersPrefix + address }
    public var historyPrefix: String { prefix + "history/" }
    /// Zero-padded to 20 digits so that etcd's byte order is term order.
    public func history(_ term: UInt64) -> String {
        let digits = String(term)
        return historyPrefix + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }
}

/// The leader key's value: who leads which term, and the first LSN it wrote in it.
public struct LeaderRecord: Codable, Sendable, Equatable {
    public var address: String
    public var term: UInt64
    public var logID: String
    /// The first LSN the leader hands out in this term (its last LSN at election + 1).
    public var startLSN: UInt64

    public init(address: String, term: UInt64, logID: String, startLSN: UInt64) {
        self.address = address
        self.term = term
        self.logID = logID
        self.startLSN = startLSN
    }

    enum CodingKeys: String, CodingKey {
        case address, term
        case logID = "log_id"
        case startLSN = "start_lsn"
    }
}

/// What each member publishes about itself (refreshed when it changes).
public struct MemberRecord: Codable, Sendable, Equatable {
    public var address: String
    /// "leader", "follower" or "candidate" (no leader known, or fenced).
    public var role: String
    public var term: UInt64
    public var logID: String
    public var lastLSN: UInt64
    public var durableLSN: UInt64

    public init(address: String, role: String, term: UInt64, logID: String, lastLSN: UInt64, durableLSN: UInt64) {
        self.address = address
        self.role = role
        self.term = term
        self.logID = logID
        self.lastLSN = lastLSN
        self.durableLSN = durableLSN
    }

    enum CodingKeys: String, CodingKey {
        case address, role, term
        case logID = "log_id"
        case lastLSN = "last_lsn"
        case durableLSN = "durable_lsn"
    }
}

/// One entry of the term history: term `term` began at `startLSN` on `address`.
public struct TermRecord: Codable, Sendable, Equatable {
    public var term: UInt64
    public var startLSN: UInt64
    public var address: String

    public init(term: UInt64, startLSN: UInt64, address: String) {
        self.term = term
        self.startLSN = startLSN
        self.address = address
    }

    enum CodingKeys: String, CodingKey {
        case term, address
        case startLSN = "start_lsn"
    }
}

extension JSONDecoder {
    /// Decodes a record from a key's value; nil when the value is not one (logged by the caller).
    public static func walRecord<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) -> T? {
        try? JSONDecoder().decode(type, from: Data(bytes))
    }
}

extension Encodable {
    /// The JSON bytes stored in etcd.
    public var etcdValue: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? Array(encoder.encode(self))) ?? []
    }
}

public enum WaldCluster {
    /// Where the log of a member whose records belong to term `localTerm` parts from the log of
    /// the leader of a later term: the records through the returned LSN are the same on both;
    /// later ones exist only on this member (a former leader's appends that reached no one)
    /// and must be cut before it follows. Raft's log matching rule, with the term history in
    /// place of a term per entry: every leader's log, up to the start of the next term in the
    /// history, is a prefix of the log of the leader before it.
    ///
    /// - Parameters:
    ///   - localTerm: the member's `ha-term` (0 when it never took part).
    ///   - history: the cluster's term history (any order).
    ///   - leaderTerm: the term of the leader to follow.
    /// - Returns: the last LSN to keep, or nil when nothing needs cutting (the member belongs to
    ///   the leader's term already, or no later term started).
    /// - Throws: `WaldClusterError.historyMissing` when a term between the two is not in the
    ///   history (etcd lost keys): nothing is cut then, and the member does not follow.
    public static func keepThrough(localTerm: UInt64, history: [TermRecord], leaderTerm: UInt64) throws -> UInt64? {
        guard leaderTerm > localTerm else { return nil }
        let later = history.filter { $0.term > localTerm && $0.term <= leaderTerm }.min { $0.term < $1.term }
        guard let next = later, next.startLSN >= 1 else {
            throw WaldClusterError.historyMissing(localTerm: localTerm, leaderTerm: leaderTerm)
        }
        return next.startLSN - 1
    }
}

public enum WaldClusterError: Error, CustomStringConvertible, Equatable {
    case historyMissing(localTerm: UInt64, leaderTerm: UInt64)

    public var description: String {
        switch self {
        case .historyMissing(let local, let leader):
            "the cluster's term history in etcd has no term after \(local) up to the leader's term \(leader): "
                + "cannot tell where this log parts from the leader's; not following (rebuild this member from an empty data directory)"
        }
    }
}
