// A full disk, end to end: wald on a 4 MiB tmpfs is filled with durable appends until
// NO_SPACE; a refused append leaves no trace (not in INFO, not in a replay after SIGKILL and
// restart, not in the segment files), its LSN goes to the next record, and TRUNCATE frees
// space for appends again. Mounting needs root; without it the test is reported as skipped.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A tmpfs of a few MiB mounted on a new temporary directory.
struct SmallFilesystem {
    let path: String

    /// Whether this process may mount a tmpfs (root, or CAP_SYS_ADMIN): tried once.
    static let canMount: Bool = {
        guard let probe = try? SmallFilesystem(mebibytes: 1) else { return false }
        probe.unmount()
        return true
    }()

    init(mebibytes: Int) throws {
        path = NSTemporaryDirectory() + "wald-e2e-tmpfs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        guard mount("tmpfs", path, "tmpfs", 0, "size=\(mebibytes)m") == 0 else {
            let code = errno
            rmdir(path)
            throw SmallFilesystemError.mount(errno: code)
        }
    }

    func unmount() {
        if umount2(path, 0) != 0 { umount2(path, Int32(MNT_DETACH)) }
        rmdir(path)
    }
}

enum SmallFilesystemError: Error { case mount(errno: Int32) }

@Suite(.serialized) struct DiskFullTests {
    /// Sends one durable APPEND of `record`; the LSN it got, or the error code.
    private func append(_ record: [UInt8], on c: RawConnection) throws -> Result<UInt64, ErrorReply> {
        c.send(appendFrame([record]))
        let reply = try #require(c.readFrame(), "no reply to APPEND")
        switch reply.opcode {
        case 0x81: return .success(readU64(reply.body))
        case 0xFF: return .failure(ErrorReply(code: errorCode(reply.body), message: String(decoding: reply.body.dropFirst(2), as: UTF8.self)))
        default: throw ErrorReply(code: 0, message: "unexpected reply 0x\(String(reply.opcode, radix: 16))")
        }
    }

    struct ErrorReply: Error, Equatable { let code: UInt16; let message: String }

    /// Every record REPLAY sends from the first available LSN.
    private func replayAll(on c: RawConnection) throws -> [(lsn: UInt64, payload: [UInt8])] {
        c.send(frame(0x02, be64(0) + be64(0) + [0]))
        var records: [(UInt64, [UInt8])] = []
        while true {
            let reply = try #require(c.readFrame(), "the replay ended without END")
            if reply.opcode == 0x83 { return records }
            try #require(reply.opcode == 0x82, "unexpected reply 0x\(String(reply.opcode, radix: 16)) in a replay")
            records.append((readU64(reply.body), Array(reply.body.dropFirst(8))))
        }
    }

    private func info(on c: RawConnection) throws -> [String: Any] {
        c.send(frame(0x04))
        let reply = try #require(c.readFrame())
        return try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
    }

