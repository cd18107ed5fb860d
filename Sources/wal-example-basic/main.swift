// The seed's basic example: write 11 records, sync, replay them.
import WALCore

@main
struct BasicExample {
    static func main() async throws {
        let directory = CommandLine.arguments.dropFirst().first ?? "data/example-basic"
        var options = WALOptions(directory: directory)
        options.maxSegmentBytes = 1 << 20
        let wal = try await WAL.open(options)
        let first = wal.lastLSN + 1
        for i in 0...10 {
            try await wal.append(Array("record \(i)".utf8), durability: .buffered)
        }
        let durable = try await wal.sync()
        print("appended LSN \(first)...\(durable) to \(directory), durable through \(durable)")
        try wal.replay(from: first) { lsn, payload in
            print("\(lsn): \(String(decoding: payload, as: UTF8.self))")
        }
        try await wal.close()
    }
}
