// What each request does, on the loop, in the order the client sent them. Binary APPEND and
// PING are read where they lie in the input buffer (the records go from there into the
// writer's buffer: one copy); other requests are decoded into a `Request`. A request that
// must see every earlier reply settled first (INFO, REPLAY, TRUNCATE, PROMOTE: a "barrier")
// waits in the input until the connection holds no reply.
import WALCore
import WALProtocol

extension Connection {
    /// Whether a request was handled or must wait (in the input, unconsumed).
    enum Outcome { case done, wait }

    /// Handles requests from the input until it is empty, a request waits, or the output is full.
    func handleRequests() {
        while !closed && !input.isEmpty {
            if blocked != nil || waitingForGates { return }
            if outputPending >= options.maxOutputBytes || gates.count >= 1024 { return }
            if mode == .undecided && !decideMode() { return }
            let consumed: Int? = switch mode {
            case .binary: handleBinaryFrame()
            case .text: handleTextLine()
            case .resp: handleRESPRequest()
            case .undecided: nil
            }
            guard let consumed else { return }
            input.consume(consumed)
        }
        input.shrinkIfIdle()
    }

    /// Whether the input holds a whole request not yet handled.
    var hasCompleteRequest: Bool {
        let bytes = input.bytes
        switch mode {
        case .undecided: return !bytes.isEmpty
        case .text: return bytes.contains(10)
        case .resp:
            var scratch: [Range<Int>] = []
            if case .needMore = RESPParser.parse(bytes, maxBulk: respMaxBulk, arguments: &scratch) { return false }
            return true
        case .binary:
            guard let length = try? FrameView.length(of: bytes, maxFrameLength: options.maxFrameBytes) else {
                return bytes.count >= 4  // a bad length is answered (and closes)
            }
            return bytes.count >= 4 + length
        }
    }

    /// The first byte picks the protocol: 0x00 binary, a letter text, `*` (a RESP array, what
    /// every Redis client sends) RESP, anything else an error.
    private func decideMode() -> Bool {
        let first = input.bytes[0]
        if first == 0 {
            mode = .binary
        } else if first == UInt8(ascii: "*") {
            mode = .resp
            resp.buffered = options.respBuffered
        } else if (first >= 65 && first <= 90) || (first >= 97 && first <= 122) {
            mode = .text
        } else {
            mode = .text
            protocolFailure(ProtocolError(.badRequest, "expected a binary frame (first byte 0x00) or a text command",
                                          closesConnection: true))
            return false
        }
        return true
    }

    /// Answers a decoding error; a framing error also ends the connection (the stream cannot
    /// be resynchronised): nothing more is read or parsed.
    private func protocolFailure(_ error: ProtocolError) {
        reply(.error(error.code, error.message))
        guard error.closesConnection else { return }
        input.removeAll()
        stopReading = true
        closing = true
        if isFollowing { endStream() }
    }

    // MARK: Binary

    /// Handles the frame at the front of the input; returns its size, or nil to wait.
    private func handleBinaryFrame() -> Int? {
        let bytes = input.bytes
        let length: Int
        do {
            guard let found = try FrameView.length(of: bytes, maxFrameLength: options.maxFrameBytes) else { return nil }
            length = found
        } catch {
            protocolFailure(error)
            return nil
        }
        guard bytes.count >= 4 + length else { return nil }
        let opcode = bytes[4]
        let body = UnsafeRawBufferPointer(rebasing: bytes[5..<(4 + length)])
        if stream != nil && isFollowing {
            followStreamFrame(opcode: opcode, body: body)
            return 4 + length
        }
        switch opcode {
        case Opcode.append.rawValue:
            if writerIsBacklogged { return nil }
            let parsed: (buffered: Bool, expectedLSN: UInt64?, count: Int, records: UnsafeRawBufferPointer)
            do {
                parsed = try FrameView.append(body: body)
            } catch {
                protocolFailure(error)
                return error.closesConnection ? nil : 4 + length
            }
            guard mayAppend() else { return 4 + length }
            do {
                let accepted = try wal.acceptOnLoop(LengthPrefixedRecords(bytes: parsed.records, count: parsed.count),
                                                    durable: !parsed.buffered, expectedLSN: parsed.expectedLSN)
                holdAppended(accepted, count: parsed.count, buffered: parsed.buffered)
            } catch {
                reply(Response.failure(error))
            }
        case Opcode.ping.rawValue:
            BinaryCodec.encodePong(body, into: &output)
        default:
            let request: Request
            do {
                request = try BinaryCodec.decodeRequest(Frame(opcode: opcode, body: ArraySlice(body)))
            } catch {
                protocolFailure(error)
                return error.closesConnection ? nil : 4 + length
            }
            if execute(request) == .wait { return nil }
        }
        return 4 + length
    }

