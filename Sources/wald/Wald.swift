// The wald daemon's command line: resolve the configuration, then hand over to Daemon.
import ArgumentParser
import Foundation
import WALConfig
import WALProtocol

@main
struct Wald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wald",
        abstract: "A write-ahead log served over TCP (binary and text protocol on one port).",
        usage: "wald [--option VALUE ...]",
        discussion: """
            Options come from flags, then WALD_* environment variables, then the YAML file given \
            with --config, then defaults (docs/config-table.md). Once every listener is bound, \
            wald prints one line "ready <address> ..." on standard output. SIGHUP reloads the \
            config file; SIGTERM/SIGINT stop gracefully.

            """ + WaldFlags.help(),
        version: WaldVersion.string)

    /// The options, read against the catalogue by `WaldFlags.parse` (ArgumentParser handles only
    /// --help and --version: an option list built at run time can't be declared to it).
    @Argument(parsing: .allUnrecognized, help: .hidden) var arguments: [String] = []

    func run() async throws {
        // A write to a closed pipe (stderr, stdout) must fail with EPIPE, not end the process.
        signal(SIGPIPE, SIG_IGN)
        let flags: WaldFlags
        do {
            flags = try WaldFlags.parse(arguments)
        } catch {
            StandardError.write("wald: \(error)\n")
            throw ExitCode(64)
        }
        let config: WaldConfig
        do {
            config = try await WaldConfig.load(flags: flags, environment: ProcessInfo.processInfo.environment)
        } catch {
            StandardError.write("wald: \(error)\n")
            Systemd.notify("STATUS=invalid configuration: \(error)")
            throw ExitCode(2)
        }
        let code = await Daemon(config: config, flags: flags).run()
        throw ExitCode(code)
    }
}