    @Test(.timeLimit(.minutes(2)),
          .enabled(if: SmallFilesystem.canMount, "needs root to mount a 4 MiB tmpfs (mount -t tmpfs); run as root to cover the full disk"))
    func aFullDiskRefusesAnAppendWhichLeavesNoTraceAndTruncateMakesRoom() throws {
        let filesystem = try SmallFilesystem(mebibytes: 4)
        defer { filesystem.unmount() }
        let data = filesystem.path + "/data"
        let options = ["--max-segment-bytes", "128KiB", "--max-record-bytes", "1MiB"]
        // The log goes elsewhere: on the full tmpfs it could not be written.
        let logPath = NSTemporaryDirectory() + "wald-e2e-diskfull-\(UUID().uuidString).log"
        #expect(FileManager.default.createFile(atPath: logPath, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        var wald = try WaldProcess(dataDirectory: data, arguments: options, standardError: FileHandle(forWritingAtPath: logPath))
        defer { wald.stop(signal: SIGKILL) }

        // Fill it: durable 16 KiB records until the first NO_SPACE.
        var c = try RawConnection(port: wald.port)
        var kept: [UInt64: [UInt8]] = [:]
        var last: UInt64 = 0
        var filled = false
        for i in 0..<1000 {
            let record = payload("fill-\(i)", size: 16 * 1024)
            switch try append(record, on: c) {
            case .success(let lsn):
                #expect(lsn == last + 1, "LSN \(lsn) after \(last)")
                kept[lsn] = record
                last = lsn
            case .failure(let error):
                #expect(error.code == 6, "APPEND \(i) failed with \(error.code) \(error.message)")
                filled = true
            }
            if filled { break }
        }
        try #require(filled, "4 MiB took 1000 appends of 16 KiB without NO_SPACE")
        #expect(last > 100, "NO_SPACE came after only \(last) records of 16 KiB")

        // A 300 KiB durable append on the full disk: NO_SPACE, and INFO does not count it.
        let refused = Array(repeating: Array("REFUSED-300KiB-".utf8), count: 300 * 1024 / 15).flatMap { $0 }
        let result = try append(refused, on: c)
        guard case .failure(let error) = result else {
            Issue.record("the 300 KiB append on a full disk was acknowledged: \(result)")
            return
        }
        #expect(error.code == 6 && error.message.contains("no space left"), "\(error.code) \(error.message)")
        #expect(try info(on: c)["last_lsn"] as? UInt64 == last)

        // TRUNCATE frees whole segments; the next append gets the LSN the refused one did not use.
        c.send(frame(0x06, be64(last + 1)))
        let truncated = try #require(c.readFrame())
        #expect(truncated.opcode == 0x87, "TRUNCATE answered 0x\(String(truncated.opcode, radix: 16))")
        let first = readU64(truncated.body)
        #expect(first > 1 && first <= last, "TRUNCATE left first LSN \(first) of 1...\(last)")
        let after = payload("after-truncate", size: 64 * 1024)
        let afterLSN = try append(after, on: c)
        #expect(afterLSN == .success(last + 1), "\(afterLSN)")
        kept[last + 1] = after

        // SIGKILL, restart on the same directory: exactly the acknowledged records, byte for byte.
        wald.stop(signal: SIGKILL)
        wald = try WaldProcess(dataDirectory: data, arguments: options, standardError: FileHandle(forWritingAtPath: logPath))
        c = try RawConnection(port: wald.port)
        let records = try replayAll(on: c)
        #expect(records.first?.lsn == first && records.last?.lsn == last + 1)
        #expect(records.map(\.lsn) == Array(first...(last + 1)), "the replay is not dense from \(first) to \(last + 1)")
        for record in records where record.payload != kept[record.lsn] {
            Issue.record("LSN \(record.lsn) replays \(record.payload.count) bytes that are not the acknowledged record")
        }
        let marker = Array("REFUSED-300KiB-REFUSED".utf8)
        #expect(!records.contains { $0.payload.count == refused.count || contains($0.payload, marker) })
        let info = try info(on: c)
        #expect(info["last_lsn"] as? UInt64 == last + 1 && info["first_lsn"] as? UInt64 == first, "\(info)")
        // Nor on disk: what reached a segment file of the refused write was zeroed.
        for name in try FileManager.default.contentsOfDirectory(atPath: data) {
            let bytes = Array(FileManager.default.contents(atPath: data + "/" + name) ?? Data())
            #expect(!contains(bytes, marker), "\(name) still holds bytes of the refused append")
        }
        #expect(wald.stop(signal: SIGTERM) == 0)
    }
}

/// Whether `needle` occurs in `haystack`.
private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count <= haystack.count, let head = needle.first else { return needle.isEmpty }
    var index = 0
    while index <= haystack.count - needle.count {
        if haystack[index] == head && haystack[index..<(index + needle.count)].elementsEqual(needle) { return true }
        index += 1
    }
    return false
}
