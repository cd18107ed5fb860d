// The seed's key-value store example: every mutation is a JSON record appended durably to
// the log, and the state is rebuilt on start by replaying the log from the beginning.
//
//   wal-example-kvstore [--dir DIR] set KEY VALUE | get KEY | del KEY | list
import Foundation
import WALCore

/// One logged mutation, e.g. {"op":"set","key":"a","value":"1"} or {"op":"del","key":"a"}.
struct Mutation: Codable {
    var op: String
    var key: String
    var value: String?
}

/// The store: an in-memory dictionary kept in step with the log.
struct KVStore {
    let wal: WAL
    private(set) var values: [String: String] = [:]

    /// Opens the log and replays every record into the dictionary.
    static func open(directory: String) async throws -> KVStore {
        var options = WALOptions(directory: directory)
        options.maxSegmentBytes = 1 << 20
        options.logger.logLevel = .warning
        var store = KVStore(wal: try await WAL.open(options))
        let decoder = JSONDecoder()
        try store.wal.replay { _, payload in
            store.apply(try decoder.decode(Mutation.self, from: Data(payload)))
        }
        return store
    }

    mutating func set(_ key: String, _ value: String) async throws {
        try await log(Mutation(op: "set", key: key, value: value))
    }

    mutating func delete(_ key: String) async throws {
        try await log(Mutation(op: "del", key: key))
    }

    /// Appends durably first, then applies: the dictionary never holds what the log might lose.
    private mutating func log(_ mutation: Mutation) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys  // Same bytes for the same mutation.
        try await wal.append(Array(try encoder.encode(mutation)))
        apply(mutation)
    }

    private mutating func apply(_ mutation: Mutation) {
        switch mutation.op {
        case "set": values[mutation.key] = mutation.value
        case "del": values[mutation.key] = nil
        default: break  // Unknown operations from a newer version are skipped.
        }
    }
}

enum KVStoreExample {
    static let usage = "usage: wal-example-kvstore [--dir DIR] set KEY VALUE | get KEY | del KEY | list"

    static func run() async throws {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var directory = "data/example-kvstore"
        if arguments.first == "--dir", arguments.count >= 2 {
            directory = arguments[1]
            arguments.removeFirst(2)
        }
        // The arguments are checked before the log is opened: a mistyped command must not
        // create a directory (inside a running wald's ./data, say).
        switch (arguments.first, arguments.count) {
        case ("set", 3), ("get", 2), ("del", 2), ("list", 1): break
        default:
            FileHandle.standardError.write(Data((usage + "\n").utf8))
            exit(2)
        }
        var store = try await KVStore.open(directory: directory)
        switch arguments[0] {
        case "set":
            try await store.set(arguments[1], arguments[2])
            print("OK")
        case "get":
            if let value = store.values[arguments[1]] { print(value) } else {
                print("(not found)")
                try await store.wal.close()
                exit(1)
            }
        case "del":
            let existed = store.values[arguments[1]] != nil
            if existed { try await store.delete(arguments[1]) }
            print(existed ? "deleted" : "(not found)")
        default:
            for key in store.values.keys.sorted() { print("\(key)=\(store.values[key]!)") }
        }
        try await store.wal.close()
    }
}

try await KVStoreExample.run()
