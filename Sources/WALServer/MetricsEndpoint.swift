// `--metrics-listen HOST:PORT`: a minimal HTTP/1.1 endpoint answering `GET /metrics` with
// the Prometheus text, one request per connection, on its own serial queue (`wald.metrics`),
// never on the event loop. With a token, a scrape must send `Authorization: Bearer <token>`
// (Prometheus's `authorization` / `bearer_token`), compared in constant time; else 401.
import Dispatch
import Synchronization
import WALSync
import WALSystem

public final class MetricsEndpoint: Sendable {
    private let queue = DispatchQueue(label: "wald.metrics")
    private let text: @Sendable () -> String
    private let state = WALMutex<[Source]>([])
    /// The bearer token scrapes must send; nil = none. Reloadable (`update(token:)`).
    private let token = WALMutex<String?>(nil)

    private struct Source: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe but not annotated; stored under `state`.
        let source: any DispatchSourceRead
    }

    public init(text: @escaping @Sendable () -> String, token: String? = nil) {
        self.text = text
        self.token.withLock { $0 = token }
    }

    /// Sets the token scrapes must send (SIGHUP).
    public func update(token: String?) {
        self.token.withLock { $0 = token }
    }

    /// Whether the request's headers carry `Authorization: Bearer <token>` (constant time in
    /// the token's bytes).
    private func authorized(_ request: [UInt8]) -> Bool {
        guard let token = token.withLock({ $0 }) else { return true }
        let expected = Array(token.utf8)
        let lines = String(decoding: request, as: UTF8.self).split(separator: "\r\n")
        guard let header = lines.first(where: { $0.lowercased().hasPrefix("authorization:") }) else { return false }
        let value = header.dropFirst("authorization:".count).drop(while: { $0 == " " })
        guard value.lowercased().hasPrefix("bearer ") else { return false }
        let candidate = Array(value.dropFirst("bearer ".count).utf8)
        var difference = UInt8(expected.count == candidate.count ? 0 : 1)
        for index in 0..<expected.count {
            difference |= expected[index] ^ (index < candidate.count ? candidate[index] : 0)
        }
        return difference == 0
    }

    /// Binds `address` (before the daemon opens its log: see `WALServer.bind`); pass the
    /// descriptor to `start(address:inherited:)`.
    public static func bind(_ address: Endpoint) throws -> Int32 {
        try Sockets.listen(address)
    }

    /// Listens on `address`, or on `inherited` (a socket-activated or pre-bound fd). Returns the bound address.
    @discardableResult
    public func start(address: Endpoint?, inherited: Int32? = nil) throws -> String {
        let fd: Int32
        if let inherited {
            Sockets.setNonBlocking(inherited)
            fd = inherited
        } else if let address {
            fd = try Sockets.listen(address)
        } else {
            return ""
        }
        let listener = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        listener.setEventHandler { [self] in
            while let (client, _) = Sockets.accept(fd) { serve(client) }
        }
        listener.setCancelHandler { Sockets.close(fd) }
        state.withLock { $0.append(Source(source: listener)) }
        listener.resume()
        return Sockets.localAddress(fd)
    }

    public func stop() {
        for entry in state.withLock({ list -> [Source] in defer { list.removeAll() }; return list }) {
            entry.source.cancel()
        }
    }

    /// Reads one request (up to 8 KiB, 5 s) and answers it, then closes.
    private func serve(_ fd: Int32) {
        let box = Source(source: DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue))
        let reader = box.source
        let request = WALMutex<[UInt8]>([])
        let done = WALMutex(false)
        let finish: @Sendable (String, String) -> Void = { status, body in
            guard done.withLock({ d in defer { d = true }; return !d }) else { return }
            let head = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
            let bytes = Array((head + body).utf8)
            Sockets.setBlocking(fd)
            _ = bytes.withUnsafeBytes { Sockets.write(fd, $0) }
            box.source.cancel()
        }
        reader.setEventHandler { [self, box] in
            var chunk = [UInt8](repeating: 0, count: 4096)
            let outcome = chunk.withUnsafeMutableBytes { Sockets.read(fd, into: $0) }
            switch outcome {
            case .bytes(let n):
                let complete = request.withLock { r -> [UInt8]? in
                    r.append(contentsOf: chunk[0..<n])
                    return r.count > 8192 || r.firstRange(of: [13, 10, 13, 10]) != nil ? r : nil
                }
                guard let complete else { return }
                let line = String(decoding: complete.prefix { $0 != 13 }, as: UTF8.self)
                if line.hasPrefix("GET /metrics ") || line == "GET /metrics" {
                    if authorized(complete) {
                        finish("200 OK", text())
                    } else {
                        finish("401 Unauthorized", "send Authorization: Bearer <metrics_token>\n")
                    }
                } else {
                    finish("404 Not Found", "only GET /metrics is served here\n")
                }
            case .wouldBlock:
                return
            case .endOfFile, .failed:
                done.withLock { $0 = true }
                box.source.cancel()
            }
        }
        reader.setCancelHandler { Sockets.close(fd) }
        reader.resume()
        queue.asyncAfter(deadline: .now() + 5) { finish("408 Request Timeout", "") }
    }
}
