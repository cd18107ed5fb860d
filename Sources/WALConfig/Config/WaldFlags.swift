// The daemon's command line, read against the option catalogue: every option's flag is derived from
// its YAML key, so no option is declared here. Values stay text so that a bad flag gets the same
// error, naming the flag, as a bad environment variable or file entry; defaults live in WaldConfig,
// so a flag that isn't given never hides the environment or the file.
import Configuration

/// The flags given to wald, by option. `WaldFlags.parse(CommandLine.arguments.dropFirst())`, then
/// `WaldConfig.load(flags:environment:)`. In tests: `try WaldFlags.parse(["--listen", "[::1]:7070"])`.
public struct WaldFlags: Sendable, Equatable {
    /// The values given, in order; a list option keeps every one, any other option its last
    /// (a later flag overrides an earlier one, as systemd drop-ins appending flags expect).
    public private(set) var values: [WaldOption: [String]] = [:]

    public init() {}

    /// Reads `--flag VALUE`, `--flag=VALUE` and, for a switch (`--follow-tls`), the flag alone.
    ///
    /// - Throws: `WaldConfigError.unknownFlag` (with the nearest flag as a suggestion),
    ///   `.missingFlagValue` (a value-taking flag last or followed by another flag), or
    ///   `.unexpectedArgument` (wald takes no positional arguments).
    public static func parse<Arguments: Collection<String>>(_ arguments: Arguments) throws(WaldConfigError) -> WaldFlags {
        var flags = WaldFlags()
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--"), argument.count > 2 else { throw .unexpectedArgument(argument) }
            let name: Substring
            var value: String?
            if let equals = argument.firstIndex(of: "=") {
                name = argument[..<equals]
                value = String(argument[argument.index(after: equals)...])
            } else {
                name = argument[...]
            }
            guard let option = byFlag[String(name)] else {
                throw .unknownFlag(String(name), suggestion: nearest(to: String(name), among: Array(byFlag.keys)))
            }
            if value == nil {
                if option.entry.field.shape == .toggle {
                    value = "true"
                } else if let next = rest.first, !next.hasPrefix("--") {
                    value = rest.popFirst()
                } else {
                    throw .missingFlagValue(option)
                }
            }
            if option.isList {
                flags.values[option, default: []].append(value!)
            } else {
                flags.values[option] = [value!]
            }
        }
        return flags
    }

    /// `--config`, which names the file layer itself.
    var config: String? { values[.config]?.last }

    /// The flags that were given, keyed by YAML key, for the highest-priority provider.
    var configValues: [AbsoluteConfigKey: ConfigValue] {
        var provided: [AbsoluteConfigKey: ConfigValue] = [:]
        for (option, given) in values {
            provided[option.configKey] =
                option.isList
                ? ConfigValue(.stringArray(given), isSecret: option.isSecret)
                : ConfigValue(.string(given.last ?? ""), isSecret: option.isSecret)
        }
        return provided
    }

    private static let byFlag = Dictionary(uniqueKeysWithValues: WaldOption.allCases.map { ($0.flag, $0) })

    /// `wald --help`'s option list: every option's flag, meaning, default, variable and file key,
    /// by section, wrapped to `width` columns (ArgumentParser rewraps what is wider than its 80).
    public static func help(width: Int = 76) -> String {
        let defaults = WaldConfig()
        var lines: [String] = []
        for section in OptionSection.allCases {
            let options = WaldOption.allCases.filter { $0.entry.section == section }
            guard !options.isEmpty else { continue }
            lines.append("")
            lines.append(section.rawValue.uppercased() + ":")
            for option in options {
                let entry = option.entry
                lines.append("  " + option.flagUsage + (option.isList ? " (repeatable)" : ""))
                var text = entry.meaning.capitalizingFirst().replacingBackticks() + ". Default "
                    + (entry.field.written(defaults)?.joined(separator: ",") ?? entry.noneText.replacingBackticks()) + "."
                if entry.isReloadable { text += " Reloadable (SIGHUP)." }
                switch entry.field.shape {
                case .single: text += " Env \(option.environmentVariable)"
                case .list: text += " Env \(option.environmentVariable) (comma-separated)"
                case .toggle: text += " Env \(option.environmentVariable)=true"
                }
                text += option.isFileKey ? ", file key \(option.yamlKey)." : "."
                lines += wrap(text, width: width, indent: "        ")
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension WaldOption {
    /// The option's key in every provider: one component, the YAML key.
    var configKey: AbsoluteConfigKey { AbsoluteConfigKey([yamlKey]) }
}

extension String {
    fileprivate func replacingBackticks() -> String { String(filter { $0 != "`" }) }
}

/// `text` broken at spaces into lines of at most `width` columns (a longer word gets its own line),
/// each starting with `indent`.
func wrap(_ text: String, width: Int, indent: String) -> [String] {
    var lines: [String] = []
    var line = indent
    for word in text.split(separator: " ") {
        if line.count > indent.count && line.count + 1 + word.count > width {
            lines.append(line)
            line = indent
        }
        line += (line.count > indent.count ? " " : "") + word
    }
    if line.count > indent.count { lines.append(line) }
    return lines
}
