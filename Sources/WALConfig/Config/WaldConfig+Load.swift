// Loading: stacks the flags, the WALD_* environment and the YAML file as swift-configuration providers
// (in that order of precedence), reads each option's text through one ConfigReader, remembers which
// layer answered so an error can name it, then parses, range-checks and cross-checks the values.
import Configuration
import Foundation
import Logging
import Synchronization
import WALSync
import WALSystem

extension WaldConfig {
    /// Resolves every option: flags > environment (`WALD_*`) > config file (`--config`/`WALD_CONFIG`) > defaults.
    ///
    /// - Parameters:
    ///   - flags: the parsed command line; `try WaldFlags.parse([])` for none.
    ///   - environment: the process environment (`ProcessInfo.processInfo.environment`); only
    ///     `WALD_*` variables are read.
    /// - Throws: `WaldConfigError`, whose `description` is a one-line message for the operator.
    public static func load(flags: WaldFlags, environment: [String: String]) async throws -> WaldConfig {
        try await resolve(flags: flags, environment: environment)
    }

    /// The `WALD_*` variables in `environment` that name no option, e.g. a misspelt `WALD_MAX_SEGMENT_BYTE`.
    /// `load` ignores them (other tools may share the prefix); the daemon should log a warning.
    public static func unrecognizedEnvironmentVariables(in environment: [String: String]) -> [String] {
        let known = Set(WaldOption.allCases.map(\.environmentVariable))
        return environment.keys.filter { $0.hasPrefix("WALD_") && !known.contains($0) }.sorted()
    }

    private static func resolve(
        flags: WaldFlags, environment: [String: String]
    ) async throws(WaldConfigError) -> WaldConfig {
        var layers: [(source: ConfigSource, provider: any ConfigProvider)] = [
            (.flag, InMemoryProvider(name: "flags", values: flags.configValues)),
            (
                .environment,
                KeyMappingProvider(
                    upstream: EnvironmentVariablesProvider(
                        environmentVariables: environment,
                        secretsSpecifier: .specific(Set(WaldOption.allCases.filter(\.isSecret).map(\.environmentVariable)))),
                    keyMapper: { $0.prepending(["wald"]) })
            ),
        ]
        let configFile: Sourced<String>?
        var accessUsers: [WaldUser] = []
        var accessRoles: [String: String] = [:]
        if let path = flags.config {
            configFile = Sourced(value: path, source: .flag, text: path)
        } else if let path = environment[WaldOption.config.environmentVariable] {
            configFile = Sourced(value: path, source: .environment, text: path)
        } else {
            configFile = nil
        }
        if let configFile {
            let path = configFile.value
            guard !path.isEmpty else {
                throw .invalidValue(option: .config, source: configFile.source, value: path, expected: "expected a file path")
            }
            if try ConfigFileCheck.check(path: path) == .options {
                (accessUsers, accessRoles) = try ConfigFileCheck.accessLists(path: path)
                // The YAML provider takes only scalars and lists of scalars: it reads a copy
                // without the structured access lists (removed as soon as it is read).
                let options = try ConfigFileCheck.copyWithoutAccessLists(path: path)
                defer { if let options { unlink(options) } }
                do {
                    let provider = try await FileProvider<YAMLSnapshot>(
                        parsingOptions: .init(secretsSpecifier: .specific(Set(WaldOption.allCases.filter(\.isSecret).map(\.yamlKey)))),
                        filePath: .init(options ?? path))
                    layers.append((.file(path), provider))
                } catch {
                    throw .malformedFile(path: path, reason: "\(error)")
                }
            }
        }
        let values = LayeredValues(layers: layers)

        var config = WaldConfig()
        config.configFile = configFile?.value
        config.users = accessUsers
        config.certificateRoles = accessRoles

        // Every option but `config` (resolved above: it names the file layer) through its catalogue entry.
        var given: [WaldOption: Sourced<String>] = [:]
        for option in WaldOption.allCases where option != .config {
            given[option] = try await option.entry.field.load(option, from: values, into: &config)
        }
        try crossCheck(config, given: given)
        return config
    }

