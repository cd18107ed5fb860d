// What each request does. Runs on the connection's processing task, one batch at a time.
// Durable appends of a batch are written as one pipeline and acknowledged after a single
// wait for durability, so a pipelining client shares fsyncs with itself and with others.
import WALCore
import WALProtocol

extension Connection {
    /// A reply waiting to be sent: ready, or an APPENDED that needs `lsn` durable first.
    private enum Reply {
        case ready(Response)
        case durableAppend(first: LSN, count: UInt32)
    }

    func handle(_ items: [Item]) async {
        var replies: [Reply] = []
        var waitFor: LSN = 0
        let mode = state.withLock { $0.mode }

        for item in items {
            if isClosed { return }
            let request: Request
            switch item {
            case .failure(let error):
                replies.append(.ready(.error(error.code, error.message)))
                if error.closesConnection {
                    await flush(&replies, &waitFor, mode: mode)
                    closeGracefully()
                    return
                }
                continue
            case .request(let r):
                request = r
            }

            let (authenticated, following) = state.withLock { ($0.authenticated, $0.following) }
            if following {
                // A follower cannot hold more than this server made durable (found by fuzzing:
                // an LSN near 2^64 overflowed the hold arithmetic and crashed the server).
                let durable = server.wal.durableLSN
                if case .feedback(let lsn) = request, lsn <= durable {
                    server.recordFeedback(from: self, durableLSN: lsn)
                    continue
                }
                let message = if case .feedback(let lsn) = request {
                    "FEEDBACK \(lsn) is beyond the durable LSN \(durable)"
                } else {
                    "only FEEDBACK is accepted on a follow stream"
                }
                replies.append(.ready(.error(.badRequest, message)))
                await flush(&replies, &waitFor, mode: mode)
                closeGracefully()
                return
            }
            if server.authToken != nil && !authenticated {
                switch request {
                case .auth, .ping, .quit: break
                default:
                    replies.append(.ready(.error(.unauthorized, "authenticate first with AUTH <token>")))
                    continue
                }
            }

            switch request {
            case .append where server.replication.isFollower:
                let upstream = server.replication.upstream ?? "?"
                replies.append(.ready(.error(.readOnly, "this server is a read-only follower of \(upstream); append there")))
            case .append(let records, let buffered):
                // The WAL checks sizes before writing anything: an oversize record fails the
                // whole frame with TOO_LARGE and the connection stays open.
                do {
                    let first = try await server.wal.append(contentsOf: records, durability: .buffered)
                    let count = UInt32(records.count)
                    if buffered {
                        replies.append(.ready(.appended(firstLSN: first, count: count)))
                    } else {
                        replies.append(.durableAppend(first: first, count: count))
                        waitFor = first + UInt64(count) - 1
                    }
                } catch {
                    replies.append(.ready(errorResponse(error)))
                }
            case .sync:
                await flush(&replies, &waitFor, mode: mode)
                do {
                    replies.append(.ready(.synced(durableLSN: try await server.wal.sync())))
                } catch {
                    replies.append(.ready(errorResponse(error)))
                }
            case .info:
                await flush(&replies, &waitFor, mode: mode)
                replies.append(.ready(.info(json: await server.infoJSON())))
            case .ping(let bytes):
                replies.append(.ready(.pong(bytes)))
            case .truncate(let before):
                await flush(&replies, &waitFor, mode: mode)
                do {
                    replies.append(.ready(.truncated(firstLSN: try await server.wal.truncate(before: before))))
                } catch {
                    replies.append(.ready(errorResponse(error)))
                }
            case .feedback:
                replies.append(.ready(.error(.badRequest, "FEEDBACK is only valid on a follow stream")))
            case .auth(let token):
                if server.checkToken(token) {
                    state.withLock { $0.authenticated = true }
                    replies.append(.ready(.ok))
                } else {
                    replies.append(.ready(.error(.unauthorized, "wrong token")))
                }
            case .promote:
                await flush(&replies, &waitFor, mode: mode)
                await server.replication.promote()
                replies.append(.ready(.promoted(lastLSN: await server.wal.lastLSN)))
            case .quit:
                replies.append(.ready(.bye))
                await flush(&replies, &waitFor, mode: mode)
                closeGracefully()
                return
            case .metrics:
                replies.append(.ready(.metrics(server.metricsText())))
            case .replay(let from, let maxCount, let follow):
                await flush(&replies, &waitFor, mode: mode)
                let reader: LogReader
                do {
                    reader = try await server.wal.reader(from: from)
                } catch {
                    replies.append(.ready(errorResponse(error)))
                    continue
                }
                if follow {
                    server.followStarted(self, from: reader.nextLSN)
                    startFollowing(reader, maxCount: maxCount, mode: mode)
                } else {
                    await streamReplay(reader, maxCount: maxCount, mode: mode)
                }
            }
        }
        await flush(&replies, &waitFor, mode: mode)
    }

