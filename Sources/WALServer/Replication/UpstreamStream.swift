// A follower's stream from its upstream, on the event loop: the RECORD frames of a
// `REPLAY … FOLLOW` are read where they lie in the input buffer and appended under the
// upstream's LSNs with the turn's other writes; each durable event then sends one FEEDBACK
// with the local durable LSN (which is what the upstream's `min_sync_replicas` waits for)
// and pumps the follow streams this follower serves in turn. The handshake before it (same
// log? diverged? adopt an empty log's identity) is the replicator's, in the daemon. Over
// `--follow-tls` the socket arrives with its TLS handshake done, and the stream reads and writes
// through the session (Transport), like a server connection.
import Dispatch
import WALCore
import WALProtocol
import WALTLS
import WALSystem

/// Why a stream from the upstream ended.
public enum UpstreamError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The upstream sent an ERROR (OUT_OF_RANGE once retention dropped what this follower needs).
    case refused(code: ErrorCode, message: String)
    /// A record whose LSN is not the next one here.
    case gap(expected: LSN, received: LSN)
    /// Bytes that are not the protocol.
    case protocolViolation(String)
    /// The upstream closed the connection (or it failed: errno).
    case closed(errno: Int32?)
    /// The local log refused the record (failed, full disk).
    case local(String)
    /// Stopped on purpose (PROMOTE, shutdown).
    case stopped

    public var description: String {
        switch self {
        case .refused(let code, let message): "the upstream refused the stream: \(code.name) \(message)"
        case .gap(let expected, let received): "upstream sent LSN \(received), expected \(expected)"
        case .protocolViolation(let text): "the upstream broke the protocol: \(text)"
        case .closed(let errno?): "the connection to the upstream failed: \(SystemError.describe(errno: errno)) (errno \(errno))"
        case .closed(nil): "the upstream closed the follow stream"
        case .local(let text): "the local log refused a replicated record: \(text)"
        case .stopped: "following stopped"
        }
    }
}

final class UpstreamStream: @unchecked Sendable {
    // @unchecked Sendable: used only on the loop's queue, like Connection.

    let fd: Int32
    private var transport: Transport
    private var readQueued = false
    private let loop: ServerLoop
    private let readSource: any DispatchSourceRead
    private let writeSource: any DispatchSourceWrite
    private var cancelledSources = 0
    private var input = InputBuffer()
    private var output: [UInt8] = []
    private var sent = 0
    private var writeArmed = false
    /// The LSN the next record must carry.
    private var expected: LSN
    /// The durable LSN last reported in a FEEDBACK.
    private var acknowledged: LSN = 0
    private var finished: CheckedContinuation<Void, any Error>?
    private(set) var isClosed = false

