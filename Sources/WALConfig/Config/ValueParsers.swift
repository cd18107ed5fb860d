// Pure parsers for the value forms options share: byte sizes, durations, counts, log levels.
// Each failure says what was expected; the loader adds which option and source it came from.
import Logging

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
    static let maximum = Duration.seconds(365 * 24 * 3600)
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
