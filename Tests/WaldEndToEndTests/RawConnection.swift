// A plain blocking TCP connection for sending exact bytes and reading exact replies, as a
// client that knows only docs/protocol.md would.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class RawConnection {
    let fd: Int32
    private var buffer: [UInt8] = []

    /// `source` binds the client end to another loopback address first (127.0.0.2 is another
    /// peer address as far as the server's per-address limit is concerned).
    init(port: UInt16, timeoutSeconds: Int = 20, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                throw RawError.connect(errno)
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw RawError.connect(errno) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Reads more bytes into the buffer; false at end of stream or timeout.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        if n <= 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// One reply line without its `\r\n`, or nil at end of stream.
    func readLine() -> String? {
        while true {
            if let index = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<index])
                buffer.removeFirst(index + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            if !fill() { return nil }
        }
    }

    func readBytes(_ count: Int) -> [UInt8]? {
        while buffer.count < count { if !fill() { return nil } }
        defer { buffer.removeFirst(count) }
        return Array(buffer[..<count])
    }

    /// One binary frame: (opcode, body), or nil at end of stream.
    func readFrame() -> (opcode: UInt8, body: [UInt8])? {
        guard let header = readBytes(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length >= 1, let rest = readBytes(length) else { return nil }
        return (rest[0], Array(rest[1...]))
    }

    /// True when the server has closed the connection (reads hit end of stream).
    func isClosedByPeer() -> Bool {
        while fill() {}
        return true
    }
}

enum RawError: Error { case connect(Int32) }

// Binary frame builders, straight from docs/protocol.md (big-endian).
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func be64(_ v: UInt64) -> [UInt8] { be32(UInt32(v >> 32)) + be32(UInt32(v & 0xFFFF_FFFF)) }
func frame(_ opcode: UInt8, _ body: [UInt8] = []) -> [UInt8] { be32(UInt32(1 + body.count)) + [opcode] + body }
func appendFrame(_ records: [[UInt8]], buffered: Bool = false) -> [UInt8] {
    var body: [UInt8] = [buffered ? 1 : 0] + be32(UInt32(records.count))
    for record in records { body += be32(UInt32(record.count)) + record }
    return frame(0x01, body)
}
func readU64(_ bytes: [UInt8], at offset: Int = 0) -> UInt64 {
    bytes[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) }
}
func errorCode(_ body: [UInt8]) -> UInt16 { UInt16(body[0]) << 8 | UInt16(body[1]) }

extension RawConnection {
    /// The METRICS reply of the text protocol (Prometheus text), without its `# EOF` line.
    func metricsText() -> String {
        send("METRICS\n")
        var text = ""
        while let line = readLine(), line != "# EOF" { text += line + "\n" }
        return text
    }
}
