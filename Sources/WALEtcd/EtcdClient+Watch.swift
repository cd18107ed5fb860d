// Watches: one long-lived `POST /v3/watch` per stream, its newline-delimited JSON messages turned into events.
//
// The gateway keeps the response open and writes one JSON object and "\n" per WatchResponse (seen on
// etcd 3.4.23: `{"result":{"header":{...},"created":true}}`, then `{"result":{...,"events":[...]}}`); an
// HTTP chunk may hold part of an object or several. It never closes the stream by itself, not even after
// cancelling the watch, so a cancel message ends the stream here.
import AsyncHTTPClient
import Foundation
import NIOCore

extension EtcdClient {
    /// Streams the changes of `key` (or, with `prefix`, of every key starting with `key`) from
    /// `startRevision`, via `POST /v3/watch` with `{"create_request":{...,"progress_notify":true}}`.
    ///
    /// - Parameters:
    ///   - startRevision: the first revision to report; 0 = changes after the watch is created. To miss
    ///     nothing after a read at revision R, watch from R + 1: etcd replays history from there.
    /// - Returns: the events in revision order. Only connecting is bounded by `requestTimeout`; an open
    ///   watch has no timeout (etcd's progress notifications, sent about every 10 minutes when idle, are
    ///   read and dropped). The stream ends by throwing, never by finishing, unless the consumer stops:
    ///   ``EtcdError/compacted(_:)`` when `startRevision` was compacted away;
    ///   ``EtcdError/unreachable(endpoints:lastError:)`` when no endpoint answers or the connection breaks
    ///   or closes (e.g. etcd was stopped); `.status` when etcd refuses or cancels the watch; `.malformed`.
    ///   Then re-read and watch again. Cancelling the consuming task (or dropping the stream) closes the
    ///   HTTP request. A member that hangs without closing the connection (a stopped process, a network
    ///   partition that drops packets) leaves its watches silent, not failed: liveness comes from the
    ///   bounded calls (lease renewals), not from a watch.
    public func watch(key: String, prefix: Bool = false, startRevision: Int64 = 0) -> AsyncThrowingStream<
        EtcdWatchEvent, Error
    > {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: EtcdWatchEvent.self, throwing: Error.self)
        let create = WatchCreateRequest(
            create_request: .init(
                key: base64(key),
                range_end: prefix ? base64(prefixRangeEnd(key)) : nil,
                start_revision: startRevision > 0 ? GatewayInt64(startRevision) : nil,
                progress_notify: true))
        // The one unstructured task of this module: it feeds a stream the caller consumes at its own pace,
        // and lives exactly as long as the stream (onTermination cancels it).
        let task = Task {
            do {
                try await self.runWatch(create) { continuation.yield($0) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Opens the watch on the first endpoint that answers, then delivers events until the stream breaks.
    /// Returns normally only when cancelled.
    func runWatch(_ create: WatchCreateRequest, deliver: (EtcdWatchEvent) -> Void) async throws {
        let payload = Array(try JSONEncoder().encode(create))
        let start = preferred.withLock { $0 }
        var lastError = ""
        for attempt in 0..<endpoints.count {
            let index = (start + attempt) % endpoints.count
            let endpoint = endpoints[index]
            var request = HTTPClientRequest(url: endpoint + "/v3/watch")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            let response: HTTPClientResponse
            do {
                // The deadline covers the response head only: the body streams for as long as the watch lives.
                response = try await http.execute(request, deadline: .now() + .nanoseconds(Self.nanoseconds(requestTimeout)))
            } catch {
                if Task.isCancelled { return }
                lastError = "\(endpoint): \(error)"
                continue
            }
            if index != start { preferred.withLock { $0 = index } }
            guard response.status == .ok else {
                let bytes = (try? await response.body.collect(upTo: 1 << 16)).map { Array(buffer: $0) } ?? []
                let message =
                    (try? JSONDecoder().decode(GatewayErrorBody.self, from: Data(bytes)))?.message
                    ?? String(decoding: bytes.prefix(200), as: UTF8.self)
                throw EtcdError.status(httpCode: Int(response.status.code), message: message)
            }
            try await readWatchStream(response.body, endpoint: endpoint, deliver: deliver)
            return
        }
        throw EtcdError.unreachable(endpoints: endpoints, lastError: lastError)
    }

    func readWatchStream(
        _ body: HTTPClientResponse.Body, endpoint: String, deliver: (EtcdWatchEvent) -> Void
    ) async throws {
        var lines = JSONLineSplitter(maxLineBytes: Self.maxResponseBytes)
        do {
            for try await chunk in body {
                lines.append(chunk.readableBytesView)
                while let line = try lines.next() {
                    for event in try Self.watchEvents(line) { deliver(event) }
                }
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            if Task.isCancelled { return }
            throw EtcdError.unreachable(endpoints: [endpoint], lastError: "watch stream broken: \(error)")
        }
        if Task.isCancelled { return }
        if let rest = lines.remainder() {
            for event in try Self.watchEvents(rest) { deliver(event) }
        }
        throw EtcdError.unreachable(endpoints: [endpoint], lastError: "etcd closed the watch stream")
    }

    /// The events of one watch message; throws for a cancel, a compaction or an error message.
    static func watchEvents(_ line: ArraySlice<UInt8>) throws -> [EtcdWatchEvent] {
        let message = try decodeJSON(WatchStreamMessage.self, from: Array(line), context: "/v3/watch")
        if let error = message.error {
            throw EtcdError.status(httpCode: 200, message: error.message ?? "watch stream error")
        }
        guard let result = message.result else {
            throw EtcdError.malformed("/v3/watch: a message with neither \"result\" nor \"error\"")
        }
        if result.canceled ?? false {
            let compactRevision = result.compact_revision.orZero
            if compactRevision > 0 { throw EtcdError.compacted(compactRevision) }
            throw EtcdError.status(httpCode: 200, message: "etcd cancelled the watch: \(result.cancel_reason ?? "no reason given")")
        }
        return try (result.events ?? []).map { event in
            guard let kv = event.kv else { throw EtcdError.malformed("/v3/watch: an event without kv") }
            switch event.type ?? "PUT" {
            case "PUT": return .put(try kv.decoded())
            case "DELETE": return .delete(try kv.decoded())
            case let other: throw EtcdError.malformed("/v3/watch: unknown event type \"\(other.prefix(20))\"")
            }
        }
    }
}

/// Cuts a byte stream into "\n"-terminated lines (the gateway's message delimiter), whatever the chunking.
struct JSONLineSplitter {
    private var buffer: [UInt8] = []
    /// Start of the unread bytes in `buffer`; the consumed prefix is dropped when the next chunk arrives.
    private var readIndex = 0
    /// Where to resume looking for "\n" (bytes before it hold none).
    private var scanIndex = 0
    let maxLineBytes: Int

    init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    mutating func append(_ bytes: some Collection<UInt8>) {
        if readIndex > 0 {
            buffer.removeFirst(readIndex)
            scanIndex -= readIndex
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete line without its "\n" (blank lines skipped), or nil until more bytes arrive.
    mutating func next() throws -> ArraySlice<UInt8>? {
        while let newline = buffer[scanIndex...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer[readIndex..<newline]
            readIndex = newline + 1
            scanIndex = readIndex
            if !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { return line }
        }
        scanIndex = buffer.count
        if buffer.count - readIndex > maxLineBytes {
            throw EtcdError.malformed("/v3/watch: a message longer than \(maxLineBytes) bytes without a newline")
        }
        return nil
    }

    /// What is left after the last "\n", if anything but blanks.
    func remainder() -> ArraySlice<UInt8>? {
        let rest = buffer[readIndex...]
        return rest.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") })
            ? nil : rest
    }
}
