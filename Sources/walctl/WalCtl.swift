// walctl's entry point: the root command and its list of subcommands. Offline commands
// (dump, verify, repair) work on a data directory; network commands talk to a running wald.
import ArgumentParser
import WALProtocol

@main
struct WalCtl: AsyncParsableCommand {
    /// Commands that open a data directory directly (wald must not be running on it).
    static let offlineCommands: [any ParsableCommand.Type] = [Dump.self, Verify.self, Repair.self, HashToken.self]
    /// Commands that talk to a running wald. Add new ones here.
    static let networkCommands: [any ParsableCommand.Type] = [
        Append.self, Replay.self, Sync.self, Info.self, Ping.self, Truncate.self, Promote.self, Bench.self, Cluster.self,
    ]

    static let configuration = CommandConfiguration(
        commandName: "walctl",
        abstract: "Inspect, check and repair wald write-ahead logs.",
        discussion: """
            Network commands take --server (or WALCTL_SERVER), --token (or WALCTL_TOKEN) and \
            --timeout (or WALCTL_TIMEOUT), before or after the command name.
            """,
        version: WaldVersion.string,
        subcommands: offlineCommands + networkCommands
    )

    static func main() async {
        StandardStreams.checkStandardOutputAtExit()
        let names = Set(networkCommands.map { $0._commandName })
        await main(ServerOptions.movingGlobalOptions(Array(CommandLine.arguments.dropFirst()), subcommands: names))
    }
}
