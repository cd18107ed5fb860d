// One client connection: a non-blocking socket with a read and a write DispatchSource on
// the server's I/O queue. Reads parse every complete frame (or line) and queue the requests;
// one task per connection at a time runs them in order, so responses keep request order
// while different connections proceed in parallel. Output that the client does not read
// stops further reading (backpressure) instead of growing without bound.
import Dispatch
import DequeModule
import Synchronization
import WALCore
import WALProtocol

final class Connection: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is inside `state` (a Mutex). The two sources are
    // created in init and afterwards only resumed, suspended or cancelled while holding that
    // lock, with `readSuspended`/`writeArmed` tracking their suspension counts exactly.

    enum Mode { case undecided, binary, text }

    enum Item {
        case request(Request)
        /// A protocol error to answer in order; closes the connection when the error says so.
        case failure(ProtocolError)
    }

    struct State {
        var mode: Mode = .undecided
        var input: [UInt8] = []
        var output: [UInt8] = []
        var outputSent = 0
        var pending: Deque<Item> = []
        /// Bytes of the frames or lines in `pending`: reading stops above `maxOutputBytes`, so
        /// a client that pipelines large frames while its requests wait (a slow fsync) holds
        /// at most that much besides the batch being handled, not 1024 frames of 16 MiB.
        var pendingBytes = 0
        var processing = false
        var readSuspended = false
        var writeArmed = false
        var stopReading = false
        var endOfInput = false
        var closing = false
        var closed = false
        var authenticated = false
        var following = false
        var followTask: Task<Void, Never>?
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var outputPending: Int { output.count - outputSent }
    }

    let id: Int
    let fd: Int32
    let peer: String
    let server: ServerCore
    let state = Mutex(State())
    private let readSource: any DispatchSourceRead
    private let writeSource: any DispatchSourceWrite
    private let cancelledSources = Mutex(0)

    init(id: Int, fd: Int32, peer: String, server: ServerCore) {
        self.id = id
        self.fd = fd
        self.peer = peer
        self.server = server
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: server.ioQueue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: server.ioQueue)
    }

    /// Installs the handlers and starts reading. Called once, on the I/O queue.
    func start() {
        let cancelHandler: @Sendable () -> Void = { [self] in
            let both = cancelledSources.withLock { count -> Bool in
                count += 1
                return count == 2
            }
            if both { SocketCalls.close(fd) }
        }
        readSource.setEventHandler { [self] in handleReadable() }
        readSource.setCancelHandler(handler: cancelHandler)
        writeSource.setEventHandler { [self] in handleWritable() }
        writeSource.setCancelHandler(handler: cancelHandler)
        readSource.resume()
    }

    // MARK: Reading

    private func handleReadable() {
        let buffer = server.readBuffer
        var startTask = false
        var failed: Int32?
        state.withLock { s in
            guard !s.closed, !s.stopReading else { return }
            reading: for _ in 0..<16 {
                switch SocketCalls.read(fd, into: buffer) {
                case .bytes(let n):
                    s.input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                    parse(&s)
                    // Read on after a short read, until EAGAIN: a reset that arrives with the
                    // last bytes is reported only once (EPOLLHUP), so stopping here would leave
                    // the connection open, and counted against max_connections, forever.
                    if s.stopReading { break reading }
                case .wouldBlock:
                    break reading
                case .endOfFile:
                    s.endOfInput = true
                    s.stopReading = true
                    break reading
                case .failed(let code):
                    failed = code
                    return
                }
            }
            let limit = server.options.maxOutputBytes
            if s.stopReading || s.pending.count >= 1024 || s.pendingBytes >= limit || s.outputPending >= limit {
                suspendReading(&s)
            }
            if !s.pending.isEmpty && !s.processing {
                s.processing = true
                startTask = true
            }
            // Closing, not closed: closeIfDone waits for the output. (Requiring no output here
            // left a client that half-closed while its last replies were queued open forever:
            // nothing else sets `closing` once processing is over. Found by the session fuzzer.)
            if s.endOfInput && !s.processing && s.pending.isEmpty && !s.following {
                s.closing = true
            }
        }
        let followerLeft = state.withLock { $0.following && $0.endOfInput }
        if failed != nil { close(); return }
        // The stream ends, but what was already queued is written whole: an abrupt close could
        // cut a record in half (found by the session fuzzer).
        if followerLeft { closeGracefully(); return }
        if startTask { Task { await self.processPending() } }
        closeIfDone()
    }

    /// Turns complete frames or lines in `input` into pending items.
    private func parse(_ s: inout State) {
        if s.mode == .undecided, let first = s.input.first {
            if first == 0 {
                s.mode = .binary
            } else if (first >= 65 && first <= 90) || (first >= 97 && first <= 122) {
                s.mode = .text
            } else {
                s.mode = .text
                s.pending.append(.failure(ProtocolError(.badRequest,
                    "expected a binary frame (first byte 0x00) or a text command", closesConnection: true)))
                s.stopReading = true
                s.input.removeAll()
                return
            }
        }
        var consumed = 0
        let limit = server.options.maxFrameBytes
        while !s.stopReading {
            let rest = s.input[consumed...]
            do {
                switch s.mode {
                case .binary:
                    guard let (frame, used) = try BinaryCodec.nextFrame(in: rest, maxFrameLength: limit) else { break }
                    consumed += used
                    s.pendingBytes += used
                    do {
                        s.pending.append(.request(try BinaryCodec.decodeRequest(frame)))
                    } catch {
                        s.pending.append(.failure(error))
                        if error.closesConnection { s.stopReading = true }
                    }
                    continue
                case .text:
                    guard let (line, used) = try TextCodec.nextLine(in: rest) else { break }
                    consumed += used
                    s.pendingBytes += used
                    do {
                        s.pending.append(.request(try TextCodec.parse(line)))
                    } catch {
                        s.pending.append(.failure(error))
                    }
                    continue
                case .undecided:
                    break
                }
            } catch {
                s.pending.append(.failure(error))
                s.stopReading = true
            }
            break
        }
        if s.stopReading {
            s.input = []
        } else if consumed > 0 {
            // A new array for the leftover: parsed requests keep slices of the old storage.
            s.input = Array(s.input[consumed...])
        }
    }

    private func suspendReading(_ s: inout State) {
        guard !s.readSuspended, !s.closed else { return }
        s.readSuspended = true
        readSource.suspend()
    }

    private func resumeReadingIfAllowed(_ s: inout State) {
        guard s.readSuspended, !s.closed, !s.stopReading else { return }
        let limit = server.options.maxOutputBytes
        guard s.pending.count < 512, s.pendingBytes < limit / 2, s.outputPending < limit / 2 else { return }
        s.readSuspended = false
        readSource.resume()
    }

    // MARK: Processing

    private func processPending() async {
        var followerLeft = false
        while true {
            let batch = state.withLock { s -> [Item]? in
                guard !s.pending.isEmpty, !s.closed else {
                    s.processing = false
                    if s.endOfInput && !s.following { s.closing = true }
                    // End of input that arrived with (or before) the REPLAY FOLLOW itself:
                    // handleReadable saw no follow stream yet and no read event comes again,
                    // so the follower has left now (fuzz target `session` found this hang).
                    followerLeft = s.endOfInput && s.following
                    return nil
                }
                let items = Array(s.pending)
                s.pending.removeAll()
                s.pendingBytes = 0
                resumeReadingIfAllowed(&s)
                return items
            }
            guard let batch else { break }
            await handle(batch)
        }
        if followerLeft { closeGracefully() }
        closeIfDone()
    }

    // MARK: Writing

    /// Queues `bytes` for the client, writing at once when nothing is queued before them.
    func send(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        var failed = false
        state.withLock { s in
            guard !s.closed else { return }
            var start = 0
            if s.outputPending == 0 {
                let outcome = bytes.withUnsafeBytes { SocketCalls.write(fd, $0) }
                switch outcome {
                case .wrote(let n): start = n
                case .wouldBlock: break
                case .failed: failed = true; return
                }
                if start == bytes.count { return }
                s.output.removeAll(keepingCapacity: true)
                s.outputSent = 0
            }
            s.output.append(contentsOf: bytes[start...])
            if !s.writeArmed {
                s.writeArmed = true
                writeSource.resume()
            }
            if s.outputPending >= server.options.maxOutputBytes { suspendReading(&s) }
        }
        if failed { close() }
    }

    private func handleWritable() {
        var failed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        state.withLock { s in
            guard !s.closed else { return }
            while s.outputPending > 0 {
                let outcome = s.output.withUnsafeBytes { SocketCalls.write(fd, UnsafeRawBufferPointer(rebasing: $0[s.outputSent...])) }
                if case .wrote(let n) = outcome { s.outputSent += n; continue }
                if case .failed = outcome { failed = true }
                break
            }
            if s.outputPending == 0 {
                s.output.removeAll(keepingCapacity: s.output.capacity <= 1 << 20)
                s.outputSent = 0
                if s.writeArmed {
                    s.writeArmed = false
                    writeSource.suspend()
                }
            } else if s.outputSent >= 1 << 20 {
                s.output.removeFirst(s.outputSent)
                s.outputSent = 0
            }
            if s.outputPending <= server.options.maxOutputBytes / 2 {
                waiters = s.drainWaiters
                s.drainWaiters.removeAll()
                resumeReadingIfAllowed(&s)
            }
        }
        for waiter in waiters { waiter.resume() }
        if failed { close() } else { closeIfDone() }
    }

    /// Suspends the caller until the client has read enough of its output (replay streams).
    func waitForOutputRoom() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Bool in
                if s.closed || s.outputPending <= server.options.maxOutputBytes / 2 { return true }
                s.drainWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    var stateDescription: String {
        state.withLock { s in
            "connection \(id) \(s.mode): pending=\(s.pending.count) processing=\(s.processing) "
                + "output_pending=\(s.outputPending) write_armed=\(s.writeArmed) drain_waiters=\(s.drainWaiters.count) "
                + "read_suspended=\(s.readSuspended) stop_reading=\(s.stopReading) end_of_input=\(s.endOfInput) "
                + "following=\(s.following) closing=\(s.closing) closed=\(s.closed)"
        }
    }

    // MARK: Closing

    /// Stops reading and closes once queued requests are answered and output is written
    /// (after a framing error, QUIT, or at shutdown). Gives up on a client that does not
    /// read after `timeout`.
    func closeGracefully(timeout: DispatchTimeInterval = .seconds(5)) {
        state.withLock { s in
            s.stopReading = true
            s.closing = true
            s.followTask?.cancel()
            suspendReading(&s)
        }
        closeIfDone()
        server.ioQueue.asyncAfter(deadline: .now() + timeout) { [self] in close() }
    }

    private func closeIfDone() {
        let done = state.withLock { s in
            s.closing && !s.closed && !s.processing && s.pending.isEmpty && s.outputPending == 0
        }
        if done { close() }
    }

    /// Closes now: cancels both sources (the fd is closed when both cancellations finish).
    func close() {
        var waiters: [CheckedContinuation<Void, Never>] = []
        let wasOpen = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.closed = true
            if s.readSuspended { s.readSuspended = false; readSource.resume() }
            if !s.writeArmed { s.writeArmed = true; writeSource.resume() }
            readSource.cancel()
            writeSource.cancel()
            s.followTask?.cancel()
            waiters = s.drainWaiters
            s.drainWaiters.removeAll()
            return true
        }
        for waiter in waiters { waiter.resume() }
        if wasOpen { server.connectionClosed(self) }
    }
}
