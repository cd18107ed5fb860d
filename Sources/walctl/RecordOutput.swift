// How `replay` and `dump` print records: the same four formats and the same JSON fields, so a
// script can read either. Text is binary-safe: a payload that is not printable UTF-8 (control
// bytes, a newline, invalid UTF-8), or that starts with `hex:` itself, is printed as
// `hex:<lowercase hex>`, so every record is exactly one line and no byte reaches the terminal raw.
import ArgumentParser
import WALCore

enum RecordFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json, raw, hex

    static let help = """
        Formats:
          text  one line per record: <lsn><TAB><payload>; the payload as it is when it is printable \
        UTF-8 (no control characters) and does not start with "hex:", otherwise hex:<lowercase hex>
          json  one object per line: {"lsn":N,"size":N,"crc32c":"0x…","payload_base64":"…"} \
        (crc32c of the payload)
          hex   one line per record: <lsn><TAB><lowercase hex of the payload>
          raw   the payload bytes only, records concatenated with no separator or length
        """

    func write(lsn: UInt64, payload: UnsafeRawBufferPointer, to output: OutputBuffer) {
        switch self {
        case .raw:
            output.append(payload)
        case .text:
            output.append(String(lsn))
            output.append(byte: UInt8(ascii: "\t"))
            if isPrintableUTF8(payload) && !payload.starts(with: hexPrefix) {
                output.append(payload)
            } else {
                output.append("hex:")
                output.append(hexString(payload))
            }
            output.append(byte: UInt8(ascii: "\n"))
        case .hex:
            output.append(String(lsn))
            output.append(byte: UInt8(ascii: "\t"))
            output.append(hexString(payload))
            output.append(byte: UInt8(ascii: "\n"))
        case .json:
            let crcHex = String(CRC32C.checksum(payload), radix: 16)
            output.append("{\"lsn\":\(lsn),\"size\":\(payload.count),\"crc32c\":\"0x")
            output.append(String(repeating: "0", count: 8 - crcHex.count) + crcHex)
            output.append("\",\"payload_base64\":\"")
            output.append(base64(payload))
            output.append("\"}\n")
        }
    }
}

private let hexPrefix = Array("hex:".utf8)

/// Valid UTF-8 with no control characters or line separators (which would break the
/// one-line-per-record layout or act on the terminal).
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
    return !text.unicodeScalars.contains {
        switch $0.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: true
        default: $0.value == 0xFFFD
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

func hexString(_ bytes: UnsafeRawBufferPointer) -> String {
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
