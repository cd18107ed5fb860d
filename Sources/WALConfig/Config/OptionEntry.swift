// The shape of one entry of the option catalogue (`WaldOption.entry`): where the value lives in
// WaldConfig, how its text is parsed and written back, and the words every generated surface uses
// (`wald --help`, docs/config-table.md, config/wald.yaml, the start-up log line, the SIGHUP diff).
import Logging
import WALSystem

/// Everything wald knows about one option besides its name. Built only by `WaldOption.entry`.
struct OptionEntry {
    /// Where the option is grouped in the sample file and the table.
    var section: OptionSection
    /// The value's form in help and the table, e.g. `SIZE`, `HOST:PORT`; empty for a switch.
    var valueName: String
    /// What the option does, its bounds and its interactions: one paragraph, Markdown backticks
    /// allowed. The table, the sample file's comment and `wald --help` all print it.
    var meaning: String
    /// A value for the sample file when the default is none (the line is written commented out);
    /// nil writes the default.
    var example: String?
    /// The default's words when the option has no value by default. `none` unless said.
    var noneText: String = "none"
    /// A running daemon applies a new value on SIGHUP (else it needs a restart).
    var isReloadable: Bool
    /// Never logged; redacted in errors; marked secret to swift-configuration.
    var isSecret: Bool = false
    /// The typed value: its stored property, parser and printers.
    var field: any OptionField
}

/// The sample file's and the table's groups, in the order they are printed.
enum OptionSection: String, CaseIterable {
    case configuration = "Configuration file"
    case network = "Network"
    case tls = "TLS"
    case storage = "Storage"
    case replication = "Replication"
    case failover = "Automatic failover"
    case logging = "Logging"
    case scrub = "Scrub"
}

/// How an option is spelled on the command line and in the file.
enum OptionShape {
    /// `--flag VALUE`, `WALD_FLAG=VALUE`, `key: value`.
    case single
    /// Repeatable flag, comma-separated variable, YAML list or string.
    case list
    /// `--flag` alone; the variable and the file take true or false.
    case toggle
}

/// One option's value in `WaldConfig`, type-erased so the catalogue can list them side by side.
protocol OptionField {
    var shape: OptionShape { get }
    /// Reads the option through `values` (flags > environment > file), parses it into `config`,
    /// and returns the text and where it came from (`.default` when no layer set it).
    func load(_ option: WaldOption, from values: LayeredValues, into config: inout WaldConfig) async throws(WaldConfigError)
        -> Sourced<String>
    func same(_ a: WaldConfig, _ b: WaldConfig) -> Bool
    func copy(from source: WaldConfig, into target: inout WaldConfig)
    /// The value as the start-up log line shows it.
    func logged(_ config: WaldConfig) -> Logger.MetadataValue
    /// The value as the sample file and the table write it; nil when there is none.
    func written(_ config: WaldConfig) -> [String]?
}

/// A field stored at `path`: loading, comparing and copying go through it.
protocol StoredField: OptionField {
    associatedtype Stored: Equatable
    var path: WritableKeyPath<WaldConfig, Stored> { get }
    /// The value from the layers, or `current` (the default) when none sets it.
    func read(_ option: WaldOption, from values: LayeredValues, current: Stored) async throws(WaldConfigError) -> Sourced<Stored>
}

extension StoredField {
    func load(_ option: WaldOption, from values: LayeredValues, into config: inout WaldConfig) async throws(WaldConfigError)
        -> Sourced<String> {
        let value = try await read(option, from: values, current: config[keyPath: path])
        config[keyPath: path] = value.value
        return Sourced(value: value.text, source: value.source, text: value.text)
    }

    func same(_ a: WaldConfig, _ b: WaldConfig) -> Bool { a[keyPath: path] == b[keyPath: path] }
    func copy(from source: WaldConfig, into target: inout WaldConfig) { target[keyPath: path] = source[keyPath: path] }
}

/// An option that always has a value (its default when no layer sets one).
struct ValueField<Value: Equatable>: StoredField {
    let path: WritableKeyPath<WaldConfig, Value>
    let parse: (String) throws(ValueError) -> Value
    let write: (Value) -> String
    var log: ((Value) -> Logger.MetadataValue)? = nil
    var shape: OptionShape { .single }

    func read(_ option: WaldOption, from values: LayeredValues, current: Stored) async throws(WaldConfigError) -> Sourced<Stored> {
        try await values.value(option, default: current, parse: parse)
    }
    func logged(_ config: WaldConfig) -> Logger.MetadataValue {
        log?(config[keyPath: path]) ?? .string(write(config[keyPath: path]))
    }
    func written(_ config: WaldConfig) -> [String]? {
        let text = write(config[keyPath: path])
        return text.isEmpty ? nil : [text]
    }
}

/// An option with no value by default.
struct OptionalField<Value: Equatable>: StoredField {
    let path: WritableKeyPath<WaldConfig, Value?>
    let parse: (String) throws(ValueError) -> Value
    let write: (Value) -> String
    var shape: OptionShape { .single }

