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
    /// A byte size where 0 means unlimited, saying so when the text does not parse.
    fileprivate static func byteSizeOrUnlimited(_ text: String) throws(ValueError) -> Int {
        do throws(ValueError) {
            return try ByteSize.parse(text)
        } catch {
            throw ValueError("\(error.expected) (0 = unlimited)")
        }
    }

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

        let listen = try await values.list(.listen, default: config.listen, parse: AddressValue.parseBindable)
        config.listen = listen.value
        config.unixSocket = try await values.optional(.unix, parse: unixSocketPath)
        config.dataDirectory = try await values.value(.dataDir, default: config.dataDirectory, parse: nonEmpty).value
        config.segmentPrefix = try await values.value(.segmentPrefix, default: config.segmentPrefix, parse: segmentPrefix).value
        config.maxSegmentBytes = try await values.value(.maxSegmentBytes, default: config.maxSegmentBytes) {
            (text) throws(ValueError) in
            let bytes = try ByteSize.parse(text)
            guard bytes >= minimumSegmentBytes else {
                throw ValueError("expected a byte size of at least \(minimumSegmentBytes)")
            }
            return bytes
        }.value
        config.maxSegments = try await values.value(.maxSegments, default: config.maxSegments) {
            (text) throws(ValueError) in try Count.parse(text, minimum: 0, meaning: " (0 = unlimited)")
        }.value
        config.retentionBytes = try await values.value(
            .retentionBytes, default: config.retentionBytes, parse: byteSizeOrUnlimited
        ).value
        let maxRecordBytes = try await values.value(.maxRecordBytes, default: config.maxRecordBytes, parse: ByteSize.parse)
        config.maxRecordBytes = maxRecordBytes.value
        config.flushInterval = try await values.value(.flushInterval, default: config.flushInterval, parse: DurationText.parse).value
        config.maxBufferBytes = try await values.value(.maxBufferBytes, default: config.maxBufferBytes, parse: ByteSize.parse).value
        config.maxConnections = try await values.value(.maxConnections, default: config.maxConnections) {
            (text) throws(ValueError) in try Count.parse(text, minimum: 1)
        }.value
        let maxFrameBytes = try await values.value(.maxFrameBytes, default: config.maxFrameBytes) {
            (text) throws(ValueError) in
            let bytes = try ByteSize.parse(text)
            guard (frameOverheadBytes...frameBytesLimit).contains(bytes) else {
                throw ValueError("expected a byte size from \(frameOverheadBytes) to \(frameBytesLimit) (16MiB - 1)")
            }
            return bytes
        }
        config.maxFrameBytes = maxFrameBytes.value
        config.authToken = try await values.optional(.authToken, parse: authToken)
        config.metricsToken = try await values.optional(.metricsToken, parse: authToken)
        config.logLevel = try await values.value(.logLevel, default: config.logLevel, parse: LogLevelText.parse).value
        config.slowSyncThreshold = try await values.value(
            .slowSyncThreshold, default: config.slowSyncThreshold, parse: DurationText.parse
        ).value
        config.metricsListen = try await values.optional(.metricsListen, parse: AddressValue.parseBindable)
        config.follow = try await values.optional(.follow, parse: AddressValue.parseRemote)
        config.minSyncReplicas = try await values.value(.minSyncReplicas, default: config.minSyncReplicas) {
            (text) throws(ValueError) in try Count.parse(text, minimum: 0, meaning: " (0 = don't wait for followers)")
        }.value
        config.syncReplicaTimeout = try await values.value(.syncReplicaTimeout, default: config.syncReplicaTimeout) {
            (text) throws(ValueError) in
            let timeout = try DurationText.parse(text)
            guard timeout > .zero else { throw ValueError("expected a duration above 0 like 500ms, 5s or 1m") }
            return timeout
        }.value
        config.maxFollowerHoldBytes = try await values.value(
            .maxFollowerHoldBytes, default: config.maxFollowerHoldBytes, parse: byteSizeOrUnlimited
        ).value
        config.respStream = try await values.value(.respStream, default: config.respStream) { (text) throws(ValueError) in
            guard (1...128).contains(text.utf8.count), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw ValueError("expected a stream key of 1 to 128 printable ASCII characters without spaces")
            }
            return text
        }.value
        config.respDurability = try await values.value(.respDurability, default: config.respDurability) { (text) throws(ValueError) in
            guard text == "durable" || text == "buffered" else { throw ValueError("expected durable or buffered") }
            return text
        }.value

        config.scrubInterval = try await values.value(.scrubInterval, default: config.scrubInterval, parse: DurationText.parse).value
        config.scrubBytesPerSecond = try await values.value(.scrubBytesPerSecond, default: config.scrubBytesPerSecond) {
            (text) throws(ValueError) in
            let bytes = try ByteSize.parse(text)
            guard bytes >= 64 << 10 else { throw ValueError("expected a byte size of at least 64KiB (read per second)") }
            return bytes
        }.value

        let haEtcd = try await values.value(.haEtcd, default: config.haEtcd, parse: etcdEndpoints)
        config.haEtcd = haEtcd.value
        let haCluster = try await values.optional(.haCluster, parse: clusterName)
        config.haCluster = haCluster
        config.advertise = try await values.optional(.advertise, parse: AddressValue.parseRemote)
        config.haLeaseTTL = try await values.value(.haLeaseTTL, default: config.haLeaseTTL) { (text) throws(ValueError) in
            let ttl = try DurationText.parse(text)
            guard ttl >= .seconds(2), ttl <= .seconds(3600), ttl.components.attoseconds == 0 else {
                throw ValueError("expected whole seconds from 2s to 1h: etcd counts lease TTLs in seconds and raises any "
                                 + "below its minimum (1.5 x its election timeout, 2 s with default settings)")
            }
            return ttl
        }.value
        let tlsListen = try await values.list(.tlsListen, default: config.tlsListen, parse: AddressValue.parseBindable)
        config.tlsListen = tlsListen.value
        let tlsCert = try await values.value(.tlsCertFile, default: "", parse: nonEmpty)
        config.tlsCertFile = tlsCert.source == .default ? nil : tlsCert.value
        let tlsKey = try await values.value(.tlsKeyFile, default: "", parse: nonEmpty)
        config.tlsKeyFile = tlsKey.source == .default ? nil : tlsKey.value
        config.tlsCAFile = try await values.optional(.tlsCAFile, parse: nonEmpty)
        let clientAuth = try await values.value(.tlsClientAuth, default: config.tlsClientAuth) { (text) throws(ValueError) in
            guard ["none", "request", "require"].contains(text) else { throw ValueError("expected none, request or require") }
            return text
        }
        config.tlsClientAuth = clientAuth.value
        config.idleTimeout = try await values.value(.idleTimeout, default: config.idleTimeout, parse: DurationText.parse).value
        config.maxConnectionsPerAddress = try await values.value(.maxConnectionsPerAddress, default: config.maxConnectionsPerAddress) {
            (text) throws(ValueError) in try Count.parse(text, minimum: 1)
        }.value
        let followTLS = try await values.value(.followTLS, default: config.followTLS) { (text) throws(ValueError) in
            switch text.lowercased() {
            case "true", "yes", "on", "1": return true
            case "false", "no", "off", "0": return false
            default: throw ValueError("expected true or false")
            }
        }
        config.followTLS = followTLS.value
        var followTLSSet: [Sourced<String>] = []
        for option in [WaldOption.followTLSCAFile, .followTLSCertFile, .followTLSKeyFile, .followTLSServerName] {
            let value = try await values.value(option, default: "", parse: nonEmpty)
            let set = value.source == .default ? nil : value.value
            switch option {
            case .followTLSCAFile: config.followTLSCAFile = set
            case .followTLSCertFile: config.followTLSCertFile = set
            case .followTLSKeyFile: config.followTLSKeyFile = set
            default: config.followTLSServerName = set
            }
            followTLSSet.append(value)
        }

        // Cross-checks. Blame the value the operator set, not a default it collides with.
        if !config.haEtcd.isEmpty {
            if config.haCluster == nil || config.advertise == nil {
                throw .invalidValue(option: .haEtcd, source: haEtcd.source, value: haEtcd.text,
                                    expected: "automatic failover also needs ha_cluster (the cluster's name) and advertise "
                                        + "(the HOST:PORT other members reach this wald at)")
            }
            if config.follow != nil {
                throw .invalidValue(option: .haEtcd, source: haEtcd.source, value: haEtcd.text,
                                    expected: "no follow option with ha_etcd: members follow whoever holds the leader lease")
            }
        }
        let recordLimit = config.maxFrameBytes - frameOverheadBytes
        if config.maxRecordBytes > recordLimit {
            if maxRecordBytes.source == .default {
                throw .invalidValue(
                    option: .maxFrameBytes, source: maxFrameBytes.source, value: maxFrameBytes.text,
                    expected: "expected at least max_record_bytes + \(frameOverheadBytes) = "
                        + "\(config.maxRecordBytes + frameOverheadBytes) (max_record_bytes is \(config.maxRecordBytes) by default)")
            }
            throw .invalidValue(
                option: .maxRecordBytes, source: maxRecordBytes.source, value: maxRecordBytes.text,
                expected: "expected at most max_frame_bytes - \(frameOverheadBytes) = \(recordLimit)")
        }
        if config.listen.isEmpty && config.unixSocket == nil && config.tlsListen.isEmpty {
            throw .invalidValue(
                option: .listen, source: listen.source, value: listen.text,
                expected: "expected at least one HOST:PORT when no unix socket and no tls_listen is set")
        }
        try checkTLS(config, tlsListen: tlsListen, clientAuth: clientAuth, files: (tlsCert, tlsKey),
                     followTLS: followTLS, followFiles: followTLSSet)
        return config
    }

    /// `http://HOST:PORT[,http://HOST:PORT…]`: etcd's client URLs (plain HTTP; the JSON gateway).
    private static func etcdEndpoints(_ text: String) throws(ValueError) -> [String] {
        let urls = text.split(separator: ",", omittingEmptySubsequences: false).map { String($0.filter { $0 != " " }) }
        for url in urls {
            guard url.hasPrefix("http://") else {
                throw ValueError("expected etcd client URLs like http://127.0.0.1:2379, comma-separated (\"\(url)\" is not http://HOST:PORT)")
            }
            _ = try AddressValue.parseRemote(String(url.dropFirst("http://".count)))
        }
        return urls
    }

    /// 1–64 characters of A–Z, a–z, 0–9, '.', '_', '-': it is part of etcd keys.
    private static func clusterName(_ text: String) throws(ValueError) -> String {
        guard (1...64).contains(text.utf8.count),
              text.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                  || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }) else {
            throw ValueError("expected a cluster name of 1 to 64 letters, digits, '.', '_' or '-'")
        }
        return text
    }

    /// TLS options that cannot work together. The files themselves are read when the daemon
    /// makes its TLS context (at start and on SIGHUP), which reports a missing or mismatched one.
    private static func checkTLS(
        _ config: WaldConfig, tlsListen: Sourced<[Endpoint]>, clientAuth: Sourced<String>,
        files: (cert: Sourced<String>, key: Sourced<String>), followTLS: Sourced<Bool>, followFiles: [Sourced<String>]
    ) throws(WaldConfigError) {
        if !config.tlsListen.isEmpty && (config.tlsCertFile == nil || config.tlsKeyFile == nil) {
            throw .invalidValue(option: .tlsListen, source: tlsListen.source, value: tlsListen.text,
                                expected: "expected tls_cert_file and tls_key_file to be set as well (a TLS listener needs a certificate and its key)")
        }
        if (config.tlsCertFile == nil) != (config.tlsKeyFile == nil) {
            let (option, given): (WaldOption, Sourced<String>) = config.tlsCertFile == nil ? (.tlsKeyFile, files.key) : (.tlsCertFile, files.cert)
            throw .invalidValue(option: option, source: given.source, value: given.text,
                                expected: "expected tls_cert_file and tls_key_file together")
        }
        if config.tlsClientAuth != "none" && config.tlsCAFile == nil {
            throw .invalidValue(option: .tlsClientAuth, source: clientAuth.source, value: clientAuth.text,
                                expected: "expected tls_ca_file to be set as well (the CAs client certificates must chain to)")
        }
        let options: [WaldOption] = [.followTLSCAFile, .followTLSCertFile, .followTLSKeyFile, .followTLSServerName]
        if !config.followTLS, let index = followFiles.firstIndex(where: { $0.source != .default }) {
            throw .invalidValue(option: options[index], source: followFiles[index].source, value: followFiles[index].text,
                                expected: "expected follow_tls to be on as well (--follow-tls, follow_tls: true)")
        }
        if config.followTLS && config.follow == nil && config.haEtcd.isEmpty {
            throw .invalidValue(option: .followTLS, source: followTLS.source, value: followTLS.text,
                                expected: "expected follow (or ha_etcd) to be set as well (follow_tls says how to reach the upstream)")
        }
        if (config.followTLSCertFile == nil) != (config.followTLSKeyFile == nil) {
            let index = config.followTLSCertFile == nil ? 2 : 1
            throw .invalidValue(option: options[index], source: followFiles[index].source, value: followFiles[index].text,
                                expected: "expected follow_tls_cert_file and follow_tls_key_file together")
        }
    }

    private static func nonEmpty(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty else { throw ValueError("expected a non-empty path") }
        return text
    }

    private static func segmentPrefix(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, !text.contains("/") else { throw ValueError("expected a non-empty file name prefix without '/'") }
        return text
    }

    /// sun_path holds 108 bytes including the terminating NUL.
    private static func unixSocketPath(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.utf8.count <= 107, !text.utf8.contains(0) else {
            throw ValueError("expected a socket path of 1 to 107 bytes")
        }
        return text
    }

    /// The token is sent on a text protocol line, so it can't hold spaces or control characters.
    private static func authToken(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw ValueError("expected a non-empty token without spaces or control characters")
        }
        return text
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

    /// An option without a default.
    func optional<Value>(
        _ option: WaldOption, parse: (String) throws(ValueError) -> Value
    ) async throws(WaldConfigError) -> Value? {
        guard let text = try await text(option) else { return nil }
        do {
            return try parse(text.value)
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
