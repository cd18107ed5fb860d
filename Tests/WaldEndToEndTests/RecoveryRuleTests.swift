// What a restarted wald does with damage at the end of its log, on real files: a page of
// unsynced records lost by a crash is cut by itself (nothing there was acknowledged as
// durable), and damage to records that were acknowledged is refused, never cut, with the
// file, offset and LSN named, also by `walctl verify`. The frames are version 2 (24-byte
// header, docs/format.md), so offsets below are computed from that.
import Foundation
import Testing
import WALClient
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct RecoveryRuleTests {
    static let frameHeader = 24
    static let segmentHeader = 64

    /// The newest segment file of a data directory.
    static func newestSegment(_ directory: String) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasPrefix("wal-") && $0.hasSuffix(".wal") }.sorted()
        return directory + "/" + names.last!
    }

    /// 10 durable appends of 300 bytes, then 30 buffered ones that are written but never
    /// synced (flush interval 1 h), then kill -9. A page of the unsynced part goes missing:
    /// the bytes from the end of LSN 10 to the next 4 KiB boundary are zero, LSN 14 onwards
    /// intact. wald used to refuse to start ("run walctl repair").
    @Test(.timeLimit(.minutes(1)))
    func aLostPageOfUnsyncedRecordsIsCutAtStartWithoutRepair() async throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-lostpage-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var wald = try WaldProcess(dataDirectory: directory, arguments: ["--flush-interval", "1h"])
        let client = try await WALClient.connect(endpoint(wald))
        for i in 0..<10 { try await client.append([UInt8](repeating: UInt8(i), count: 300)) }
        for i in 10..<40 { try await client.append([UInt8](repeating: UInt8(i), count: 300), buffered: true) }
        client.close()
        wald.stop(signal: SIGKILL)

        let path = try Self.newestSegment(directory)
        var bytes = Array(FileManager.default.contents(atPath: path)!)
        let endOf10 = Self.segmentHeader + 10 * (Self.frameHeader + 300)
        let page = (endOf10 / 4096 + 1) * 4096
        for i in endOf10..<page { bytes[i] = 0 }
        #expect(page < Self.segmentHeader + 14 * (Self.frameHeader + 300), "LSN 14 must start after the lost page")
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))

        wald = try WaldProcess(dataDirectory: directory)
        defer { wald.cleanup() }
        let info = try await WALClient.connect(endpoint(wald)).info()
        #expect(info.lastLSN == 10)
        let records = try await replayAll(endpoint(wald))
        #expect(records.map(\.payload) == (0..<10).map { [UInt8](repeating: UInt8($0), count: 300) })
        #expect(wald.stderrText.contains("cutting a torn tail"), "no log line says what was cut: \(wald.stderrText)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".torn.") }
        #expect(kept.count == 1, "no copy of the cut bytes: \(kept)")
        let next = try await WALClient.connect(endpoint(wald)).append([1])
        #expect(next == 11)
    }

    /// 5 durable appends, a clean stop (SIGTERM), one payload bit of LSN 5 flipped. wald used
    /// to open with last LSN 4 and hand LSN 5 to the next record, and `walctl verify` said ok.
    @Test(.timeLimit(.minutes(1)))
    func aFlippedBitInADurableRecordAfterACleanStopRefusesToStart() async throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-bitrot-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let wald = try WaldProcess(dataDirectory: directory)
        let client = try await WALClient.connect(endpoint(wald))
        for i in 1...5 { try await client.append(Array("record \(i)".utf8)) }
        client.close()
        #expect(wald.stop(signal: SIGTERM) == 0)

        let path = try Self.newestSegment(directory)
        var bytes = Array(FileManager.default.contents(atPath: path)!)
        // Records of 8 bytes: LSN 5's frame starts after four 32-byte frames.
        let lsn5 = Self.segmentHeader + 4 * (Self.frameHeader + 8)
        bytes[lsn5 + Self.frameHeader + 3] ^= 0x04
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))

        let restarted = try runTool("wald", ["--data-dir", directory, "--listen", "127.0.0.1:0"], timeout: 30)
        let message = restarted.stderr
        #expect(!restarted.timedOut && restarted.status != 0, "wald started on a log whose acknowledged LSN 5 is damaged")
        #expect(message.contains(path) && message.contains("byte \(lsn5)") && message.contains("LSN 5"),
                "the refusal does not name file, offset and LSN: \(message)")

        let verify = try runTool("walctl", ["verify", directory])
        #expect(!(verify.exitedNormally && verify.status == 0), "walctl verify said the log is fine: \(verify.stdout)\(verify.stderr)")
        #expect((verify.stdout + verify.stderr).contains("LSN 5"))
    }

    /// A segment whose header says first LSN 0 (`wal-00000000000000000000.wal`): wald and every
    /// walctl command that reads it trapped on an arithmetic overflow. It is a damaged header.
    @Test(.timeLimit(.minutes(1)))
    func aSegmentHeaderSayingFirstLSNZeroIsReportedNotATrap() async throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-lsnzero-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var header = [UInt8](repeating: 0, count: 64)
        header.replaceSubrange(0..<8, with: Array("WALDSEG".utf8) + [0])
        header[8] = 2  // version
        header[10] = 64  // header size
        for i in 16..<32 { header[i] = UInt8(i) }  // log id
        header[22] = 0x40; header[24] = 0x80  // RFC 4122 version 4, variant 1
        let crc = crc32c(header[0..<60])
        for i in 0..<4 { header[60 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let path = directory + "/wal-00000000000000000000.wal"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(header + [UInt8](repeating: 0, count: 4096))))

        let start = try runTool("wald", ["--data-dir", directory, "--listen", "127.0.0.1:0"], timeout: 30)
        let message = start.stderr
        #expect(start.status == 1 && start.exitedNormally, "wald: exited normally \(start.exitedNormally), status \(start.status)")
        #expect(message.contains("first LSN 0") && message.contains(path), "\(message)")
        for command in [["verify", directory], ["dump", directory]] {
            let result = try runTool("walctl", command)
            let output = result.stdout + result.stderr
            #expect(result.exitedNormally && result.status != 0, "walctl \(command[0]) exited \(result.status): \(output)")
            #expect(output.contains("first LSN 0"), "walctl \(command[0]): \(output)")
        }
    }
}

private func endpoint(_ wald: WaldProcess) -> Endpoint { .tcp(host: "127.0.0.1", port: wald.port) }

/// CRC32C (Castagnoli), bit by bit: the test computes a header's checksum on its own.
func crc32c(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
}
