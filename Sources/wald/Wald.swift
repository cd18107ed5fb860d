// The wald daemon: resolve the configuration, open the WAL (recovery), serve it, and stop
// gracefully on SIGTERM/SIGINT (answer in-flight requests, final fsync, exit 0).
import ArgumentParser
import Foundation
import Logging
import WALCore
import WALDaemon
import WALServer

@main
struct Wald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wald",
        abstract: "A write-ahead log served over TCP (binary and text protocol on one port).",
        discussion: """
            Options come from flags, then WALD_* environment variables, then the YAML file given \
            with --config, then defaults. See README.md for the table. Once every listener is \
            bound, wald prints one line "ready <address> ..." on standard output.
            """)

    @OptionGroup var flags: WaldFlags

    func run() async throws {
        let config: WaldConfig
        do {
            config = try await WaldConfig.load(flags: flags, environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("wald: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let code = await Daemon(config: config).run()
        throw ExitCode(code)
    }
}
