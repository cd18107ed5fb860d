// The two documents written from the option catalogue: docs/config-table.md (every option's three
// spellings, default and meaning) and config/wald.yaml (the sample file, every key with its default
// or a commented example). `make docs` writes both; OptionDocsTests fails when either differs.

/// Generates the option documents from `WaldOption.entry` and `WaldConfig`'s defaults.
enum OptionDocs {
    /// docs/config-table.md.
    static func table() -> String {
        let defaults = WaldConfig()
        var out = """
            # wald's options

            Every option, written from the option catalogue (`Sources/WALConfig/Config/WaldOption.swift`) by
            `make docs`; a test fails when this file and the catalogue disagree, so edit the catalogue, not this
            file. README.md's Configuration section says how options are read (flag > `WALD_*` variable > file >
            default) and how values are written. Options marked *reload* can change on SIGHUP; the others need a
            restart. `wald --help` prints the same list.

            """
        for section in OptionSection.allCases {
            let options = WaldOption.allCases.filter { $0.entry.section == section }
            guard !options.isEmpty else { continue }
            out += "\n## \(section.rawValue)\n\n"
            out += "| flag | env | yaml | default | meaning |\n| --- | --- | --- | --- | --- |\n"
            for option in options {
                let entry = option.entry
                let flag = "`\(option.flagUsage)`" + (option.isList ? " (repeatable)" : "")
                let variableForm: String = switch entry.field.shape {
                case .single: ""
                case .list: " (comma-separated)"
                case .toggle: " (`true`/`false`)"
                }
                let variable = "`\(option.environmentVariable)`" + variableForm
                let key = "`\(option.yamlKey)`" + (option.isList ? " (list or string)" : "")
                let value = entry.field.written(defaults).map { $0.map { "`\($0)`" }.joined(separator: ", ") } ?? entry.noneText
                let meaning = entry.meaning + (entry.isReloadable ? "; *reload*" : "")
                let cells = [flag, variable, option.isFileKey ? key : "—", value, meaning]
                out += "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |\n"
            }
        }
        return out
    }

    /// config/wald.yaml.
    static func sample() -> String {
        let defaults = WaldConfig()
        var out = sampleHeader
        for section in OptionSection.allCases {
            let options = WaldOption.allCases.filter { $0.entry.section == section && $0.isFileKey }
            if !options.isEmpty {
                out += "\n# --- \(section.rawValue) ---\n"
                for option in options {
                    let entry = option.entry
                    let written = entry.field.written(defaults)
                    // A no-break space keeps "Default:" on the line of its value.
                    var comment = entry.meaning.capitalizingFirst() + ". Default:\u{A0}"
                        + (written?.joined(separator: ", ") ?? entry.noneText) + "."
                    if entry.isReloadable { comment += " (reload)" }
                    let lines = wrap(comment, width: 100, indent: "# ").map { $0.replacingOccurrences(of: "\u{A0}", with: " ") }
                    out += "\n" + lines.joined(separator: "\n") + "\n"
                    if let example = entry.example {
                        out += entry.field.shape == .list
                            ? "# \(option.yamlKey):\n#   - \(example)\n" : "# \(option.yamlKey): \(example)\n"
                    } else if let written {
                        out += entry.field.shape == .list
                            ? "\(option.yamlKey):\n" + written.map { "  - \($0)\n" }.joined() : "\(option.yamlKey): \(written[0])\n"
                    }
                }
            }
            if section == .tls { out += accessListsSample }
        }
        return out
    }

    private static let sampleHeader = """
        # wald configuration file. Load it with `wald --config FILE` or WALD_CONFIG=FILE.
        #
        # Precedence: command-line flags > WALD_* environment variables > this file > built-in defaults.
        # Every option is listed below. Those with a default are set to it; the others are commented out.
        # Each key has a flag (--max-segment-bytes) and a variable (WALD_MAX_SEGMENT_BYTES) of the same name.
        # Unknown keys are an error, so a typo can't be silently ignored.
        #
        # Units: byte sizes are a plain integer or one with KiB, MiB, GiB (K, M, G mean the same binary units).
        #        Durations are 0 or an integer with ns, us, ms, s, m or h: 500us, 10ms, 1s, 2m; at most 8760h.
        # Keys marked "reload" take effect on SIGHUP; the others need a restart.

        """

    /// The file-only keys (`WaldConfig.accessKeys`): structured, so outside the catalogue.
    private static let accessListsSample = """

        # --- Users and roles (file only: no flag or variable) ---

        # Named users, each with a role and its token's salted hash (`walctl hash-token < token.txt`; the token
        # itself never goes here). AUTH <token> finds the user. Roles nest: read (REPLAY, FOLLOW, INFO, PING,
        # SYNC), append (+ APPEND), admin (+ TRUNCATE, PROMOTE, METRICS); auth_token is admin. (reload)
        # users:
        #   - {name: ingest, role: append, token_hash: "pbkdf2-sha256$10000$SALT$HASH"}

        # A verified TLS client certificate's subject CN -> role; such a client needs no AUTH. (reload)
        # cert_roles:
        #   follower-1: read

        """
}

extension String {
    func capitalizingFirst() -> String { prefix(1).uppercased() + dropFirst() }
}
