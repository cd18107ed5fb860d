// Addresses in the configuration are WALSystem's `Endpoint` (TCP only here), parsed strictly
// with a reason for every malformed one.
import WALSystem

/// How the configuration reads an address option.
enum AddressValue {
    /// An address wald binds (`listen`, `tls_listen`, `metrics_listen`): port 0 means any free port.
    static func parseBindable(_ text: String) throws(ValueError) -> Endpoint {
        try parse(text, allowAnyPort: true)
    }

    /// An address wald connects to or advertises (`follow`, `advertise`, etcd URLs): port 0 can't be reached.
    static func parseRemote(_ text: String) throws(ValueError) -> Endpoint {
        try parse(text, allowAnyPort: false)
    }

    private static func parse(_ text: String, allowAnyPort: Bool) throws(ValueError) -> Endpoint {
        do {
            return try Endpoint.parseTCP(text, allowAnyPort: allowAnyPort)
        } catch {
            throw ValueError(error.message)
        }
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