    /// Rules between options. Blame the value the operator set, not a default it collides with.
    private static func crossCheck(_ config: WaldConfig, given: [WaldOption: Sourced<String>]) throws(WaldConfigError) {
        func invalid(_ option: WaldOption, _ expected: String) -> WaldConfigError {
            let value = given[option] ?? Sourced(value: "", source: .default, text: "")
            return .invalidValue(option: option, source: value.source, value: option.isSecret ? "<redacted>" : value.text,
                                 expected: expected)
        }
        func isSet(_ option: WaldOption) -> Bool { given[option].map { $0.source != .default } ?? false }
        if !config.haEtcd.isEmpty {
            if config.haCluster == nil || config.advertise == nil {
                throw invalid(.haEtcd, "automatic failover also needs ha_cluster (the cluster's name) and advertise "
                                  + "(the HOST:PORT other members reach this wald at)")
            }
            if config.follow != nil {
                throw invalid(.haEtcd, "no follow option with ha_etcd: members follow whoever holds the leader lease")
            }
        }
        let recordLimit = config.maxFrameBytes - frameOverheadBytes
        if config.maxRecordBytes > recordLimit {
            if !isSet(.maxRecordBytes) {
                throw invalid(.maxFrameBytes, "expected at least max_record_bytes + \(frameOverheadBytes) = "
                                  + "\(config.maxRecordBytes + frameOverheadBytes) (max_record_bytes is \(config.maxRecordBytes) by default)")
            }
            throw invalid(.maxRecordBytes, "expected at most max_frame_bytes - \(frameOverheadBytes) = \(recordLimit)")
        }
        if config.listen.isEmpty && config.unixSocket == nil && config.tlsListen.isEmpty {
            throw invalid(.listen, "expected at least one HOST:PORT when no unix socket and no tls_listen is set")
        }
        // TLS options that cannot work together. The files themselves are read when the daemon
        // makes its TLS context (at start and on SIGHUP), which reports a missing or mismatched one.
        if !config.tlsListen.isEmpty && (config.tlsCertFile == nil || config.tlsKeyFile == nil) {
            throw invalid(.tlsListen, "expected tls_cert_file and tls_key_file to be set as well (a TLS listener needs a "
                              + "certificate and its key)")
        }
        if (config.tlsCertFile == nil) != (config.tlsKeyFile == nil) {
            throw invalid(config.tlsCertFile == nil ? .tlsKeyFile : .tlsCertFile, "expected tls_cert_file and tls_key_file together")
        }
        if config.tlsClientAuth != "none" && config.tlsCAFile == nil {
            throw invalid(.tlsClientAuth, "expected tls_ca_file to be set as well (the CAs client certificates must chain to)")
        }
        let followFiles: [WaldOption] = [.followTLSCAFile, .followTLSCertFile, .followTLSKeyFile, .followTLSServerName]
        if !config.followTLS, let option = followFiles.first(where: isSet) {
            throw invalid(option, "expected follow_tls to be on as well (--follow-tls, follow_tls: true)")
        }
        if config.followTLS && config.follow == nil && config.haEtcd.isEmpty {
            throw invalid(.followTLS, "expected follow (or ha_etcd) to be set as well (follow_tls says how to reach the upstream)")
        }
        if (config.followTLSCertFile == nil) != (config.followTLSKeyFile == nil) {
            throw invalid(config.followTLSCertFile == nil ? .followTLSKeyFile : .followTLSCertFile,
                          "expected follow_tls_cert_file and follow_tls_key_file together")
        }
    }
}

/// A value with where it came from and the text it was parsed from (empty for a default).
struct Sourced<Value> {
    var value: Value
    var source: ConfigSource
    var text: String
}

/// The provider stack behind one ConfigReader, with the bookkeeping to say which layer answered.
struct LayeredValues {
    private let reader: ConfigReader
    private let sources: [ConfigSource]
    private let answers = AnsweringLayer()

