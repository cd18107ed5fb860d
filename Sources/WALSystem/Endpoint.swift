// The one address type: where wald listens, where a follower or a client connects, what a
// member advertises. TCP as HOST:PORT (IPv4, a hostname, or IPv6 in brackets) or a unix
// socket as `unix:/path`. The configuration parses strictly (`parseTCP`: a clear reason for
// every malformed address); the tools parse leniently (`init(parsing:defaultPort:)`: a bare
// host means wald's port).
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Where a wald listens or is reached: `127.0.0.1:7070`, `[::1]:7070`, `localhost:7070`,
/// `unix:/run/wald/wald.sock`.
public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// The host without brackets (`127.0.0.1`, `::1`, `localhost`); port 0 only where wald
    /// binds (the kernel picks a free port, which wald reports when ready).
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// wald's port when an address names none.
    public static let defaultPort: UInt16 = 7070

    /// Parses `HOST:PORT` (IPv6 as `[::1]:7070`) or `unix:/path`. With a `defaultPort`, `HOST`,
    /// `[::1]` and a bare IPv6 address (`::1`) mean that port. Nil when malformed.
    public init?(parsing text: String, defaultPort: UInt16? = nil) {
        if text.hasPrefix("unix:") {
            self = .unix(path: String(text.dropFirst(5)))
            return
        }
        let host: Substring
        let port: Substring?
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || rest.first == ":" else { return nil }
            port = rest.isEmpty ? nil : rest.dropFirst()
        } else if text.filter({ $0 == ":" }).count > 1 {
            host = text[...]  // an IPv6 address without brackets cannot carry a port
            port = nil
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            host = text[...]
            port = nil
        }
        guard !host.isEmpty else { return nil }
        if let port {
            guard let number = UInt16(port), number > 0 else { return nil }
            self = .tcp(host: String(host), port: number)
        } else {
            guard let defaultPort else { return nil }
            self = .tcp(host: String(host), port: defaultPort)
        }
    }

    static let expectedForm = "expected HOST:PORT like 127.0.0.1:7070, [::1]:7070 or localhost:7070"

    /// Parses a TCP `HOST:PORT` strictly, as the configuration does: an IPv4 dotted quad or a
    /// DNS name, or an IPv6 address (checked with inet_pton, the parser the listener uses) in
    /// brackets; port 1–65535, or 0 (any free port) with `allowAnyPort` (addresses wald binds).
    /// Throws `EndpointError` saying which part is wrong.
    public static func parseTCP(_ text: String, allowAnyPort: Bool) throws(EndpointError) -> Endpoint {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw EndpointError("\(expectedForm) (missing ']' after the IPv6 address)")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw EndpointError("\(expectedForm) (missing ':PORT' after ']')") }
            portText = rest.dropFirst()
            guard isIPv6Address(host) else { throw EndpointError("\(expectedForm) (\"\(host)\" is not an IPv6 address)") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw EndpointError("\(expectedForm) (missing ':PORT')") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw EndpointError("\(expectedForm) (write an IPv6 address in brackets)")
            }
            guard isHostname(host) else {
                throw EndpointError("\(expectedForm) (\"\(host)\" is not an IPv4 address or hostname)")
            }
        }
        let lowest = allowAnyPort ? 0 : 1
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), portText.count <= 5,
              let port = Int(portText), (lowest...65535).contains(port)
        else {
            throw EndpointError(
                "\(expectedForm) with a port from \(lowest) to 65535\(allowAnyPort ? " (0 = any free port)" : "")")
        }
        return .tcp(host: String(host), port: UInt16(port))
    }

    /// The TCP host (nil for a unix socket): what a TLS client checks the certificate against.
    public var host: String? {
        if case .tcp(let host, _) = self { return host }
        return nil
    }

    /// The TCP port (nil for a unix socket).
    public var port: UInt16? {
        if case .tcp(_, let port) = self { return port }
        return nil
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    /// IPv4 dotted quads and DNS names. An all-numeric name must be a valid dotted quad,
    /// so `1.2.3` or `300.1.1.1` are rejected instead of being looked up.
    private static func isHostname(_ host: Substring) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        if labels.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }) {
            return labels.count == 4 && labels.allSatisfy { $0.count <= 3 && Int($0)! <= 255 }
        }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// inet_pton(AF_INET6); a zone (`fe80::1%eth0`) is allowed.
    private static func isIPv6Address(_ host: Substring) -> Bool {
        let address = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = address.first, !first.isEmpty, address.count == 1 || !address[1].isEmpty else { return false }
        var storage = in6_addr()
        return String(first).withCString { inet_pton(AF_INET6, $0, &storage) } == 1
    }
}

/// A malformed address; `message` says which part is wrong and what is expected.
public struct EndpointError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
