// `walctl dump`: prints the records of a log as text, JSON lines or raw payload bytes,
// reading payloads in place (zero copy) through LogReader.read.
import ArgumentParser
import WALCore

struct Dump: AsyncParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, raw
    }

    static let configuration = CommandConfiguration(
        abstract: "Print the records of a log.",
        discussion: """
            Opens the log like wald does: it takes the directory's LOCK file, so it fails with a \
            clear message while wald (or anything else) has the log open. Opening cuts a torn \
            tail left by a crash, exactly as wald would on its next start; nothing else is changed.

            Formats:
              text  one line per record: <lsn><TAB><payload>, the payload as UTF-8 when it is \
            valid and printable, otherwise hex:<lowercase hex>
              json  one JSON object per line: \
            {"lsn":N,"size":N,"crc32c":"0x…","payload_base64":"…"} (crc32c of the payload)
              raw   the payload bytes only, records concatenated with no separator or length
            """
    )

    @OptionGroup var data: DataDirectoryOptions

    @Option(help: "First LSN to print (default: the first in the log).")
    var from: UInt64?

    @Option(help: "Print at most this many records (default: all).")
    var count: Int?

    @Option(help: "Output format: text, json or raw.")
    var format: Format = .text

    func validate() throws {
        if let count, count < 0 { throw ValidationError("--count must not be negative") }
        if from == 0 { throw ValidationError("LSNs start at 1; omit --from to start at the first record") }
    }

    func run() async throws {
        _ = try data.requireSegments()
        let wal: WAL
        do { wal = try await WAL.open(data.walOptions()) } catch { fail("\(error)") }
        let status = wal.status
        if let from, from < status.firstLSN || from > status.lastLSN {
            try? await wal.close()
            let range = status.lastLSN < status.firstLSN ? "the log is empty" : "the log holds LSN \(status.firstLSN)...\(status.lastLSN)"
            fail("--from \(from) is out of range: \(range)")
        }
        if count == 0 {
            try? await wal.close()
            return
        }
        let output = OutputBuffer()
        let format = format
        do {
            let reader = try wal.reader(from: from ?? 0)
            try reader.read(maxCount: count ?? 0) { lsn, payload in
                Dump.write(lsn: lsn, payload: payload, format: format, to: output)
                return true
            }
        } catch {
            output.flush()
            try? await wal.close()
            fail("\(error)")
        }
        output.flush()
        try? await wal.close()
    }

    static func write(lsn: LSN, payload: UnsafeRawBufferPointer, format: Format, to output: OutputBuffer) {
        switch format {
        case .raw:
            output.append(payload)
        case .text:
            output.append(String(lsn))
            output.append(byte: UInt8(ascii: "\t"))
            if isPrintableUTF8(payload) {
                output.append(payload)
            } else {
                output.append("hex:")
                output.append(hex(payload))
            }
            output.append(byte: UInt8(ascii: "\n"))
        case .json:
            let crc = CRC32C.checksum(payload)
            let crcHex = String(crc, radix: 16)
            output.append("{\"lsn\":\(lsn),\"size\":\(payload.count),\"crc32c\":\"0x")
            output.append(String(repeating: "0", count: 8 - crcHex.count) + crcHex)
            output.append("\",\"payload_base64\":\"")
            output.append(base64(payload))
            output.append("\"}\n")
        }
    }
}

/// Valid UTF-8 with no control characters (which would break the one-line-per-record layout).
func isPrintableUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var sawOnlyASCIIPrintable = true
    for byte in bytes {
        if byte < 0x20 || byte == 0x7F { return false }
        if byte >= 0x80 { sawOnlyASCIIPrintable = false }
    }
    if sawOnlyASCIIPrintable { return true }
    let text = String(decoding: bytes, as: UTF8.self)
    // Decoding replaced invalid sequences with U+FFFD, changing the byte count or content.
    guard text.utf8.elementsEqual(bytes) else { return false }
    return !text.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.value == 0xFFFD }
}

private let hexDigits = Array("0123456789abcdef".utf8)

func hex(_ bytes: UnsafeRawBufferPointer) -> String {
    String(unsafeUninitializedCapacity: bytes.count * 2) { out in
        for (index, byte) in bytes.enumerated() {
            out[2 * index] = hexDigits[Int(byte >> 4)]
            out[2 * index + 1] = hexDigits[Int(byte & 0x0F)]
        }
        return bytes.count * 2
    }
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

/// Standard base64 (RFC 4648) with padding.
func base64(_ bytes: UnsafeRawBufferPointer) -> String {
    let length = (bytes.count + 2) / 3 * 4
    return String(unsafeUninitializedCapacity: length) { out in
        var o = 0
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out[o] = base64Alphabet[Int(n >> 18)]
            out[o + 1] = base64Alphabet[Int(n >> 12 & 63)]
            out[o + 2] = base64Alphabet[Int(n >> 6 & 63)]
            out[o + 3] = base64Alphabet[Int(n & 63)]
            i += 3
            o += 4
        }
        let rest = bytes.count - i
        if rest > 0 {
            var n = UInt32(bytes[i]) << 16
            if rest == 2 { n |= UInt32(bytes[i + 1]) << 8 }
            out[o] = base64Alphabet[Int(n >> 18)]
            out[o + 1] = base64Alphabet[Int(n >> 12 & 63)]
            out[o + 2] = rest == 2 ? base64Alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "=")
            out[o + 3] = UInt8(ascii: "=")
            o += 4
        }
        return o
    }
}
