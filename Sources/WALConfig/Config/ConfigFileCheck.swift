// Reads the YAML config file's top level before swift-configuration reads its values, because the
// library answers only the keys it is asked for: a misspelt key would otherwise be silently ignored.
import Foundation
import WALTLS
import Yams

enum ConfigFileCheck {
    /// What the file holds at the top level.
    enum Contents: Equatable {
        /// No document, or only comments: the file sets nothing.
        case empty
        /// A mapping whose keys are all known options.
        case options
    }

    /// Throws if the file can't be read, isn't a mapping of known keys to scalars or lists of
    /// scalars, or leaves a key without a value.
    static func check(path: String) throws(WaldConfigError) -> Contents {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadableFile(path: path, reason: reason(error))
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw .malformedFile(path: path, reason: "\(error)")
        }
        // No document, or an empty one (`---` alone), sets nothing.
        guard let root, root.tag.rawValue != Tag.Name.null.rawValue else { return .empty }
        guard let mapping = root.mapping else {
            throw .malformedFile(path: path, reason: "expected a mapping of option keys to values at the top level")
        }
        var unknown: [String] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else {
                throw .malformedFile(path: path, reason: "a top-level key is not a string")
            }
            // The access lists are structured; `accessLists` reads and checks them.
            if WaldConfig.accessKeys.contains(key) { continue }
            guard WaldOption.fileKeys.contains(key) else {
                unknown.append(key)
                continue
            }
            switch value {
            case .scalar where value.tag.rawValue == Tag.Name.null.rawValue:
                throw .malformedFile(
                    path: path, reason: "\"\(key)\" has no value; comment the line out to use the default")
            case .scalar:
                break
            case .sequence(let sequence):
                guard WaldOption(rawValue: key)?.isList == true else {
                    throw .malformedFile(path: path, reason: "\"\(key)\" takes a single value, not a list")
                }
                guard sequence.allSatisfy({ $0.scalar != nil }) else {
                    throw .malformedFile(path: path, reason: "\"\(key)\" must be a list of HOST:PORT strings")
                }
            case .mapping:
                throw .malformedFile(path: path, reason: "\"\(key)\" takes a value, not a nested mapping")
            case .alias:
                throw .malformedFile(path: path, reason: "\"\(key)\" uses a YAML alias, which wald doesn't support")
            }
        }
        if !unknown.isEmpty { throw .unknownKeys(unknown, file: path) }
        return .options
    }

    /// `users:` (a list of {name, role, token_hash}) and `cert_roles:` (CN → role) from the
    /// file, checked: known roles, hashes in the `walctl hash-token` form, unique names.
    static func accessLists(path: String) throws(WaldConfigError) -> (users: [WaldUser], certificateRoles: [String: String]) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: try String(contentsOfFile: path, encoding: .utf8))
        } catch {
            throw .malformedFile(path: path, reason: "\(error)")
        }
        guard let mapping = root?.mapping else { return ([], [:]) }
        let roles = ["read", "append", "admin"]
        var users: [WaldUser] = []
        var certificateRoles: [String: String] = [:]
        if let node = mapping["users"] {
            guard let list = node.sequence else {
                throw .malformedFile(path: path, reason: "\"users\" must be a list of {name, role, token_hash}")
            }
            for (index, entry) in list.enumerated() {
                guard let fields = entry.mapping else {
                    throw .malformedFile(path: path, reason: "users[\(index)] must be a mapping with name, role and token_hash")
                }
                let keys = fields.keys.compactMap(\.string)
                if let unknown = keys.first(where: { !["name", "role", "token_hash"].contains($0) }) {
                    throw .malformedFile(path: path, reason: "users[\(index)] has an unknown key \"\(unknown)\" (expected name, role, token_hash)")
                }
                guard let name = fields["name"]?.string, !name.isEmpty, name.count <= 64,
                      name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
                    throw .malformedFile(path: path, reason: "users[\(index)].name must be 1 to 64 printable ASCII characters without spaces")
                }
                guard let role = fields["role"]?.string, roles.contains(role) else {
                    throw .malformedFile(path: path, reason: "users[\(index)] (\(name)): role must be read, append or admin")
                }
                guard let hash = fields["token_hash"]?.string, TokenHash(parsing: hash) != nil else {
                    throw .malformedFile(path: path, reason: "users[\(index)] (\(name)): token_hash must be the output of `walctl hash-token` "
                        + "(pbkdf2-sha256$ITERATIONS$SALT$HASH); the token itself never goes in the file")
                }
                guard !users.contains(where: { $0.name == name }) else {
                    throw .malformedFile(path: path, reason: "users: the name \(name) appears twice")
                }
                users.append(WaldUser(name: name, role: role, tokenHash: hash))
            }
        }
        if let node = mapping["cert_roles"] {
            guard let entries = node.mapping else {
                throw .malformedFile(path: path, reason: "\"cert_roles\" must map certificate common names to roles")
            }
            for (key, value) in entries {
                guard let name = key.string, !name.isEmpty else {
                    throw .malformedFile(path: path, reason: "cert_roles: a key is not a common name")
                }
                guard let role = value.string, roles.contains(role) else {
                    throw .malformedFile(path: path, reason: "cert_roles: \(name) must map to read, append or admin")
                }
                certificateRoles[name] = role
            }
        }
        return (users, certificateRoles)
    }

    /// When the file has `users:` or `cert_roles:`, a private temporary copy without them (its
    /// path; the caller removes it); nil when the file has neither.
    static func copyWithoutAccessLists(path: String) throws(WaldConfigError) -> String? {
        do {
            guard let root = try Yams.compose(yaml: try String(contentsOfFile: path, encoding: .utf8)),
                  var mapping = root.mapping,
                  WaldConfig.accessKeys.contains(where: { mapping[$0] != nil }) else { return nil }
            for key in WaldConfig.accessKeys { mapping[key] = nil }
            let text = mapping.isEmpty ? "{}\n" : try Yams.serialize(node: .mapping(mapping))
            let copy = NSTemporaryDirectory() + "wald-config-\(UUID().uuidString).yaml"
            // 0600: the copy may hold auth_token.
            guard FileManager.default.createFile(atPath: copy, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw WaldConfigError.unreadableFile(path: copy, reason: "cannot write a temporary copy of the config file")
            }
            return copy
        } catch let error as WaldConfigError {
            throw error
        } catch {
            throw .malformedFile(path: path, reason: "\(error)")
        }
    }

    private static func reason(_ error: any Error) -> String {
        switch (error as? CocoaError)?.code {
        case .fileReadNoSuchFile?: "no such file"
        case .fileReadNoPermission?: "permission denied"
        default: error.localizedDescription
        }
    }
}