    /// On a follow stream only FEEDBACK is accepted, with an LSN no higher than this server's
    /// durable one (an LSN near 2^64 once overflowed the follower-hold arithmetic).
    private func followStreamFrame(opcode: UInt8, body: UnsafeRawBufferPointer) {
        let request: Request
        do {
            request = try BinaryCodec.decodeRequest(Frame(opcode: opcode, body: ArraySlice(body)))
        } catch {
            protocolFailure(error)
            return
        }
        let durable = wal.durableLSN
        if case .feedback(let lsn) = request, lsn <= durable {
            loop.recordFeedback(from: self, durableLSN: lsn)
            return
        }
        let message = if case .feedback(let lsn) = request {
            "FEEDBACK \(lsn) is beyond the durable LSN \(durable)"
        } else {
            "only FEEDBACK is accepted on a follow stream"
        }
        reply(.error(.badRequest, message))
        input.removeAll()
        closeGracefully()
    }

    // MARK: Text

    /// Handles the line at the front of the input; returns its size with the line end, or nil.
    private func handleTextLine() -> Int? {
        let bytes = input.bytes
        let maxLine = ProtocolLimits.maxLineLength
        guard let newline = bytes.firstIndex(of: 10) else {
            if bytes.count > maxLine + 1 {
                protocolFailure(ProtocolError(.tooLarge, "line longer than \(maxLine) bytes", closesConnection: true))
            }
            return nil
        }
        var end = newline
        if end > 0 && bytes[end - 1] == 13 { end -= 1 }
        guard end <= maxLine else {
            protocolFailure(ProtocolError(.tooLarge, "line longer than \(maxLine) bytes", closesConnection: true))
            return nil
        }
        if isFollowing {
            reply(.error(.badRequest, "only FEEDBACK is accepted on a follow stream"))
            input.removeAll()
            closeGracefully()
            return nil
        }
        let request: Request
        do {
            request = try TextCodec.parse(ArraySlice(bytes[0..<end]))
        } catch {
            reply(.error(error.code, error.message))
            return newline + 1
        }
        if case .append = request, writerIsBacklogged { return nil }
        if execute(request) == .wait { return nil }
        return newline + 1
    }

    // MARK: Requests

    /// Runs one decoded request. Barriers return `.wait` while replies are held.
    private func execute(_ request: Request) -> Outcome {
        if case .ping = request {
            // Anyone may PING (a health check before AUTH).
        } else if let right = Right.needed(by: request), !permits(right) {
            return .done
        }
        switch request {
        case .info, .replay, .truncate, .promote:
            if !gates.isEmpty {
                waitingForGates = true
                return .wait
            }
        default: break
        }
        switch request {
        case .append(let records, let buffered, let expected):
            guard mayAppend() else { return .done }
            do {
                // Text APPEND and APPENDAT (one record), and any binary APPEND that was decoded.
                let accepted = try records.withContiguousRecords { try wal.acceptOnLoop($0, durable: !buffered, expectedLSN: expected) }
                holdAppended(accepted, count: records.count, buffered: buffered)
            } catch {
                reply(Response.failure(error))
            }
        case .sync:
            do {
                let target = try wal.syncTargetOnLoop()
                hold(.durable(replicas: 0), lsn: target, epoch: wal.epochOnLoop) { encode(.synced(durableLSN: target), into: &$0) }
                loop.scheduleFlush()
            } catch {
                reply(Response.failure(error))
            }
        case .info:
            reply(.info(json: loop.infoJSON(hidingAddresses: hidesAddresses)))
        case .ping(let bytes):
            reply(.pong(bytes))
        case .truncate(let before):
            do {
                let (first, token) = try wal.truncateOnLoop(before: before)
                if let token {
                    blocked = .truncate
                    loop.truncations[token] = self
                } else {
                    reply(.truncated(firstLSN: first))
                }
            } catch {
                reply(Response.failure(error))
            }
        case .feedback:
            reply(.error(.badRequest, "FEEDBACK is only valid on a follow stream"))
        case .auth(let token):
            if !loop.authRequired {
                reply(.ok)
            } else if let (role, name) = token.withUnsafeBytes({ loop.role(forToken: $0) }) {
                self.role = role
                userName = name
                reply(.ok)
            } else {
                reply(.error(.unauthorized, "wrong token"))
                authFailed()
            }
        case .promote:
            if loop.replication.isHighAvailability {
                // Two leaders would each hand out the same LSNs: under automatic failover only
                // the etcd lease makes a leader.
                reply(.error(.badRequest, "PROMOTE is refused under automatic failover (--ha-etcd): the member holding the "
                             + "leader lease in etcd leads; stop the leader to fail over"))
                return .done
            }
            blocked = .promote
            let (role, queue) = (loop.replication, loop.queue)
            Task { [self] in
                await role.promote()
                queue.async { [self] in promoted() }
            }
        case .quit:
            reply(.bye)
            input.removeAll()
            stopReading = true
            closing = true
        case .metrics:
            reply(.metrics(loop.metricsText()))
        case .replay(let from, let maxCount, let follow):
            let reader: LogReader
            do {
                reader = try wal.reader(from: from)
            } catch {
                reply(Response.failure(error))
                return .done
            }
            if follow { startFollowing(reader, maxCount: maxCount) } else { startReplay(reader, maxCount: maxCount) }
        }
        return .done
    }