    init(layers: [(source: ConfigSource, provider: any ConfigProvider)]) {
        reader = ConfigReader(providers: layers.map(\.provider), accessReporter: answers)
        sources = layers.map(\.source)
    }

    /// A single-valued option, parsed, or its default when no layer sets it.
    func value<Value>(
        _ option: WaldOption, default defaultValue: Value, parse: (String) throws(ValueError) -> Value
    ) async throws(WaldConfigError) -> Sourced<Value> {
        guard let text = try await text(option) else { return Sourced(value: defaultValue, source: .default, text: "") }
        do {
            return Sourced(value: try parse(text.value), source: text.source, text: text.value)
        } catch {
            throw .invalidValue(
                option: option, source: text.source, value: shown(text.value, of: option), expected: error.expected)
        }
    }

    /// A list option: repeated flags, a comma-separated variable, or a YAML list or string.
    /// Commas separate items in every source, so `--listen a:1,b:2` also works.
    func list<Element>(
        _ option: WaldOption, default defaultValue: [Element], parse: (String) throws(ValueError) -> Element
    ) async throws(WaldConfigError) -> Sourced<[Element]> {
        guard let items = try await textList(option) else { return Sourced(value: defaultValue, source: .default, text: "") }
        let split = items.value.flatMap { item in
            item.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        }
        var parsed: [Element] = []
        for item in split {
            do {
                parsed.append(try parse(item))
            } catch {
                throw .invalidValue(option: option, source: items.source, value: item, expected: error.expected)
            }
        }
        return Sourced(value: parsed, source: items.source, text: items.value.joined(separator: ","))
    }

    private func text(_ option: WaldOption) async throws(WaldConfigError) -> Sourced<String>? {
        do {
            let text = try await reader.fetchString(forKey: ConfigKey([option.yamlKey]), isSecret: option.isSecret)
            return text.map { Sourced(value: $0, source: source(of: option), text: $0) }
        } catch {
            throw .invalidValue(option: option, source: source(of: option), value: "", expected: "expected a single value")
        }
    }

    private func textList(_ option: WaldOption) async throws(WaldConfigError) -> Sourced<[String]>? {
        let key = ConfigKey([option.yamlKey])
        do {
            let items = try await reader.fetchStringArray(forKey: key)
            return items.map { Sourced(value: $0, source: source(of: option), text: $0.joined(separator: ",")) }
        } catch {
            // The YAML provider won't read a plain string as a list; the file may give one address that way.
            guard case .file = source(of: option) else {
                throw .invalidValue(option: option, source: source(of: option), value: "", expected: "expected a list")
            }
            do {
                let item = try await reader.fetchString(forKey: key)
                return item.map { Sourced(value: [$0], source: source(of: option), text: $0) }
            } catch {
                throw .invalidValue(option: option, source: source(of: option), value: "", expected: "expected a list")
            }
        }
    }

    /// The layer that answered (or failed) the last lookup of `option`.
    private func source(of option: WaldOption) -> ConfigSource {
        answers.layer(for: option.configKey).map { sources[$0] } ?? .default
    }

    private func shown(_ text: String, of option: WaldOption) -> String {
        option.isSecret ? "<redacted>" : text
    }
}

/// Records, per key, the index of the provider that supplied the value or threw, as the
/// ConfigReader reports each access: the reader itself only returns the value.
private final class AnsweringLayer: AccessReporter {
    private let answered = WALMutex<[AbsoluteConfigKey: Int]>([:])

    func report(_ event: AccessEvent) {
        let index = event.providerResults.firstIndex { result in
            switch result.result {
            case .success(let lookup): lookup.value != nil
            case .failure: true
            }
        }
        answered.withLock { $0[event.metadata.key] = index }
    }

    func layer(for key: AbsoluteConfigKey) -> Int? {
        answered.withLock { $0[key] ?? nil }
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
