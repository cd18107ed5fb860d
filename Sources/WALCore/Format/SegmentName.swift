// Segment file names: <prefix><first LSN as 20 zero-padded decimal digits>.wal, so `ls`
// lists them in log order.

public enum SegmentName {
    public static let suffix = ".wal"

    public static func make(prefix: String, firstLSN: UInt64) -> String {
        let digits = String(firstLSN)
        return prefix + String(repeating: "0", count: 20 - digits.count) + digits + suffix
    }

    /// The first LSN encoded in `name`, or nil when `name` is not a segment of `prefix`.
    public static func parse(_ name: String, prefix: String) -> UInt64? {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix) else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.count == 20, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(digits)
    }
}