    func read(_ option: WaldOption, from values: LayeredValues, current: Stored) async throws(WaldConfigError) -> Sourced<Stored> {
        try await values.value(option, default: nil, parse: { (text) throws(ValueError) -> Value? in try parse(text) })
    }
    func logged(_ config: WaldConfig) -> Logger.MetadataValue { .string(config[keyPath: path].map(write) ?? "none") }
    func written(_ config: WaldConfig) -> [String]? { config[keyPath: path].map { [write($0)] } }
}

/// An option holding a list: repeated flags, a comma-separated variable, a YAML list.
struct ListField<Element: Equatable>: StoredField {
    let path: WritableKeyPath<WaldConfig, [Element]>
    let parse: (String) throws(ValueError) -> Element
    let write: (Element) -> String
    var shape: OptionShape { .list }

    func read(_ option: WaldOption, from values: LayeredValues, current: Stored) async throws(WaldConfigError) -> Sourced<Stored> {
        try await values.list(option, default: current, parse: parse)
    }
    func logged(_ config: WaldConfig) -> Logger.MetadataValue { .array(config[keyPath: path].map { .string(write($0)) }) }
    func written(_ config: WaldConfig) -> [String]? {
        let items = config[keyPath: path]
        return items.isEmpty ? nil : items.map(write)
    }
}

/// An on/off option: `--flag` alone on the command line, true or false elsewhere.
struct ToggleField: StoredField {
    let path: WritableKeyPath<WaldConfig, Bool>
    var shape: OptionShape { .toggle }

    func read(_ option: WaldOption, from values: LayeredValues, current: Stored) async throws(WaldConfigError) -> Sourced<Stored> {
        try await values.value(option, default: current, parse: BooleanText.parse)
    }
    func logged(_ config: WaldConfig) -> Logger.MetadataValue { .string("\(config[keyPath: path])") }
    func written(_ config: WaldConfig) -> [String]? { ["\(config[keyPath: path])"] }
}

// The field kinds the catalogue uses, each with the parser and printers of its value form.
extension OptionField where Self == ValueField<Int> {
    /// A byte size (`64MiB`); logged as a byte count, written in the largest exact binary unit.
    static func size(_ path: WritableKeyPath<WaldConfig, Int>, parse: @escaping (String) throws(ValueError) -> Int = ByteSize.parse)
        -> ValueField<Int> {
        ValueField(path: path, parse: parse, write: ByteSize.format, log: { .string("\($0)") })
    }

    /// A count: a plain decimal integer of at least `minimum`; `meaning` says what 0 means.
    static func count(_ path: WritableKeyPath<WaldConfig, Int>, minimum: Int, meaning: String = "") -> ValueField<Int> {
        ValueField(path: path, parse: { (text) throws(ValueError) in try Count.parse(text, minimum: minimum, meaning: meaning) },
                   write: { "\($0)" })
    }
}

extension OptionField where Self == ValueField<Duration> {
    /// A duration (`10ms`, `5m`), at most `DurationText.maximum`.
    static func duration(
        _ path: WritableKeyPath<WaldConfig, Duration>, parse: @escaping (String) throws(ValueError) -> Duration = DurationText.parse
    ) -> ValueField<Duration> {
        ValueField(path: path, parse: parse, write: DurationText.format)
    }
}

extension OptionField where Self == ValueField<String> {
    /// Text checked by `parse`.
    static func text(_ path: WritableKeyPath<WaldConfig, String>, parse: @escaping (String) throws(ValueError) -> String)
        -> ValueField<String> {
        ValueField(path: path, parse: parse, write: { $0 })
    }
}

extension OptionField where Self == OptionalField<String> {
    /// Text without a default, checked by `parse`.
    static func optionalText(_ path: WritableKeyPath<WaldConfig, String?>, parse: @escaping (String) throws(ValueError) -> String)
        -> OptionalField<String> {
        OptionalField(path: path, parse: parse, write: { $0 })
    }
}

extension OptionField where Self == OptionalField<Endpoint> {
    /// One TCP address without a default: `bindable` allows port 0 (any free port).
    static func address(_ path: WritableKeyPath<WaldConfig, Endpoint?>, bindable: Bool) -> OptionalField<Endpoint> {
        OptionalField(path: path, parse: { (text) throws(ValueError) in
            bindable ? try AddressValue.parseBindable(text) : try AddressValue.parseRemote(text)
        }, write: { $0.description })
    }
}

extension OptionField where Self == ListField<Endpoint> {
    /// TCP addresses wald binds.
    static func addresses(_ path: WritableKeyPath<WaldConfig, [Endpoint]>) -> ListField<Endpoint> {
        ListField(path: path, parse: AddressValue.parseBindable, write: { $0.description })
    }
}

extension OptionField where Self == ToggleField {
    static func toggle(_ path: WritableKeyPath<WaldConfig, Bool>) -> ToggleField { ToggleField(path: path) }
}
