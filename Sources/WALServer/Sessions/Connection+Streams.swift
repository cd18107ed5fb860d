// REPLAY and FOLLOW streams, on the loop. A stream is pumped one chunk (at most 256 KiB of
// records) at a time while the connection's output is less than half full, then yields to
// other events; once the output is half full, whatever sends it below half again (the write
// event as the client reads, or a follower's FEEDBACK read in the same turn) queues the next
// pump, and a follow stream that caught up is pumped by each durable event. Reads come from
// the segment files through a LogReader (from the page cache in the common case: a cold read
// blocks the loop for one disk read of at most a window).
import WALCore
import WALProtocol

/// Where a stream is and how much it may still send.
final class StreamCursor {
    let reader: LogReader
    /// Records still wanted (`UInt64.max`: no limit).
    var remaining: UInt64
    /// A replay ends after this LSN: the durable LSN when it was asked for. A follow stream has none.
    let end: LSN?

    init(reader: LogReader, remaining: UInt64, end: LSN?) {
        self.reader = reader
        self.remaining = remaining
        self.end = end
    }
}

enum Stream: CustomStringConvertible {
    case replay(StreamCursor)
    case follow(StreamCursor)
    /// XRANGE, XREVRANGE, XREAD (RESP).
    case resp(RESPRange)

    var description: String {
        switch self {
        case .replay(let c): "replay(next=\(c.reader.nextLSN))"
        case .follow(let c): "follow(next=\(c.reader.nextLSN))"
        case .resp(let range): range.description
        }
    }
}

extension Connection {
    /// The most one pump encodes before yielding the loop.
    static let streamChunkBytes = 256 * 1024

    /// Sends records up to the durable LSN of this moment (or `maxCount`), then END; requests
    /// after the REPLAY wait until then.
    func startReplay(_ reader: LogReader, maxCount: UInt64) {
        stream = .replay(StreamCursor(reader: reader, remaining: maxCount == 0 ? .max : maxCount, end: wal.durableLSN))
        blocked = .replay
        loop.streaming[id] = self
        loop.metrics.streamStarted(follow: false)
        pumpStream()
    }

    /// Streams durable records as they appear until the client closes. Only FEEDBACK is
    /// accepted from here on.
    func startFollowing(_ reader: LogReader, maxCount: UInt64) {
        stream = .follow(StreamCursor(reader: reader, remaining: maxCount == 0 ? .max : maxCount, end: nil))
        loop.followStarted(self, from: reader.nextLSN)
        loop.streaming[id] = self
        loop.metrics.streamStarted(follow: true)
        pumpStream()
    }

    /// The LSN the stream sends next.
    var streamPosition: LSN? {
        switch stream {
        case .replay(let cursor), .follow(let cursor): cursor.reader.nextLSN
        case .resp(let range): range.next
        case nil: nil
        }
    }

    /// Encodes one chunk of records when the output has room, and sends it.
    func pumpStream() {
        guard !closed, let stream else { return }
        guard outputPending < options.maxOutputBytes / 2 else {
            streamWaitsForRoom = true  // sendOutput pumps again once the output is below half
            return
        }
        let cursor: StreamCursor
        switch stream {
        case .replay(let c), .follow(let c): cursor = c
        case .resp(let range):
            pumpRESP(range)
            return
        }
        let reader = cursor.reader
        var wanted = cursor.remaining
        if let end = cursor.end { wanted = min(wanted, end >= reader.nextLSN ? end - reader.nextLSN + 1 : 0) }
        var count = 0
        do {
            if wanted > 0 {
                let start = output.count
                let binary = mode == .binary
                count = try reader.read(maxCount: Int(min(wanted, 1 << 30))) { lsn, payload in
                    if binary {
                        BinaryCodec.encodeRecord(lsn: lsn, payload: payload, into: &output)
                    } else {
                        TextCodec.encodeRecord(lsn: lsn, payload: payload, into: &output)
                    }
                    return output.count - start < Self.streamChunkBytes
                }
            }
        } catch {
            reply(Response.failure(error))
            endStream()
            if case .follow = stream {
                closeGracefully()
            } else {
                blocked = nil
                service()
            }
            return
        }
        if cursor.remaining != .max { cursor.remaining -= UInt64(count) }
        if case .replay = stream, cursor.remaining == 0 || cursor.end.map({ reader.nextLSN > $0 }) ?? false {
            reply(.end(nextLSN: reader.nextLSN))
            endStream()
            blocked = nil
            service()
            return
        }
        sendOutput()
        // More may be there: come back after the other events waiting on the loop, or once
        // the output has room again.
        if count > 0 { continueStream() }
    }

    /// After a chunk: pump again on a later turn when the output has room, else when
    /// `sendOutput` brings it below half.
    func continueStream() {
        if outputPending < options.maxOutputBytes / 2 {
            schedulePump()
        } else {
            streamWaitsForRoom = true
        }
    }

    /// Queues one pump on the loop (after the events already waiting), at most one at a time.
    func schedulePump() {
        guard !pumpScheduled, !closed else { return }
        pumpScheduled = true
        loop.queue.async { [self] in
            pumpScheduled = false
            pumpStream()
        }
    }

    /// Ends the stream (its records already queued still go out).
    func endStream() {
        guard let stream else { return }
        self.stream = nil
        loop.streaming[id] = nil
        switch stream {
        case .follow: loop.metrics.streamEnded(follow: true)
        case .replay: loop.metrics.streamEnded(follow: false)
        case .resp: break
        }
    }

    /// The stream fell more than `max_follower_hold_bytes` behind: it is dropped and its
    /// segments are no longer held (a follower gets OUT_OF_RANGE if it comes back too late).
    func dropLaggingStream(behind: Int, limit: Int) {
        endStream()
        close()
    }
}
