// Why the configuration could not be loaded, worded for the operator who has to fix it.

/// Where an option's value came from. Precedence is flag > environment > file > default.
public enum ConfigSource: Sendable, Hashable, CustomStringConvertible {
    case flag
    case environment
    /// The YAML file at this path.
    case file(String)
    case `default`

    public var description: String {
        switch self {
        case .flag: "flag"
        case .environment: "environment"
        case .file(let path): "config file \(path)"
        case .default: "default"
        }
    }
}

/// A configuration that can't be used. `description` is one line that names the option as it was
/// spelled in its source (`--flush-interval`, `WALD_FLUSH_INTERVAL`, `flush_interval` in the file),
/// the offending value and the accepted form.
public enum WaldConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A value that doesn't parse or is out of range. `value` is redacted for `auth_token`.
    case invalidValue(option: WaldOption, source: ConfigSource, value: String, expected: String)
    /// Top-level keys of the config file that aren't options (typos are not ignored).
    case unknownKeys([String], file: String)
    /// The config file can't be read.
    case unreadableFile(path: String, reason: String)
    /// The config file isn't the YAML wald expects: a mapping of option keys to values or lists.
    case malformedFile(path: String, reason: String)
    /// A command-line flag that names no option; `suggestion` is the nearest flag, if any is close.
    case unknownFlag(String, suggestion: String?)
    /// A flag that takes a value came last, or right before another flag.
    case missingFlagValue(WaldOption)
    /// An argument that is not a flag: wald takes none.
    case unexpectedArgument(String)

    /// The error is in how the command line is written (a usage error: exit 64, EX_USAGE), not in a value.
    public var isUsageError: Bool {
        switch self {
        case .unknownFlag, .missingFlagValue, .unexpectedArgument: true
        default: false
        }
    }

    /// The option at fault, if the error is about one option.
    public var option: WaldOption? {
        if case .invalidValue(let option, _, _, _) = self { return option }
        return nil
    }

    /// Where the bad value came from, if the error is about one value.
    public var source: ConfigSource? {
        switch self {
        case .invalidValue(_, let source, _, _): source
        case .unknownKeys(_, let file): .file(file)
        case .unreadableFile, .malformedFile: nil
        case .unknownFlag, .missingFlagValue, .unexpectedArgument: .flag
        }
    }

    public var description: String {
        switch self {
        case .invalidValue(let option, let source, let value, let expected):
            switch source {
            case .flag:
                return "invalid \(option.flag) \"\(value)\": \(expected)"
            case .environment:
                return "invalid \(option.environmentVariable) \"\(value)\" (environment): \(expected)"
            case .file(let path):
                return "invalid \(option.yamlKey) \"\(value)\" in config file \(path): \(expected)"
            case .default:
                return "invalid \(option.yamlKey) \"\(value)\" (the default): \(expected)"
            }
        case .unknownKeys(let keys, let file):
            let named = keys.map { key in
                let hint = WaldConfigError.suggestion(for: key).map { " (did you mean \"\($0)\"?)" } ?? ""
                return "\"\(key)\"\(hint)"
            }
            let note = keys.contains(WaldOption.config.yamlKey)
                ? "; the config file can only be chosen with --config or WALD_CONFIG" : ""
            return "unknown key\(keys.count == 1 ? "" : "s") \(named.joined(separator: ", ")) in config file \(file)\(note); "
                + "known keys: \(WaldOption.fileKeys.joined(separator: ", "))"
        case .unreadableFile(let path, let reason):
            return "cannot read config file \(path): \(reason)"
        case .malformedFile(let path, let reason):
            return "config file \(path) is not valid: \(reason)"
        case .unknownFlag(let flag, let suggestion):
            return "unknown option \(flag)" + (suggestion.map { " (did you mean \($0)?)" } ?? "") + "; wald --help lists them"
        case .missingFlagValue(let option):
            return "\(option.flag) needs a value (\(option.flag) \(option.entry.valueName) or \(option.flag)=\(option.entry.valueName))"
        case .unexpectedArgument(let argument):
            return "unexpected argument \"\(argument)\": wald takes only options (--name VALUE); wald --help lists them"
        }
    }

    /// The known key closest to a misspelt one, if it is within two edits.
    static func suggestion(for key: String) -> String? {
        nearest(to: key, among: WaldOption.fileKeys)
    }
}

/// The word of `candidates` closest to `word`, if it is within two edits (Levenshtein).
func nearest(to word: String, among candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(Array(word), Array($0))) }
    guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }), best.1 <= 2 else { return nil }
    return best.0
}

private func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    var previous = Array(0...b.count)
    for (i, ca) in a.enumerated() {
        var current = [i + 1]
        for (j, cb) in b.enumerated() {
            current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}