    /// Waits for the durability the queued APPENDED replies need, then sends every reply.
    private func flush(_ replies: inout [Reply], _ waitFor: inout LSN, mode: Mode) async {
        var failure: Response?
        if waitFor > 0 {
            do {
                try await server.wal.waitDurable(waitFor)
                let options = server.options
                try await server.syncReplicas.wait(for: waitFor, count: options.minSyncReplicas, timeout: options.syncReplicaTimeout)
            } catch {
                failure = errorResponse(error)
            }
            waitFor = 0
        }
        var out: [UInt8] = []
        for reply in replies {
            let response: Response = switch reply {
            case .ready(let response): response
            case .durableAppend(let first, let count): failure ?? .appended(firstLSN: first, count: count)
            }
            encode(response, mode: mode, into: &out)
        }
        replies.removeAll()
        send(out)
    }

    private func encode(_ response: Response, mode: Mode, into out: inout [UInt8]) {
        if mode == .binary { BinaryCodec.encode(response, into: &out) } else { TextCodec.encode(response, into: &out) }
    }

    /// Sends records up to the durable LSN (or `maxCount`), then END.
    private func streamReplay(_ reader: LogReader, maxCount: UInt64, mode: Mode) async {
        server.metrics.streamStarted(follow: false)
        defer { server.metrics.streamEnded(follow: false) }
        var remaining = maxCount == 0 ? UInt64.max : maxCount
        do {
            while remaining > 0 && !isClosed {
                let (out, count) = try encodeRecords(reader, upTo: remaining, mode: mode)
                if count == 0 { break }
                remaining -= UInt64(count)
                send(out)
                await waitForOutputRoom()
            }
            var out: [UInt8] = []
            encode(.end(nextLSN: reader.nextLSN), mode: mode, into: &out)
            send(out)
        } catch {
            var out: [UInt8] = []
            encode(errorResponse(error), mode: mode, into: &out)
            send(out)
        }
    }

    /// Streams durable records as they appear until the client closes. Only FEEDBACK is
    /// accepted from here on.
    private func startFollowing(_ reader: LogReader, maxCount: UInt64, mode: Mode) {
        // The reader is handed to the follow task and never touched by this one again.
        nonisolated(unsafe) let reader = reader
        let task = Task { [self] in
            server.metrics.streamStarted(follow: true)
            defer { server.metrics.streamEnded(follow: true) }
            var remaining = maxCount == 0 ? UInt64.max : maxCount
            do {
                while remaining > 0 && !Task.isCancelled && !isClosed {
                    let (out, count) = try encodeRecords(reader, upTo: remaining, mode: mode)
                    if count > 0 {
                        remaining -= UInt64(count)
                        send(out)
                        await waitForOutputRoom()
                        continue
                    }
                    _ = try await server.wal.waitForDurable(beyond: reader.nextLSN - 1)
                }
            } catch is CancellationError {
            } catch {
                var out: [UInt8] = []
                encode(errorResponse(error), mode: mode, into: &out)
                send(out)
                closeGracefully()
            }
        }
        state.withLock { s in
            s.following = true
            s.followTask = task
        }
    }

    /// Encodes up to 256 KiB of records (at most `limit`) into one buffer.
    private func encodeRecords(_ reader: LogReader, upTo limit: UInt64, mode: Mode) throws -> ([UInt8], Int) {
        var out: [UInt8] = []
        out.reserveCapacity(256 * 1024)
        let count = try reader.read(maxCount: Int(min(limit, 1 << 30))) { lsn, payload in
            if mode == .binary {
                BinaryCodec.encodeRecord(lsn: lsn, payload: payload, into: &out)
            } else {
                TextCodec.encodeRecord(lsn: lsn, payload: payload, into: &out)
            }
            return out.count < 256 * 1024
        }
        return (out, count)
    }

    func errorResponse(_ error: any Error) -> Response {
        if let timeout = error as? SyncReplicaTimeout { return .error(.unavailable, timeout.message) }
        guard let error = error as? WALError else { return .error(.unavailable, "\(error)") }
        switch error {
        case .recordTooLarge: return .error(.tooLarge, error.description)
        case .emptyBatch, .invalidOptions: return .error(.badRequest, error.description)
        case .outOfRange(let lsn, let first, let last):
            return .error(.outOfRange, "LSN \(lsn) is out of range; the first available LSN is \(first) and the last is \(last)")
        case .noSpace: return .error(.noSpace, error.description)
        case .closed, .failed, .io, .corruption, .locked: return .error(.unavailable, error.description)
        }
    }
}
