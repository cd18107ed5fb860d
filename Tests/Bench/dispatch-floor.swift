// The Dispatch floor: the "40-line Swift server" of issue 11 — one serial queue, one read source per
// connection — answering "PING\r\n" with "+PONG\r\n" and nothing else. What it costs per request is
// what any server built on Dispatch sources pays before it does any work. Not a SwiftPM target.
//
//   swiftc -O Tests/Bench/dispatch-floor.swift -o /tmp/dispatch-floor && /tmp/dispatch-floor 7101 &
//   redis-server --port 7102 --save '' --appendonly no &
//   .build/release/wald --listen 127.0.0.1:7103 --data-dir /tmp/floor-data &
//   python3 Tests/Bench/ping-rtt.py 7101 7102 7103
//
// 2026-11-29, 2 vCPUs (Firecracker), quiet: this server p50 64–66 µs, Redis 18–19 µs, wald 67–70 µs.
import Dispatch
import Glibc

let queue = DispatchQueue(label: "echo")
let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
var one: Int32 = 1
setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
var address = sockaddr_in()
address.sin_family = sa_family_t(AF_INET)
address.sin_port = in_port_t(UInt16(CommandLine.arguments[1])!).bigEndian
address.sin_addr.s_addr = inet_addr("127.0.0.1")
_ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
listen(listener, 128)
var sources: [Int32: DispatchSourceRead] = [:]
let accepter = DispatchSource.makeReadSource(fileDescriptor: listener, queue: queue)
accepter.setEventHandler {
    while true {
        let fd = accept(listener, nil, nil)
        if fd < 0 { return }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        var buffer = [UInt8](repeating: 0, count: 16384)
        let pong = Array("+PONG\r\n".utf8)
        source.setEventHandler {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { source.cancel(); close(fd); sources[fd] = nil; return }
            var count = 0
            for i in 0..<n where buffer[i] == 0x0A { count += 1 }
            var out: [UInt8] = []
            for _ in 0..<count { out += pong }
            _ = write(fd, out, out.count)
        }
        sources[fd] = source
        source.resume()
    }
}
accepter.resume()
dispatchMain()
