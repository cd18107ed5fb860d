// Reads the YAML config file's top level before swift-configuration reads its values, because the
// library answers only the keys it is asked for: a misspelt key would otherwise be silently ignored.
import Foundation
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

    private static func reason(_ error: any Error) -> String {
        switch (error as? CocoaError)?.code {
        case .fileReadNoSuchFile?: "no such file"
        case .fileReadNoPermission?: "permission denied"
        default: error.localizedDescription
        }
    }
}
