// One client connection, owned by the event loop: a non-blocking socket with a read and a
// write DispatchSource on the loop's queue, its own input buffer (requests are parsed where
// they were read), and one output buffer that every reply is encoded into, in request order.
//
// A reply that may not go out yet (an APPENDED before its write or fdatasync, a SYNCED) is
// held behind a gate: the output is sent up to the first gate, and the WAL's events open
// gates from the front. So replies keep request order while requests behind a held append
// (a PING, a buffered append) are handled at once. Output a client does not read stops the
// handling of its requests, and then its reads (backpressure).
//
// On a TLS listener the same connection reads and writes through a TLSSession (`transport`):
// the handshake runs first, on the same sources, and must finish within
// `tlsHandshakeTimeout`; requests then see decrypted bytes in the same input buffer.
import Dispatch
import DequeModule
import WALCore
import WALProtocol
import WALTLS
import WALSystem

/// A held reply: bytes `start..<end` of a connection's output, sent once `lsn` is written or
/// durable (and acknowledged by `replicas` followers).
struct Gate {
    enum Condition: Equatable {
        case written
        case durable(replicas: Int)
    }

    var start: Int
    var end: Int
    let lsn: LSN
    /// The WAL epoch the records were accepted in (a refusal names it).
    let epoch: UInt64
    let condition: Condition
    /// When waiting for replicas gives up (UNAVAILABLE).
    let deadline: ContinuousClock.Instant?
}

final class Connection: @unchecked Sendable {
    // @unchecked Sendable: used only on the loop's queue (see ServerLoop); the Dispatch
    // sources are created in init and afterwards only resumed, suspended or cancelled there,
    // with `readSuspended`/`writeArmed` tracking their suspension counts exactly.

    enum Mode { case undecided, binary, text, resp }

    /// Why request handling waits.
    enum Blocker {
        /// A REPLAY stream is being sent; requests after it wait for its END.
        case replay
        /// PROMOTE runs (the replicator stops).
        case promote
        /// A TRUNCATE (or XTRIM) waits for its files to be deleted.
        case truncate
        /// An XREAD BLOCK or a WAIT waits (`respWait`).
        case respWait
    }

    let id: Int
    let fd: Int32
    let peer: String
    /// The peer's address without the port (what `max_connections_per_address` counts).
    let peerHost: String
    /// The socket's bytes, in clear or through TLS.
    var transport: Transport
    /// The last time bytes arrived (what `idle_timeout` measures).
    var lastRead = ContinuousClock.now
    /// Strong (a weak or unowned reference costs every retain of the loop a slow path); the
    /// loop forgets the connection when it closes.
    let loop: ServerLoop
    private let readSource: any DispatchSourceRead
    private let writeSource: any DispatchSourceWrite
    private var cancelledSources = 0

    var mode = Mode.undecided
    /// RESP only: protocol version, client name, durability, last append.
    var resp = RESPSession()
    /// RESP only: the XREAD BLOCK or WAIT this connection is parked on.
    var respWait: RESPWait?
    /// RESP only: the first LSN before an XTRIM that waits for its files (its reply counts from it).
    var respTrimFrom: LSN?
    var input = InputBuffer()
    var output: [UInt8] = []
    /// Bytes of `output` already written to the socket.
    var sent = 0
    var gates: Deque<Gate> = []
    /// Registered in `loop.gated` (kept in step with `gates` being non-empty).
    private var isGated = false
    /// What this connection may do: set by AUTH or a mapped client certificate; nil before
    /// (then only AUTH, PING and QUIT are served when authentication is configured).
    var role: Role?
    /// Who authenticated (a user's name, `default` for the auth token, `cn:NAME` for a certificate).
    var userName: String?
    /// Wrong tokens sent on this connection (see `authFailed`).
    var failedAuths = 0
    var blocked: Blocker?
    var stream: Stream?
    /// A barrier request (INFO, REPLAY, TRUNCATE, PROMOTE) waits for the held replies before it.
    var waitingForGates = false
    var readSuspended = false
    /// A read of bytes held inside TLS is queued on the loop.
    private var tlsReadQueued = false
    var writeArmed = false
    /// A stream pump is queued on the loop.
    var pumpScheduled = false
    /// The stream stopped because the output was at least half full: whatever `sendOutput`
    /// brings it below half (the write event, or the service pass of a FEEDBACK read in the
    /// same turn) queues the next pump. Before, only the write event pumped: a FEEDBACK pass
    /// that sent everything disarmed the write event, and the follow stream waited for the
    /// next durable event (none once appends stopped: the soak's followers stalled).
    var streamWaitsForRoom = false
    /// `service` is running (an event it causes asks for another pass instead of recursing).
    private var servicing = false
    private var serviceAgain = false
    /// No more read(2): end of input, a framing error, QUIT or shutdown.
    var stopReading = false
    var endOfInput = false
    /// Close once everything read has been answered and written.
    var closing = false
    var closed = false

