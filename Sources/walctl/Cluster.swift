// `walctl cluster`: a cluster under automatic failover as etcd sees it (docs/replication.md):
// the leader and its term, then each member with its role, term, LSNs and lag behind the leader.
// Also where `--ha-etcd/--ha-cluster` find the leader for the other network commands.
import ArgumentParser
import Foundation
import WALClient
import WALEtcd
import WALSystem

enum ClusterView {
    struct Snapshot {
        var leader: LeaderRecord?
        var term: UInt64
        var members: [MemberRecord]
    }

    static func snapshot(etcd urls: [String], cluster: String, timeout: Duration?) async throws -> Snapshot {
        let client = try EtcdClient(endpoints: urls, requestTimeout: timeout ?? .seconds(10))
        do {
            let keys = WaldClusterKeys(cluster: cluster)
            let leader = try await client.get(keys.leader).kv.flatMap { JSONDecoder.walRecord(LeaderRecord.self, from: $0.value) }
            let term = try await client.get(keys.term).kv.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            let members = try await client.getPrefix(keys.membersPrefix).kvs.compactMap {
                JSONDecoder.walRecord(MemberRecord.self, from: $0.value)
            }
            await client.shutdown()
            return Snapshot(leader: leader, term: term, members: members.sorted { $0.address < $1.address })
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// The leader's address, or an error saying there is none now (an election runs).
    static func leader(etcd urls: [String], cluster: String, timeout: Duration?) async throws -> Endpoint {
        let view = try await snapshot(etcd: urls, cluster: cluster, timeout: timeout)
        guard let leader = view.leader else {
            throw ValidationError("cluster \(cluster) has no leader in etcd now (an election may be running; retry in a few seconds)")
        }
        guard let endpoint = Endpoint(parsing: leader.address) else {
            throw ValidationError("the leader key of cluster \(cluster) names '\(leader.address)', which is not HOST:PORT")
        }
        return endpoint
    }
}

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the members of a cluster under automatic failover: roles, terms, LSNs, lag.",
        discussion: """
            Reads etcd (--ha-etcd, --ha-cluster): the leader key and each member's published \
            record (refreshed every 0.5 s while it changes). One line per member: ADDRESS ROLE \
            TERM LAST_LSN DURABLE_LSN LAG, where LAG is the leader's last LSN minus the member's \
            durable LSN. --json prints one object instead. Exit status 1 when etcd cannot be read.
            """)
    @OptionGroup var connection: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard connection.resolvedHAEtcd != nil, connection.resolvedHACluster != nil else {
            throw ValidationError("walctl cluster needs --ha-etcd URLS and --ha-cluster NAME (or WALCTL_HA_ETCD, WALCTL_HA_CLUSTER)")
        }
    }

    func run() async throws {
        let view: ClusterView.Snapshot
        do {
            view = try await ClusterView.snapshot(etcd: connection.resolvedHAEtcd!, cluster: connection.resolvedHACluster!,
                                                  timeout: try connection.resolvedTimeout)
        } catch {
            fail("\(error)")
        }
        let leaderLast = view.members.first { $0.address == view.leader?.address }?.lastLSN ?? 0
        func lag(_ member: MemberRecord) -> UInt64 { leaderLast > member.durableLSN ? leaderLast - member.durableLSN : 0 }
        if json {
            let members = view.members.map { member in
                "{\"address\":\(quoted(member.address)),\"role\":\(quoted(member.role)),\"term\":\(member.term),"
                    + "\"last_lsn\":\(member.lastLSN),\"durable_lsn\":\(member.durableLSN),\"lag\":\(lag(member))}"
            }
            StandardStreams.printLine("{\"cluster\":\(quoted(connection.resolvedHACluster!)),\"term\":\(view.term),"
                + "\"leader\":\(view.leader.map { quoted($0.address) } ?? "null"),\"members\":[\(members.joined(separator: ","))]}")
            return
        }
        StandardStreams.printLine("cluster \(connection.resolvedHACluster!): term \(view.term), leader "
            + (view.leader.map { "\($0.address) (since LSN \($0.startLSN))" } ?? "none (an election may be running)"))
        StandardStreams.printLine("ADDRESS ROLE TERM LAST_LSN DURABLE_LSN LAG")
        for member in view.members {
            StandardStreams.printLine("\(member.address) \(member.role) \(member.term) \(member.lastLSN) \(member.durableLSN) \(lag(member))")
        }
    }

    private func quoted(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text])) ?? Data("[\"\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
