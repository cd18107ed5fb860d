// A TCP endpoint written as HOST:PORT: an IPv4 address, a hostname, or an IPv6 address in brackets.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where to listen (or, for `follow`, where to connect): `127.0.0.1:7070`, `[::1]:7070`, `localhost:7070`.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// The host without brackets: `127.0.0.1`, `::1`, `localhost`.
    public var host: String
    /// 1–65535; 0 only where wald binds (`listen`, `metrics_listen`): the kernel picks a free port,
    /// which wald reports when ready (end-to-end tests rely on it).
    public var port: UInt16
    /// True when the host was written as a bracketed IPv6 address.
    public var isIPv6: Bool

    public init(host: String, port: UInt16, isIPv6: Bool = false) {
        self.host = host
        self.port = port
        self.isIPv6 = isIPv6
    }

    /// The address as it is written on the command line, brackets included for IPv6.
    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    static let expectedForm = "expected HOST:PORT like 127.0.0.1:7070, [::1]:7070 or localhost:7070"

    /// An address wald binds: port 0 means any free port.
    static func parseBindable(_ text: String) throws(ValueError) -> ListenAddress {
        try parse(text, allowAnyPort: true)
    }

    /// An address wald connects to (`follow`): port 0 can't be reached.
    static func parseRemote(_ text: String) throws(ValueError) -> ListenAddress {
        try parse(text, allowAnyPort: false)
    }

    /// Parses `HOST:PORT`; the error's text says which part is wrong.
    static func parse(_ text: String, allowAnyPort: Bool) throws(ValueError) -> ListenAddress {
        let host: Substring
        let portText: Substring
        let isIPv6: Bool
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ValueError("\(expectedForm) (missing ']' after the IPv6 address)")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ValueError("\(expectedForm) (missing ':PORT' after ']')") }
            portText = rest.dropFirst()
            guard isIPv6Address(host) else { throw ValueError("\(expectedForm) (\"\(host)\" is not an IPv6 address)") }
            isIPv6 = true
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ValueError("\(expectedForm) (missing ':PORT')") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw ValueError("\(expectedForm) (write an IPv6 address in brackets)")
            }
            guard isHostname(host) else {
                throw ValueError("\(expectedForm) (\"\(host)\" is not an IPv4 address or hostname)")
            }
            isIPv6 = false
        }
        let lowest = allowAnyPort ? 0 : 1
        guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), portText.count <= 5,
            let port = Int(portText), (lowest...65535).contains(port)
        else {
            throw ValueError(
                "\(expectedForm) with a port from \(lowest) to 65535\(allowAnyPort ? " (0 = any free port)" : "")")
        }
        return ListenAddress(host: String(host), port: UInt16(port), isIPv6: isIPv6)
    }

    /// IPv4 dotted quads and DNS names. An all-numeric name must be a valid dotted quad,
    /// so `1.2.3` or `300.1.1.1` are rejected instead of being looked up.
    private static func isHostname(_ host: Substring) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        if labels.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }) {
            return labels.count == 4 && labels.allSatisfy { $0.count <= 3 && Int($0)! <= 255 }
        }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// Uses inet_pton, the same parser the listener will use; a zone (`fe80::1%eth0`) is allowed.
    private static func isIPv6Address(_ host: Substring) -> Bool {
        let address = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = address.first, !first.isEmpty, address.count == 1 || !address[1].isEmpty else { return false }
        var storage = in6_addr()
        return String(first).withCString { inet_pton(AF_INET6, $0, &storage) } == 1
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
