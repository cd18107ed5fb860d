// Pure parsers for the value forms options share: byte sizes, durations, counts, log levels, switches and
// checked text. Each failure says what was expected; the loader adds which option and source it came from.
import Logging
import WALCore

/// A value that didn't parse; `expected` is the accepted form ("expected a duration like 10ms, 1s or 0").
struct ValueError: Error, Equatable {
    var expected: String
    init(_ expected: String) { self.expected = expected }
}

enum ByteSize {
    static let expectedForm = "expected a byte size like 1048576, 512KiB, 64MiB or 1GiB"

    /// `1048576`, `64KiB`, `64 MiB`, `1G`. K/M/G are binary units like KiB/MiB/GiB.
    static func parse(_ text: String) throws(ValueError) -> Int {
        let digits = text.prefix(while: \.isASCIIDigit)
        let unit = text.dropFirst(digits.count).drop(while: { $0 == " " }).lowercased()
        let shift: Int
        switch unit {
        case "": shift = 0
        case "k", "kib": shift = 10
        case "m", "mib": shift = 20
        case "g", "gib": shift = 30
        default: throw ValueError(expectedForm)
        }
        guard !digits.isEmpty, let count = Int(digits) else { throw ValueError(expectedForm) }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { throw ValueError("\(expectedForm) (this one is too large)") }
        return bytes
    }
}

enum DurationText {
    static let expectedForm = "expected a duration like 10ms, 1s or 0"

    /// The longest duration any option takes. Durations are added to clocks and turned into
    /// nanosecond counts (timers, the slow-sync check); a year keeps all of that far from
    /// overflowing, and no interval or timeout of a write-ahead log is longer.
    static let maximum = WALOptions.longestDuration
    static let tooLarge = ValueError("\(expectedForm), at most 8760h (a year); this one is too large")

    /// `0`, or an integer with one of the units ns, us (µs), ms, s, m, h: `500us`, `10ms`, `2m`;
    /// at most `maximum`.
    static func parse(_ text: String) throws(ValueError) -> Duration {
        if text == "0" { return .zero }
        let digits = text.prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty else { throw ValueError(expectedForm) }
        let unit = text.dropFirst(digits.count)
        guard ["ns", "us", "µs", "ms", "s", "m", "h"].contains(unit) else { throw ValueError(expectedForm) }
        // Digits that do not fit an Int64 are too large in any unit.
        guard let count = Int64(digits) else { throw tooLarge }
        let duration: Duration
        switch unit {
        case "ns": duration = .nanoseconds(count)
        case "us", "µs": duration = .microseconds(count)
        case "ms": duration = .milliseconds(count)
        case "s": duration = .seconds(count)
        case "m", "h":
            let (seconds, overflow) = count.multipliedReportingOverflow(by: unit == "m" ? 60 : 3600)
            guard !overflow else { throw tooLarge }
            duration = .seconds(seconds)
        default: throw ValueError(expectedForm)
        }
        guard duration <= maximum else { throw tooLarge }
        return duration
    }

    /// A duration above zero (a timeout that must be able to expire).
    static func parsePositive(_ text: String) throws(ValueError) -> Duration {
        let duration = try parse(text)
        guard duration > .zero else { throw ValueError("expected a duration above 0 like 500ms, 5s or 1m") }
        return duration
    }

    /// The shortest exact spelling in the units `parse` accepts, for logs and the sample file.
    static func format(_ duration: Duration) -> String {
        if duration == .zero { return "0" }
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 {
            if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
            if seconds % 60 == 0 { return "\(seconds / 60)m" }
            return "\(seconds)s"
        }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return "\(duration)" }
        let nanoseconds = scaled + attoseconds / 1_000_000_000
        if nanoseconds % 1_000_000 == 0 { return "\(nanoseconds / 1_000_000)ms" }
        if nanoseconds % 1_000 == 0 { return "\(nanoseconds / 1_000)us" }
        return "\(nanoseconds)ns"
    }
}

enum Count {
    /// A plain decimal integer, at least `minimum`.
    static func parse(_ text: String, minimum: Int, meaning: String = "") throws(ValueError) -> Int {
        guard !text.isEmpty, text.allSatisfy(\.isASCIIDigit), let value = Int(text), value >= minimum else {
            throw ValueError("expected an integer of at least \(minimum)\(meaning)")
        }
        return value
    }
}

enum LogLevelText {
    static let expectedForm = "expected one of " + Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")

    static func parse(_ text: String) throws(ValueError) -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else { throw ValueError(expectedForm) }
        return level
    }
}

extension ByteSize {
    /// The largest binary unit that divides `bytes` exactly (`64MiB`, `1GiB`, `512KiB`), else the
    /// plain count: what `parse` reads back to the same number.
    static func format(_ bytes: Int) -> String {
        guard bytes > 0 else { return "\(bytes)" }
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }

    /// A byte size where 0 means unlimited, saying so when the text does not parse.
    static func parseOrUnlimited(_ text: String) throws(ValueError) -> Int {
        do throws(ValueError) {
            return try parse(text)
        } catch {
            throw ValueError("\(error.expected) (0 = unlimited)")
        }
    }

    /// A byte size of at least `minimum`; `unit` words the bound in the error.
    static func parse(_ text: String, minimum: Int, unit: String = "") throws(ValueError) -> Int {
        let bytes = try parse(text)
        guard bytes >= minimum else { throw ValueError("expected a byte size of at least \(format(minimum))\(unit)") }
        return bytes
    }
}

enum BooleanText {
    /// `true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`, any case.
    static func parse(_ text: String) throws(ValueError) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw ValueError("expected true or false")
        }
    }
}

/// The checks of text options that are not a number, a size, a duration or an address.
enum TextValue {
    /// A file or directory path: anything but empty.
    static func path(_ text: String) throws(ValueError) -> String { try nonEmpty(text, "path") }

    /// A name (a TLS server name): anything but empty.
    static func name(_ text: String) throws(ValueError) -> String { try nonEmpty(text, "name") }

    private static func nonEmpty(_ text: String, _ what: String) throws(ValueError) -> String {
        guard !text.isEmpty else { throw ValueError("expected a non-empty \(what)") }
        return text
    }

    static func segmentPrefix(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, !text.contains("/") else { throw ValueError("expected a non-empty file name prefix without '/'") }
        return text
    }

    /// sun_path holds 108 bytes including the terminating NUL.
    static func unixSocketPath(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.utf8.count <= 107, !text.utf8.contains(0) else {
            throw ValueError("expected a socket path of 1 to 107 bytes")
        }
        return text
    }

    /// The token is sent on a text protocol line, so it can't hold spaces or control characters.
    static func token(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw ValueError("expected a non-empty token without spaces or control characters")
        }
        return text
    }

    /// One of `choices`, exactly as spelled.
    static func oneOf(_ choices: [String]) -> (String) throws(ValueError) -> String {
        { (text) throws(ValueError) in
            guard choices.contains(text) else {
                throw ValueError("expected " + choices.dropLast().joined(separator: ", ") + " or " + choices.last!)
            }
            return text
        }
    }

    /// `http://HOST:PORT[,http://HOST:PORT…]`: etcd's client URLs (plain HTTP; the JSON gateway).
    static func etcdEndpoints(_ text: String) throws(ValueError) -> [String] {
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
    static func clusterName(_ text: String) throws(ValueError) -> String {
        guard (1...64).contains(text.utf8.count),
              text.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                  || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }) else {
            throw ValueError("expected a cluster name of 1 to 64 letters, digits, '.', '_' or '-'")
        }
        return text
    }
}
