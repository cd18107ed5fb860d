// Who may do what: roles (read ⊂ append ⊂ admin), the right each request needs, and how a
// connection gets its role — AUTH with a token (the single `auth_token`, or a named user's token
// checked against its salted hash) or, on TLS, a verified client certificate whose subject CN is
// mapped to a role. Without any of them configured every client is admin, as before roles.
import WALProtocol
import WALTLS

/// What a connection may do once authenticated.
public enum Role: String, Sendable, CaseIterable, Comparable {
    /// REPLAY, FOLLOW, INFO, PING, SYNC and the RESP reads.
    case read
    /// read + APPEND (RESP XADD).
    case append
    /// Everything: TRUNCATE (RESP XTRIM), PROMOTE, METRICS.
    case admin

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }

    private var rank: Int {
        switch self {
        case .read: 0
        case .append: 1
        case .admin: 2
        }
    }

    /// Whether this role includes `right`.
    func allows(_ right: Right) -> Bool { self >= right.leastRole }
}

/// What a request needs; named in the UNAUTHORIZED reply ("role read lacks append").
enum Right: String {
    case read, append, truncate, promote, metrics

    var leastRole: Role {
        switch self {
        case .read: .read
        case .append: .append
        case .truncate, .promote, .metrics: .admin
        }
    }

    /// The right `request` needs; nil for AUTH and QUIT (allowed to anyone).
    static func needed(by request: Request) -> Right? {
        switch request {
        case .append: .append
        case .truncate: .truncate
        case .promote: .promote
        case .metrics: .metrics
        case .sync, .info, .ping, .replay, .feedback: .read
        case .auth, .quit: nil
        }
    }
}

/// A named user from the configuration: a role and the salted hash of its token.
public struct ServerUser: Sendable {
    public let name: String
    public let role: Role
    public let tokenHash: TokenHash

    public init(name: String, role: Role, tokenHash: TokenHash) {
        self.name = name
        self.role = role
        self.tokenHash = tokenHash
    }
}

extension ServerLoop {
    /// Whether clients must authenticate (a token, users or certificate roles are configured).
    var authRequired: Bool { options.authToken != nil || !options.users.isEmpty || !options.certificateRoles.isEmpty }

    /// The role `token` authenticates as: the single auth token is admin; otherwise the user
    /// (named `user`, when given) whose hash it matches. Every candidate is checked, so the
    /// time taken does not say which one matched.
    func role(forToken token: UnsafeRawBufferPointer, user: String? = nil) -> (role: Role, name: String)? {
        var found: (Role, String)?
        if user == nil || user == "default", options.authToken != nil, checkToken(token) { found = (.admin, "default") }
        for candidate in options.users where user == nil || candidate.name == user {
            if candidate.tokenHash.matches(token) && found == nil { found = (candidate.role, candidate.name) }
        }
        return found
    }
}

extension Connection {
    /// Whether this connection may do what `right` covers; answers UNAUTHORIZED (in the
    /// connection's protocol) when not. Requests before AUTH are refused the same way.
    func permits(_ right: Right, command: String? = nil) -> Bool {
        guard loop.authRequired else { return true }
        guard let role else {
            if mode == .resp {
                resp.writer.error("Authentication required.", code: "NOAUTH", into: &output)
            } else {
                reply(.error(.unauthorized, "authenticate first with AUTH <token>"))
            }
            return false
        }
        if role.allows(right) { return true }
        loop.logger.debug("request refused by role", metadata: [
            "peer": "\(peer)", "user": "\(userName ?? "")", "role": "\(role.rawValue)", "right": "\(right.rawValue)",
        ])
        if mode == .resp {
            // Redis's code for an ACL refusal.
            let what = command.map { " (\($0.uppercased()))" } ?? ""
            resp.writer.error("role \(role.rawValue) lacks \(right.rawValue)\(what)", code: "NOPERM", into: &output)
        } else {
            reply(.error(.unauthorized, "role \(role.rawValue) lacks \(right.rawValue)"))
        }
        return false
    }

    /// Wrong tokens a connection may send while users are configured before it is closed:
    /// each AUTH costs one PBKDF2 per user on the loop, so guessing must not be free.
    static let maxFailedAuths = 3

    /// Counts a wrong token; the third one (with users configured) ends the connection after
    /// its reply, like QUIT.
    func authFailed() {
        failedAuths += 1
        guard !options.users.isEmpty, failedAuths >= Self.maxFailedAuths else { return }
        loop.logger.info("closing a connection after repeated wrong tokens", metadata: ["peer": "\(peer)", "failures": "\(failedAuths)"])
        input.removeAll()
        stopReading = true
        closing = true
    }

    /// A `read` user does not see the upstream's and followers' addresses in INFO.
    var hidesAddresses: Bool { loop.authRequired && (role ?? .read) < .append }

    /// After a TLS handshake: a verified client certificate whose CN is mapped authenticates.
    func adoptCertificateRole() {
        guard role == nil, let name = transport.tls?.verifiedPeerCommonName,
              let mapped = options.certificateRoles[name] else { return }
        role = mapped
        userName = "cn:" + name
    }
}