    /// Starts the stream on the loop: sends `REPLAY from FOLLOW` and reads. `finished` is
    /// resumed once, when the stream ends (with why).
    init(fd: Int32, tls: TLSSession?, from lsn: LSN, loop: ServerLoop, finished: CheckedContinuation<Void, any Error>) {
        self.fd = fd
        transport = Transport(fd: fd, tls: tls)
        self.loop = loop
        expected = lsn
        self.finished = finished
        Sockets.setNonBlocking(fd)
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: loop.queue)
        let cancelHandler: @Sendable () -> Void = { [self] in
            cancelledSources += 1
            if cancelledSources == 2 { Sockets.close(fd) }
        }
        readSource.setEventHandler { [self] in handleReadable() }
        readSource.setCancelHandler(handler: cancelHandler)
        writeSource.setEventHandler { [self] in
            if transport.wantsWritable { handleReadable() }
            flushOutput()
        }
        writeSource.setCancelHandler(handler: cancelHandler)
        BinaryCodec.encode(Request.replay(from: lsn, maxCount: 0, follow: true), into: &output)
        flushOutput()
        readSource.resume()
    }

    private func handleReadable() {
        readQueued = false
        guard !isClosed else { return }
        let limit = ProtocolLimits.maxFrameLength + 4 + InputBuffer.initialCapacity
        reading: for _ in 0..<16 {
            let space = input.freeSpace(minimum: wantedRead, limit: limit)
            if space.count == 0 { break }
            switch transport.read(into: space) {
            case .bytes(let n): input.didRead(n)
            case .wouldBlock:
                if transport.wantsWritable { armWrite() }
                break reading
            case .endOfFile:
                end(.closed(errno: nil))
                return
            case .failed(let code):
                end(transport.failure.map { .protocolViolation($0) } ?? .closed(errno: code))
                return
            }
        }
        if transport.pending > 0 && !readQueued {
            // Decrypted bytes held inside TLS raise no read event.
            readQueued = true
            loop.queue.async { [self] in handleReadable() }
        }
        var appended = false
        while !isClosed {
            let bytes = input.bytes
            let length: Int
            do {
                guard let found = try FrameView.length(of: bytes, maxFrameLength: ProtocolLimits.maxFrameLength) else { break }
                length = found
            } catch {
                end(.protocolViolation(error.description))
                return
            }
            guard bytes.count >= 4 + length else { break }
            let frame = UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + length)])
            switch frame[0] {
            case Opcode.record.rawValue:
                guard frame.count >= 9 else {
                    end(.protocolViolation("RECORD frame of \(frame.count) bytes has no LSN"))
                    return
                }
                var lsn: UInt64 = 0
                for index in 1...8 { lsn = lsn << 8 | UInt64(frame[index]) }
                guard lsn == expected else {
                    end(.gap(expected: expected, received: lsn))
                    return
                }
                do {
                    try loop.wal.acceptReplicatedOnLoop(lsn: lsn, payload: UnsafeRawBufferPointer(rebasing: frame[9...]))
                } catch {
                    end(.local(error.description))
                    return
                }
                expected += 1
                appended = true
            case Opcode.error.rawValue:
                let response = try? BinaryCodec.decodeResponse(Frame(opcode: frame[0], body: ArraySlice(frame[1...])))
                if case .error(let code, let message) = response {
                    end(.refused(code: code, message: message))
                } else {
                    end(.protocolViolation("malformed ERROR frame"))
                }
                return
            default:
                end(.protocolViolation("unexpected frame 0x\(String(frame[0], radix: 16)) on a follow stream"))
                return
            }
            input.consume(4 + length)
        }
        input.shrinkIfIdle()
        if appended { loop.scheduleFlush() }
    }

    /// Room for the rest of a partly read frame, or 64 KiB.
    private var wantedRead: Int {
        if input.count >= 4, let length = try? FrameView.length(of: input.bytes, maxFrameLength: ProtocolLimits.maxFrameLength) {
            return max(64 * 1024, 4 + length - input.count)
        }
        return 64 * 1024
    }

    /// The local log is durable through `lsn`: tell the upstream (one FEEDBACK per event).
    func durable(through lsn: LSN) {
        guard !isClosed, lsn > acknowledged, lsn < expected else { return }
        acknowledged = lsn
        BinaryCodec.encode(Request.feedback(durableLSN: lsn), into: &output)
        flushOutput()
    }

    private func flushOutput() {
        guard !isClosed else { return }
        while sent < output.count {
            let outcome = output.withUnsafeBytes { transport.write(UnsafeRawBufferPointer(rebasing: $0[sent...])) }
            switch outcome {
            case .wrote(let n): sent += n
            case .wouldBlock:
                armWrite()
                return
            case .failed(let code):
                end(.closed(errno: code))
                return
            }
        }
        output.removeAll(keepingCapacity: true)
        sent = 0
        if writeArmed && !transport.wantsWritable {
            writeArmed = false
            writeSource.suspend()
        }
    }

    private func armWrite() {
        guard !writeArmed else { return }
        writeArmed = true
        writeSource.resume()
    }

    /// Ends the stream: closes the socket and tells whoever waits why.
    func end(_ reason: UpstreamError) {
        guard !isClosed else { return }
        isClosed = true
        transport.shutdown()
        if !writeArmed { writeSource.resume() }
        readSource.cancel()
        writeSource.cancel()
        loop.upstreamEnded(self)
        let finished = self.finished
        self.finished = nil
        finished?.resume(throwing: reason)
    }
}