    /// Appends are refused on a follower and before AUTH (answered here); true when allowed.
    private func mayAppend() -> Bool {
        guard permits(.append) else { return false }
        if let refusal = loop.replication.appendRefusal {
            reply(.error(.readOnly, refusal))
            return false
        }
        return true
    }

    /// The writer holds more unwritten bytes than it should (a rotation or erase is slow):
    /// stop taking appends until it reports `.writable`.
    private var writerIsBacklogged: Bool {
        guard loop.writerPaused, wal.backlogBytes >= loop.writerBacklogLimit else { return false }
        loop.waitingForWriter[id] = self
        return true
    }

    /// Queues APPENDED for accepted records, held until they are written (buffered) or durable
    /// and acknowledged by `min_sync_replicas` followers; the turn's write is scheduled.
    private func holdAppended(_ accepted: Accepted, count: Int, buffered: Bool) {
        let condition: Gate.Condition = buffered ? .written : .durable(replicas: options.minSyncReplicas)
        let mode = self.mode
        hold(condition, lsn: accepted.last, epoch: accepted.epoch) { out in
            if mode == .binary {
                BinaryCodec.encodeAppended(firstLSN: accepted.first, count: UInt32(count), into: &out)
            } else {
                TextCodec.encode(.appended(firstLSN: accepted.first, count: UInt32(count)), into: &out)
            }
        }
        loop.scheduleFlush()
    }

    /// PROMOTE finished (the replicator stopped).
    private func promoted() {
        guard !closed else { return }
        blocked = nil
        reply(.promoted(lastLSN: wal.lastLSN))
        service()
    }

    /// A TRUNCATE's (or XTRIM's) files are deleted (or could not be).
    func truncationDone(_ result: Result<LSN, WALError>) {
        guard !closed else { return }
        blocked = nil
        switch result {
        case .success(let first):
            if mode == .resp {
                resp.writer.integer(Int(clamping: first - min(first, respTrimFrom ?? first)), into: &output)
            } else {
                reply(.truncated(firstLSN: first))
            }
        case .failure(let error):
            if mode == .resp { writeRESPError(Response.failure(error)) } else { reply(Response.failure(error)) }
        }
        respTrimFrom = nil
        service()
    }

}

extension Array where Element == ArraySlice<UInt8> {
    /// Calls `body` with the records as one length-prefixed run (the layout the writer takes).
    fileprivate func withContiguousRecords<R>(_ body: (LengthPrefixedRecords) throws -> R) throws -> R {
        var packed: [UInt8] = []
        packed.reserveCapacity(reduce(0) { $0 + 4 + $1.count })
        for record in self {
            let length = UInt32(record.count)
            packed.append(contentsOf: [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)])
            packed.append(contentsOf: record)
        }
        return try packed.withUnsafeBytes { try body(LengthPrefixedRecords(bytes: $0, count: count)) }
    }
}