    init(id: Int, fd: Int32, peer: String, peerHost: String, tls: TLSSession? = nil, loop: ServerLoop) {
        self.id = id
        self.fd = fd
        self.peer = peer
        self.peerHost = peerHost
        transport = Transport(fd: fd, tls: tls)
        self.loop = loop
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: loop.queue)
    }

    /// Installs the handlers and starts reading. On the loop, once.
    func start() {
        let cancelHandler: @Sendable () -> Void = { [self] in
            cancelledSources += 1
            if cancelledSources == 2 { Sockets.close(fd) }
        }
        readSource.setEventHandler { [self] in handleReadable() }
        readSource.setCancelHandler(handler: cancelHandler)
        writeSource.setEventHandler { [self] in handleWritable() }
        writeSource.setCancelHandler(handler: cancelHandler)
        readSource.resume()
        if transport.isTLS {
            // A client that never finishes its handshake holds a slot only this long.
            loop.queue.asyncAfter(deadline: .now() + options.tlsHandshakeTimeout.dispatchInterval) { [weak self] in
                guard let self, !self.closed, self.transport.isHandshaking else { return }
                self.loop.logger.info("TLS handshake timed out", metadata: ["peer": "\(self.peer)", "id": "\(self.id)"])
                self.close()
            }
        }
    }

    /// Runs the TLS handshake as far as the socket allows; false while it is not done (or failed).
    private func advanceHandshake() -> Bool {
        switch transport.handshake() {
        case .done:
            if transport.wantsWritable == false, sent >= sendLimit { disarmWrite() }
            loop.tlsHandshakeDone(self)
            return true
        case .waiting:
            if transport.wantsWritable { armWrite() } else { disarmWrite() }
            return false
        case .failed:
            loop.logger.info("TLS handshake failed", metadata: [
                "peer": "\(peer)", "id": "\(id)", "reason": "\(transport.failure ?? "unknown")",
            ])
            loop.metrics.tlsHandshakeFailed()
            close()
            return false
        }
    }

    var options: ServerOptions { loop.options }
    var wal: WAL { loop.wal }
    var isFollowing: Bool { if case .follow = stream { true } else { false } }

    // MARK: Reading

    /// The most a connection holds unparsed: one whole frame of the largest size plus a read.
    private var inputLimit: Int { options.maxFrameBytes + 4 + InputBuffer.initialCapacity }

    private func handleReadable() {
        tlsReadQueued = false
        guard !closed, !stopReading else { return }
        if transport.isHandshaking && !advanceHandshake() { return }
        // Read on until EAGAIN: a reset that arrives with the last bytes is reported only once
        // (EPOLLHUP), so stopping early would leave the connection open, and counted, forever.
        reading: for _ in 0..<16 {
            let space = input.freeSpace(minimum: wantedRead, limit: inputLimit)
            if space.count == 0 { break }
            switch transport.read(into: space) {
            case .bytes(let n):
                input.didRead(n)
                lastRead = .now
            case .wouldBlock:
                if transport.wantsWritable { armWrite() }
                break reading
            case .endOfFile:
                endOfInput = true
                stopReading = true
                break reading
            case .failed:
                if let reason = transport.failure {
                    loop.logger.info("TLS connection failed", metadata: ["peer": "\(peer)", "id": "\(id)", "reason": "\(reason)"])
                }
                close()
                return
            }
        }
        service()
        readPendingTLS()
    }

    /// Decrypted bytes held inside TLS raise no read event: read them on a later turn.
    private func readPendingTLS() {
        guard transport.pending > 0, !tlsReadQueued, !closed, !stopReading, !readSuspended else { return }
        tlsReadQueued = true
        loop.queue.async { [self] in handleReadable() }
    }

    /// Bytes the next read should have room for: the rest of a partly read binary frame, or 16 KiB.
    private var wantedRead: Int {
        if mode == .binary, input.count >= 4,
           let length = try? FrameView.length(of: input.bytes, maxFrameLength: options.maxFrameBytes) {
            return max(InputBuffer.initialCapacity, 4 + length - input.count)
        }
        return InputBuffer.initialCapacity
    }

    /// Handles what can be handled, sends what may be sent, decides whether to keep reading,
    /// and closes when done. Every event on the connection ends here.
    func service() {
        guard !closed else { return }
        if servicing {
            serviceAgain = true
            return
        }
        servicing = true
        defer { servicing = false }
        repeat {
            serviceAgain = false
            serviceOnce()
        } while serviceAgain && !closed
    }

    private func serviceOnce() {
        handleRequests()
        sendOutput()
        if closed { return }
        let limit = options.maxOutputBytes
        // A parked XREAD BLOCK or WAIT keeps reading, so a client that goes away is noticed
        // (requests it pipelined wait in the input buffer).
        let mayRead = !stopReading && input.count < inputLimit && outputPending < limit && gates.count < 1024
            && (blocked == nil || blocked == .respWait)
        if mayRead { resumeReading() } else { suspendReading() }
        if endOfInput && blocked == .respWait {
            // Like Redis, which frees a blocked client when it disconnects: no reply, no more requests.
            abandonRESPWait()
            input.removeAll()
            closing = true
        }
        if endOfInput && !closing && isIdle {
            if isFollowing {
                // The follower left: what is queued for it still goes out whole.
                closeGracefully()
                return
            }
            closing = true
        }
        closeIfDone()
    }

    /// Nothing left to answer: no complete request unread, nothing held, no stream running.
    private var isIdle: Bool {
        gates.isEmpty && blocked == nil && !hasCompleteRequest && !isReplaying
    }

    private var isReplaying: Bool {
        switch stream {
        case .replay, .resp: true
        default: false
        }
    }

    private func suspendReading() {
        guard !readSuspended, !closed else { return }
        readSuspended = true
        readSource.suspend()
    }

    private func resumeReading() {
        guard readSuspended, !closed else { return }
        readSuspended = false
        readSource.resume()
        readPendingTLS()
    }

    // MARK: Writing

    /// Output not yet written to the socket, held replies included.
    var outputPending: Int { output.count - sent }

    /// Where sending stops: the first held reply.
    private var sendLimit: Int { gates.first?.start ?? output.count }

    /// Writes the output up to the first gate; arms the write source for what the socket
    /// does not take now.
    func sendOutput() {
        guard !closed else { return }
        let limit = sendLimit
        while sent < limit {
            let outcome = output.withUnsafeBytes { transport.write(UnsafeRawBufferPointer(rebasing: $0[sent..<limit])) }
            switch outcome {
            case .wrote(let n): sent += n
            case .wouldBlock: break
            case .failed:
                close()
                return
            }
            if case .wouldBlock = outcome { break }
        }
        if sent == output.count {
            output.removeAll(keepingCapacity: output.capacity <= 1 << 20)
            sent = 0
        } else if sent >= 64 * 1024 {
            compactOutput()
        }
        if sent < sendLimit || transport.wantsWritable { armWrite() } else { disarmWrite() }
        if streamWaitsForRoom && outputPending < options.maxOutputBytes / 2 {
            streamWaitsForRoom = false
            schedulePump()
        }
    }

    /// Drops the written prefix of the output (gates move down with it).
    private func compactOutput() {
        guard sent > 0 else { return }
        output.removeSubrange(0..<sent)
        for index in gates.indices {
            gates[index].start -= sent
            gates[index].end -= sent
        }
        sent = 0
    }

    private func armWrite() {
        guard !writeArmed, !closed else { return }
        writeArmed = true
        writeSource.resume()
    }

    private func disarmWrite() {
        guard writeArmed, !closed else { return }
        writeArmed = false
        writeSource.suspend()
    }

    private func handleWritable() {
        guard !closed else { return }
        if transport.isHandshaking {
            // The handshake waited to write; once done, requests may already be waiting.
            if advanceHandshake() { handleReadable() }
            return
        }
        if transport.wantsWritable {
            // A TLS read waited for the socket to take bytes: read again.
            handleReadable()
            if closed { return }
        }
        sendOutput()
        if stream != nil { pumpStream() }
        service()
    }

    // MARK: Held replies

    /// Encodes `response` into the output, held until `lsn` is written or durable.
    func hold(_ condition: Gate.Condition, lsn: LSN, epoch: UInt64, encode: (inout [UInt8]) -> Void) {
        let start = output.count
        encode(&output)
        var deadline: ContinuousClock.Instant?
        if case .durable(let replicas) = condition, replicas > 0 {
            deadline = ContinuousClock.now + options.syncReplicaTimeout
        }
        let gate = Gate(start: start, end: output.count, lsn: lsn, epoch: epoch, condition: condition, deadline: deadline)
        if gates.isEmpty && loop.isSatisfied(gate) { return }
        gates.append(gate)
        if !isGated {
            isGated = true
            loop.gated[id] = self
        }
    }

    /// Sends the replies whose gates opened (or were turned into errors); resumes request
    /// handling once none is held.
    func releaseGates() {
        guard !closed else { return }
        while let first = gates.first, loop.isSatisfied(first) { gates.removeFirst() }
        if gates.isEmpty && isGated {
            isGated = false
            loop.gated[id] = nil
        }
        guard sent < sendLimit else { return }
        // Whoever waited for the last held reply runs again: a barrier request, a close, or an
        // EOF read while the reply was held (nothing else would look at it again: the
        // connection stayed open forever when the client half-closed right after an APPEND).
        if gates.isEmpty && (waitingForGates || closing || endOfInput) {
            waitingForGates = false
            service()
        } else {
            sendOutput()
        }
    }

    /// Replaces the held replies `reply` picks with that error reply (they stay in order).
    private func failGates(where reply: (Gate) -> Response?) {
        guard gates.contains(where: { reply($0) != nil }) else { return }
        compactOutput()
        var rebuilt: [UInt8] = []
        rebuilt.reserveCapacity(output.count)
        var kept: Deque<Gate> = []
        var cursor = 0
        for gate in gates {
            rebuilt.append(contentsOf: output[cursor..<gate.start])
            if let response = reply(gate) {
                encode(response, into: &rebuilt)
            } else {
                let start = rebuilt.count
                rebuilt.append(contentsOf: output[gate.start..<gate.end])
                kept.append(Gate(start: start, end: rebuilt.count, lsn: gate.lsn, epoch: gate.epoch,
                                 condition: gate.condition, deadline: gate.deadline))
            }
            cursor = gate.end
        }
        rebuilt.append(contentsOf: output[cursor...])
        output = rebuilt
        gates = kept
        releaseGates()
    }

    /// Records accepted in `epoch` with these LSNs will never be written: their replies become `response`.
    func refuse(epoch: UInt64, lsns: ClosedRange<LSN>, with response: Response) {
        failGates { $0.epoch == epoch && lsns.contains($0.lsn) ? response : nil }
    }

    /// The log failed: every held reply not yet satisfied becomes UNAVAILABLE. Records that
    /// were written but not synced may or may not have survived: the message says so.
    func failUnsatisfiedGates(with error: WALError) {
        let message = "\(error.description); the outcome of this append is unknown: after a restart, replay from your last acknowledged LSN to see whether it is in the log"
        failGates { loop.isSatisfied($0) ? nil : .error(.unavailable, message) }
    }

    /// The leader lease ran out (or was lost) while replies were held: none of them may be
    /// acknowledged any more. Each becomes UNAVAILABLE saying the outcome is unknown (the record
    /// may be in the log, and on the new leader, or cut when this server rejoins).
    func failGatesFenced(reason: String) {
        let message = "\(reason); the outcome of this append is unknown: replay on the leader from your last acknowledged LSN to see whether it is in the log"
        failGates { _ in .error(.unavailable, message) }
    }

    /// Durable appends that waited longer than `sync_replica_timeout` for followers fail.
    func expireReplicaWaits(now: ContinuousClock.Instant) {
        failGates { gate in
            guard let deadline = gate.deadline, now >= deadline, !loop.isSatisfied(gate),
                  case .durable(let replicas) = gate.condition else { return nil }
            let timeout = options.syncReplicaTimeout
            loop.syncReplicas.timedOut("no \(replicas) follower(s) acknowledged LSN \(gate.lsn) within \(timeout)")
            return .error(.unavailable, "timed out after \(timeout) waiting for \(replicas) sync replica(s) to acknowledge LSN \(gate.lsn)")
        }
        releaseGates()
    }

    func encode(_ response: Response, into out: inout [UInt8]) {
        switch mode {
        case .text: TextCodec.encode(response, into: &out)
        case .resp:
            // Only errors reach here (a held XADD refused or failed).
            if case .error(let code, let message) = response {
                if code == .readOnly { resp.writer.error(message, code: "READONLY", into: &out) } else {
                    resp.writer.error("\(code.name) \(message)", into: &out)
                }
            }
        case .binary, .undecided: BinaryCodec.encode(response, into: &out)
        }
    }

    /// Appends a reply that may go out at once (after any held before it).
    func reply(_ response: Response) {
        encode(response, into: &output)
    }

    // MARK: Closing

    var stateDescription: String {
        "connection \(id) \(mode): input=\(input.count) gates=\(gates.count) blocked=\(String(describing: blocked)) "
            + "stream=\(stream.map { "\($0)" } ?? "none") output_pending=\(outputPending) write_armed=\(writeArmed) "
            + "read_suspended=\(readSuspended) stop_reading=\(stopReading) end_of_input=\(endOfInput) "
            + "closing=\(closing) closed=\(closed) waiting_for_gates=\(waitingForGates) complete_request=\(hasCompleteRequest)"
    }

    /// Stops reading and closes once what was already read is answered and written (after a
    /// framing error, QUIT, or at shutdown); a follow stream ends after what it queued. Gives
    /// up on a client that does not read after `timeout`.
    func closeGracefully(timeout: DispatchTimeInterval = .seconds(5)) {
        guard !closed else { return }
        stopReading = true
        closing = true
        if isFollowing { endStream() }
        suspendReading()
        service()
        loop.queue.asyncAfter(deadline: .now() + timeout) { [self] in close() }
    }

    func closeIfDone() {
        guard closing, !closed, gates.isEmpty, blocked == nil, stream == nil || isFollowing, outputPending == 0 else { return }
        // Requests read before the close was decided are answered first.
        if hasCompleteRequest { return }
        close()
    }

    /// Closes now: cancels both sources (the descriptor is closed when both cancellations ran).
    func close() {
        guard !closed else { return }
        closed = true
        transport.shutdown()
        if readSuspended { readSuspended = false; readSource.resume() }
        if !writeArmed { writeArmed = true; writeSource.resume() }
        readSource.cancel()
        writeSource.cancel()
        if stream != nil { endStream() }
        gates.removeAll()
        isGated = false
        respWait = nil
        loop.connectionClosed(self)
    }
}
