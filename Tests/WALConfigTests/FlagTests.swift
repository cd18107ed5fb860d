// WaldFlags.parse: the command line read against the option catalogue (no option is declared to
// ArgumentParser), with a usage error for every malformed argument.
import Testing

@testable import WALConfig

@Suite struct FlagTests {
    @Test func everyOptionsFlagIsRecognised() throws {
        for option in WaldOption.allCases {
            let arguments = option.entry.field.shape == .toggle ? [option.flag] : [option.flag, "x"]
            let flags = try WaldFlags.parse(arguments)
            #expect(flags.values[option] == [option.entry.field.shape == .toggle ? "true" : "x"], "\(option.flag)")
        }
    }

    @Test func valuesMayFollowAnEqualsSign() async throws {
        let config = try await load(["--max-connections=7", "--listen=127.0.0.1:1", "--log-level", "debug"])
        #expect(config.maxConnections == 7 && config.logLevel == .debug)
        #expect(config.listen.map(\.description) == ["127.0.0.1:1"])
        // An empty value after '=' is a value, and gets the option's own error.
        #expect(try await loadError(["--max-connections="]) == .invalidValue(
            option: .maxConnections, source: .flag, value: "", expected: "expected an integer of at least 1"))
    }

    @Test func listFlagsCollectEveryValueAndOthersKeepTheLast() async throws {
        let config = try await load(["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2,127.0.0.1:3",
                                     "--max-connections", "5", "--max-connections", "9"])
        #expect(config.listen.map(\.description) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        #expect(config.maxConnections == 9)
    }

    @Test func aSwitchTakesNoValueButMayBeSpelledOut() async throws {
        let on = try await load(["--follow-tls", "--follow", "10.0.0.1:7070"])
        #expect(on.followTLS)
        let off = try await load(["--follow-tls=false", "--follow", "10.0.0.1:7070"])
        #expect(!off.followTLS)
        #expect(try WaldFlags.parse(["--follow-tls", "--unix", "/tmp/s"]).values[.unix] == ["/tmp/s"])
    }

    @Test func anUnknownFlagIsAUsageErrorNamingTheNearestOne() {
        #expect(throws: WaldConfigError.unknownFlag("--max-conections", suggestion: "--max-connections")) {
            try WaldFlags.parse(["--max-conections", "5"])
        }
        #expect(throws: WaldConfigError.unknownFlag("--colour", suggestion: nil)) { try WaldFlags.parse(["--colour", "red"]) }
        let error = WaldConfigError.unknownFlag("--lisen", suggestion: "--listen")
        #expect(error.isUsageError && error.description == "unknown option --lisen (did you mean --listen?); wald --help lists them")
    }

    @Test func aFlagWithoutItsValueIsAUsageError() {
        #expect(throws: WaldConfigError.missingFlagValue(.listen)) { try WaldFlags.parse(["--listen"]) }
        #expect(throws: WaldConfigError.missingFlagValue(.authToken)) { try WaldFlags.parse(["--auth-token", "--listen", "x"]) }
        #expect(WaldConfigError.missingFlagValue(.dataDir).description == "--data-dir needs a value (--data-dir DIR or --data-dir=DIR)")
    }

    @Test(arguments: ["serve", "-l", "--", "-"])
    func anArgumentThatIsNoFlagIsAUsageError(argument: String) {
        #expect(throws: WaldConfigError.unexpectedArgument(argument)) { try WaldFlags.parse([argument]) }
    }

    @Test func helpNamesEveryFlagVariableAndKeyOnce() {
        let help = WaldFlags.help()
        let flat = help.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        for option in WaldOption.allCases {
            #expect(help.contains("\n  \(option.flag)"), "help lacks \(option.flag)")
            #expect(flat.contains("Env \(option.environmentVariable)"), "help lacks \(option.environmentVariable)")
            if option.isFileKey { #expect(flat.contains("file key \(option.yamlKey).")) }
        }
        #expect(help.split(separator: "\n").allSatisfy { $0.count <= 76 })
    }
}
