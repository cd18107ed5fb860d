// Options shared by the network commands: where the server is, how to authenticate, how long to
// wait. Each has an environment variable (WALCTL_SERVER, WALCTL_TOKEN, WALCTL_TIMEOUT, like
// etcdctl's ETCDCTL_* and redis-cli's REDISCLI_AUTH) so a token need not appear in `ps`, and
// they may come before the subcommand as well as after it (`walctl --server h ping`).
import ArgumentParser
import Foundation
import WALClient
import WALSystem

struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Server address HOST[:PORT] (port 7070 when omitted; IPv6 as [::1]:7070), or unix:PATH; several, comma-separated, "
            + "mean the members of a cluster: walctl talks to their leader. Env WALCTL_SERVER. Default 127.0.0.1:7070.",
        valueName: "host:port"))
    var server: String?

    @Option(name: .customLong("ha-etcd"), help: ArgumentHelp(
        "Find the leader of --ha-cluster in these etcd endpoints (comma-separated http://HOST:PORT) instead of --server. "
            + "Env WALCTL_HA_ETCD.", valueName: "urls"))
    var haEtcd: String?

    @Option(name: .customLong("ha-cluster"), help: ArgumentHelp(
        "The cluster name wald was started with (--ha-cluster). Env WALCTL_HA_CLUSTER.", valueName: "name"))
    var haCluster: String?

    @Option(name: .long, help: ArgumentHelp("Connect to this unix socket instead of --server.", valueName: "path"))
    var unix: String?

    @Option(name: .long, help: ArgumentHelp(
        "Auth token, when the server requires one. Prefer the environment variable WALCTL_TOKEN: arguments show in ps.",
        valueName: "token"))
    var token: String?

    @Option(name: .long, help: ArgumentHelp(
        "Seconds to wait for the connection and for each reply; 0 = no limit. Env WALCTL_TIMEOUT. Default 10.",
        valueName: "seconds"))
    var timeout: Double?

    @Flag(name: .long, help: "Connect with TLS (the server's certificate is verified). Implied by the other --tls-* options.")
    var tls = false

    @Option(name: .long, help: ArgumentHelp("CAs the server's certificate must chain to (PEM). Default the system's.", valueName: "file"))
    var tlsCaFile: String?

    @Option(name: .long, help: ArgumentHelp("Client certificate (PEM), for a server that asks for one.", valueName: "file"))
    var tlsCertFile: String?

    @Option(name: .long, help: ArgumentHelp("The key of --tls-cert-file (PEM).", valueName: "file"))
    var tlsKeyFile: String?

    @Option(name: .long, help: ArgumentHelp("The name the server's certificate must carry. Default the host of --server.", valueName: "name"))
    var tlsServerName: String?

    /// The options every network command takes, as typed (for moving them after the subcommand).
    static let names: Set<String> = ["--server", "--unix", "--token", "--timeout", "--ha-etcd", "--ha-cluster", "--tls",
                                     "--tls-ca-file", "--tls-cert-file", "--tls-key-file", "--tls-server-name"]
    /// The names above that take no value.
    static let flagNames: Set<String> = ["--tls"]

    /// TLS settings when any --tls option is given.
    var clientTLS: ClientTLS? {
        guard tls || tlsCaFile != nil || tlsCertFile != nil || tlsKeyFile != nil || tlsServerName != nil else { return nil }
        return ClientTLS(caFile: tlsCaFile, certificateFile: tlsCertFile, keyFile: tlsKeyFile, serverName: tlsServerName)
    }

    static let environment = ProcessInfo.processInfo.environment

    var serverText: String { server ?? Self.environment["WALCTL_SERVER"] ?? "127.0.0.1:7070" }

    var resolvedToken: String? { token ?? Self.environment["WALCTL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    /// nil = no limit.
    var resolvedTimeout: Duration? {
        get throws {
            var seconds = timeout ?? 10
            var source = "--timeout"
            if timeout == nil, let text = Self.environment["WALCTL_TIMEOUT"] {
                guard let value = Double(text) else { throw ValidationError("WALCTL_TIMEOUT must be a number of seconds, got '\(text)'") }
                seconds = value
                source = "WALCTL_TIMEOUT"
            }
            guard seconds.isFinite, seconds >= 0, seconds <= 31_536_000 else {
                throw ValidationError("\(source) must be a number of seconds from 0 (no limit) to 31536000")
            }
            return seconds == 0 ? nil : .nanoseconds(Int64(seconds * 1e9))
        }
    }

    var resolvedHAEtcd: [String]? {
        (haEtcd ?? Self.environment["WALCTL_HA_ETCD"]).flatMap { $0.isEmpty ? nil : $0.split(separator: ",").map(String.init) }
    }

    var resolvedHACluster: String? { haCluster ?? Self.environment["WALCTL_HA_CLUSTER"] }

    /// The addresses given (one, or a cluster's members).
    var endpoints: [Endpoint] {
        get throws {
            if let unix { return [.unix(path: unix)] }
            return try serverText.split(separator: ",").map { text in
                guard let endpoint = Endpoint(parsing: String(text), defaultPort: Endpoint.defaultPort) else {
                    let source = server == nil && Self.environment["WALCTL_SERVER"] != nil ? "WALCTL_SERVER" : "--server"
                    throw ValidationError("\(source) must be HOST, HOST:PORT, [IPv6]:PORT or unix:PATH (comma-separated for "
                                          + "several), got '\(serverText)'")
                }
                return endpoint
            }
        }
    }

    var endpoint: Endpoint {
        get throws {
            guard let first = try endpoints.first else { throw ValidationError("--server names no address") }
            return first
        }
    }

    func validate() throws {
        _ = try endpoint
        _ = try resolvedTimeout
        if (resolvedHAEtcd == nil) != (resolvedHACluster == nil) {
            throw ValidationError("--ha-etcd and --ha-cluster go together (the etcd endpoints and the cluster's name)")
        }
        if (tlsCertFile == nil) != (tlsKeyFile == nil) {
            throw ValidationError("--tls-cert-file and --tls-key-file go together")
        }
    }

    /// Connects (and authenticates) to the server, or to the leader when several addresses or
    /// an etcd cluster are given; a failure ends walctl with `walctl: error: …` and status 1.
    func connect() async -> WALClient {
        do {
            return try await tryConnect()
        } catch {
            fail("\(error)")
        }
    }

    /// Connects (and authenticates), throwing what went wrong: to the server, or to the leader
    /// when several addresses or an etcd cluster are given.
    func tryConnect() async throws -> WALClient {
        let timeout = try resolvedTimeout
        if let urls = resolvedHAEtcd, let cluster = resolvedHACluster {
            let leader = try await ClusterView.leader(etcd: urls, cluster: cluster, timeout: timeout)
            return try await WALClient.connect(leader, token: resolvedToken, timeout: timeout, tls: clientTLS)
        }
        let candidates = try endpoints
        if candidates.count == 1 {
            return try await WALClient.connect(candidates[0], token: resolvedToken, timeout: timeout, tls: clientTLS)
        }
        return try await connectToLeader(of: candidates, timeout: timeout)
    }

    /// The first member that answers, or the leader it names (INFO's `leader`) when it is a follower.
    private func connectToLeader(of candidates: [Endpoint], timeout: Duration?) async throws -> WALClient {
        var lastError: (any Error)?
        for candidate in candidates {
            do {
                let client = try await WALClient.connect(candidate, token: resolvedToken, timeout: timeout, tls: clientTLS)
                let info = try await client.info()
                guard info.role == "follower", let named = info.leader, let leader = Endpoint(parsing: named),
                      leader != candidate else { return client }
                if let moved = try? await WALClient.connect(leader, token: resolvedToken, timeout: timeout, tls: clientTLS) {
                    client.close()
                    return moved
                }
                return client
            } catch {
                lastError = error
            }
        }
        throw lastError ?? WALClientError.connectionFailed("no address given")
    }

    /// Moves the global options that come before the subcommand to after it, where the parser
    /// looks for them: `walctl --server h:1 ping` is `walctl ping --server h:1`.
    static func movingGlobalOptions(_ arguments: [String], subcommands: Set<String>) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard names.contains(name) else { break }
            leading.append(argument)
            if !argument.contains("=") && !flagNames.contains(name) && index + 1 < arguments.count {
                leading.append(arguments[index + 1])
                index += 1
            }
            index += 1
        }
        guard !leading.isEmpty, index < arguments.count, subcommands.contains(arguments[index]) else { return arguments }
        return [arguments[index]] + leading + arguments[(index + 1)...]
    }
}

extension ParsableCommand {
    /// Ends walctl like a parse error of this subcommand: the message, then its usage (exit 64).
    static func usageError(_ message: String) -> Never {
        let name = WalCtl.usageString(for: Self.self).split(separator: " ").prefix(2).joined(separator: " ")
        printError("error: \(message)\nUsage: \(WalCtl.usageString(for: Self.self))\n  See '\(name) --help' for more information.")
        StandardStreams.exit(64)
    }
}
