// Redis's protocol on the wald port (docs/protocol.md, "RESP"): the log is one stream, named
// by `resp_stream` (default `wal`), whose entries have the ID `<LSN>-0` and one field, `data`,
// holding the record. A RESP request takes the same path as a binary one: parsed where it lies
// in the input buffer, XADD's value copied once into the writer, the reply held behind a gate
// until the record is durable. Reply shapes and error texts are Redis 7's (t_stream.c,
// networking.c, server.c), so client libraries parse them unchanged.
import Dispatch
import WALCore
import WALProtocol

/// What a RESP connection remembers besides the common connection state.
struct RESPSession {
    var writer = RESPWriter(version: 2)
    var arguments: [Range<Int>] = []
    var name: String?
    /// `CLIENT WALD-DURABILITY buffered`: XADD answered once written instead of once durable.
    var buffered = false
    /// The last LSN this connection appended (what WAIT waits for).
    var lastAppend: LSN = 0
}

/// An XREAD BLOCK or a WAIT that waits on the loop.
final class RESPWait: @unchecked Sendable {
    // @unchecked Sendable: created, read and changed only on the loop's queue (like Connection).
    enum Kind {
        /// XREAD: entries from `start` on, at most `count`, answered under `key`.
        case read(start: LSN, count: UInt64, key: [UInt8])
        /// WAIT: `needed` followers acknowledging `lsn`.
        case replicas(lsn: LSN, needed: Int)
    }

    let kind: Kind
    var finished = false

    init(kind: Kind) { self.kind = kind }
}

extension Connection {
    // MARK: Parsing

    /// Handles the RESP request at the front of the input; returns its size, or nil to wait.
    func handleRESPRequest() -> Int? {
        let bytes = input.bytes
        switch RESPParser.parse(bytes, maxBulk: respMaxBulk, arguments: &resp.arguments) {
        case .needMore:
            // The input buffer holds one frame of max_frame_bytes: a request that does not fit
            // would wait forever for bytes the connection no longer reads.
            guard bytes.count > options.maxFrameBytes else { return nil }
            failRESP("Protocol error: request larger than max_frame_bytes (\(options.maxFrameBytes) bytes)")
            return nil
        case .error(let message):
            failRESP(message)
            return nil
        case .command(let consumed):
            guard consumed <= options.maxFrameBytes else {
                failRESP("Protocol error: request larger than max_frame_bytes (\(options.maxFrameBytes) bytes)")
                return nil
            }
            guard !resp.arguments.isEmpty else { return consumed }  // `*0`: nothing, as Redis
            if executeRESP(bytes) == .wait { return nil }
            return consumed
        }
    }

    /// The longest argument a RESP request may carry: the largest record plus room for the
    /// rest of an XADD (at least 65 KiB, for commands that carry no record).
    var respMaxBulk: Int { max(wal.options.maxRecordBytes, 64 * 1024) + 1024 }

    /// Like Redis on a protocol error: say why, then close; nothing after it can be trusted.
    private func failRESP(_ message: String) {
        resp.writer.error(message, into: &output)
        input.removeAll()
        stopReading = true
        closing = true
    }

    /// Argument `index` of the request being handled.
    private func argument(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[resp.arguments[index]])
    }

    private func text(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> String {
        String(decoding: argument(bytes, index), as: UTF8.self)
    }

    /// Whether argument `index` is `word`, ignoring ASCII case.
    private func argument(_ bytes: UnsafeRawBufferPointer, _ index: Int, is word: StaticString) -> Bool {
        let arg = argument(bytes, index)
        guard arg.count == word.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for i in 0..<arg.count where arg[i] | 0x20 != expected[i] | 0x20 { return false }
        return true
    }

    // MARK: Commands

    private func executeRESP(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let count = resp.arguments.count
        // The hot path first, without building a String.
        if argument(bytes, 0, is: "XADD") { return xadd(bytes) }
        let name = text(bytes, 0).lowercased()
        if loop.authRequired && role == nil && !["auth", "hello", "quit", "ping"].contains(name) {
            resp.writer.error("Authentication required.", code: "NOAUTH", into: &output)
            return .done
        }
        switch name {
        case "ping":
            guard count <= 2 else { return arity(name) }
            if count == 2 { resp.writer.bulk(argument(bytes, 1), into: &output) } else { resp.writer.simple("PONG", into: &output) }
        case "echo":
            guard count == 2 else { return arity(name) }
            resp.writer.bulk(argument(bytes, 1), into: &output)
        case "quit":
            resp.writer.simple("OK", into: &output)
            input.removeAll()
            stopReading = true
            closing = true
        case "hello": hello(bytes)
        case "auth":
            guard count == 2 || count == 3 else { return arity(name) }
            auth(user: count == 3 ? text(bytes, 1) : "default", password: argument(bytes, count - 1))
        case "select":
            guard count == 2 else { return arity(name) }
            if text(bytes, 1) == "0" { resp.writer.simple("OK", into: &output) } else {
                resp.writer.error("DB index is out of range", into: &output)
            }
        case "client": client(bytes)
        case "command": command(bytes)
        case "config": config(bytes)
        case "dbsize": resp.writer.integer(1, into: &output)
        case "info":
            if !gates.isEmpty {
                waitingForGates = true
                return .wait
            }
            resp.writer.verbatim(infoText(), into: &output)
        case "type":
            guard count == 2 else { return arity(name) }
            resp.writer.simple(isStreamKey(argument(bytes, 1)) ? "stream" : "none", into: &output)
        case "exists":
            guard count >= 2 else { return arity(name) }
            resp.writer.integer((1..<count).filter { isStreamKey(argument(bytes, $0)) }.count, into: &output)
        case "xlen":
            guard count == 2 else { return arity(name) }
            guard checkKey(bytes, 1) else { return .done }
            let (first, durable) = (wal.status.firstLSN, wal.durableLSN)
            resp.writer.integer(durable >= first ? Int(clamping: durable - first + 1) : 0, into: &output)
        case "xrange", "xrevrange", "xread", "xinfo", "xtrim", "wait":
            // They read what earlier requests on this connection wrote: wait for those replies.
            if !gates.isEmpty {
                waitingForGates = true
                return .wait
            }
            switch name {
            case "xrange": xrange(bytes, reverse: false)
            case "xrevrange": xrange(bytes, reverse: true)
            case "xread": xread(bytes)
            case "xinfo": xinfo(bytes)
            case "xtrim": if permits(.truncate, command: "xtrim") { xtrim(bytes) }
            default: waitReplicas(bytes)
            }
        default:
            // Redis's words (server.c), so a client library shows what it would show for Redis.
            var args = ""
            for index in 1..<count where args.utf8.count < 128 { args += "'\(String(text(bytes, index).prefix(128 - args.utf8.count)))' " }
            resp.writer.error("unknown command '\(String(text(bytes, 0).prefix(128)))', with args beginning with: \(args)", into: &output)
        }
        return .done
    }

    private func arity(_ name: String) -> Outcome {
        resp.writer.error("wrong number of arguments for '\(name)' command", into: &output)
        return .done
    }

    private func isStreamKey(_ key: UnsafeRawBufferPointer) -> Bool {
        key.elementsEqual(options.respStream.utf8)
    }

    /// Argument `index` must be the stream's key; otherwise answers with an error naming it.
    private func checkKey(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> Bool {
        guard isStreamKey(argument(bytes, index)) else {
            resp.writer.error("wald serves one stream, '\(options.respStream)': there is no key '\(String(text(bytes, index).prefix(128)))'",
                              into: &output)
            return false
        }
        return true
    }

    // MARK: XADD

    /// `XADD key [NOMKSTREAM] <* | id> data <record>`: appended like a binary APPEND, answered
    /// with the entry ID once durable (or written, with `CLIENT WALD-DURABILITY buffered`). An
    /// explicit ID is a conditional append: it must be the log's next LSN.
    private func xadd(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let count = resp.arguments.count
        guard count >= 5 else { return arity("xadd") }
        guard permits(.append, command: "xadd") else { return .done }
        guard checkKey(bytes, 1) else { return .done }
        var index = 2
        while index < count - 2 {
            if argument(bytes, index, is: "NOMKSTREAM") {
                index += 1
            } else if argument(bytes, index, is: "MAXLEN") || argument(bytes, index, is: "MINID") || argument(bytes, index, is: "LIMIT") {
                resp.writer.error("wald does not trim in XADD: trim with XTRIM \(options.respStream) MINID ~ <id> (whole segments)", into: &output)
                return .done
            } else {
                break
            }
        }
        let pairs = count - index - 1
        guard pairs == 2, argument(bytes, index + 1, is: "data") else {
            if pairs % 2 == 1 || pairs < 2 { return arity("xadd") }
            resp.writer.error("wald stores one field per entry, named 'data': XADD \(options.respStream) * data <record>", into: &output)
            return .done
        }
        if writerIsBackloggedForRESP { return .wait }
        var expected: LSN?
        if !argument(bytes, index, is: "*") {
            guard let (lsn, sequence) = Self.streamID(argument(bytes, index)) else {
                resp.writer.error("Invalid stream ID specified as stream command argument", into: &output)
                return .done
            }
            guard lsn > 0 || sequence > 0 else {
                resp.writer.error("The ID specified in XADD must be greater than 0-0", into: &output)
                return .done
            }
            guard sequence == 0 else {
                resp.writer.error("wald entry IDs are <LSN>-0: the sequence part must be 0", into: &output)
                return .done
            }
            expected = lsn
        }
        if let refusal = loop.replication.appendRefusal {
            resp.writer.error(refusal, code: "READONLY", into: &output)
            return .done
        }
        let record = argument(bytes, index + 2)
        do {
            let accepted = try wal.acceptOnLoop(payload: record, durable: !resp.buffered, expectedLSN: expected)
            resp.lastAppend = accepted.last
            let condition: Gate.Condition = resp.buffered ? .written : .durable(replicas: options.minSyncReplicas)
            let writer = resp.writer
            hold(condition, lsn: accepted.last, epoch: accepted.epoch) { out in writer.bulk("\(accepted.first)-0", into: &out) }
            loop.scheduleFlush()
        } catch .conflict(let wanted, let next) {
            if wanted < next {
                resp.writer.error("The ID specified in XADD is equal or smaller than the target stream top item", into: &output)
            } else {
                resp.writer.error("the next entry of '\(options.respStream)' gets ID \(next)-0 (wald IDs are dense LSNs); \(wanted)-0 is beyond it",
                                  into: &output)
            }
        } catch {
            writeRESPError(Response.failure(error))
        }
        return .done
    }

    /// The stream's backlog is full (a slow rotation): the XADD waits in the input.
    private var writerIsBackloggedForRESP: Bool {
        guard loop.writerPaused, wal.backlogBytes >= loop.writerBacklogLimit else { return false }
        loop.waitingForWriter[id] = self
        return true
    }

    /// A wald error as a RESP error: the protocol's code word first, as `-ERR NO_SPACE …`.
    func writeRESPError(_ response: Response) {
        guard case .error(let code, let message) = response else { return }
        if code == .readOnly {
            resp.writer.error(message, code: "READONLY", into: &output)
        } else {
            resp.writer.error("\(code.name) \(message)", into: &output)
        }
    }

    /// Parses a stream ID: `<ms>` or `<ms>-<seq>` (decimal, each fitting a u64).
    static func streamID(_ bytes: UnsafeRawBufferPointer) -> (UInt64, UInt64)? {
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, let ms = UInt64(first) else { return nil }
        if parts.count == 1 { return (ms, 0) }
        guard let sequence = UInt64(parts[1]) else { return nil }
        return (ms, sequence)
    }

    // MARK: Reading

    /// `XRANGE key start end [COUNT n]` and `XREVRANGE key end start [COUNT n]`: `-`, `+`,
    /// exclusive `(`, IDs as `<LSN>` or `<LSN>-<seq>`; only durable entries.
    private func xrange(_ bytes: UnsafeRawBufferPointer, reverse: Bool) {
        let name = reverse ? "xrevrange" : "xrange"
        let count = resp.arguments.count
        guard count == 4 || count == 6 else { _ = arity(name); return }
        guard checkKey(bytes, 1) else { return }
        var limit = UInt64.max
        if count == 6 {
            guard argument(bytes, 4, is: "COUNT"), let n = Int64(text(bytes, 5)) else {
                resp.writer.error("syntax error", into: &output)
                return
            }
            if n <= 0 {
                resp.writer.array(0, into: &output)
                return
            }
            limit = UInt64(n)
        }
        let low = reverse ? 3 : 2, high = reverse ? 2 : 3
        let first = wal.status.firstLSN, durable = wal.durableLSN
        guard let from = bound(bytes, low, lower: true, first: first, last: durable),
              let to = bound(bytes, high, lower: false, first: first, last: durable) else {
            resp.writer.error("Invalid stream ID specified as stream command argument", into: &output)
            return
        }
        guard from <= to, from <= durable, to >= first else {
            resp.writer.array(0, into: &output)
            return
        }
        let total = min(to - from + 1, limit)
        resp.writer.array(Int(clamping: total), into: &output)
        startRESPStream(reverse ? RESPRange(reverse: from...to, count: total) : RESPRange(forward: from...to, count: total))
    }

    /// The LSN an XRANGE bound stands for: `-`/`+`, `(` exclusive, IDs with any sequence
    /// part (entries are `<LSN>-0`). Clamped to [first, last]; nil when it does not parse.
    private func bound(_ bytes: UnsafeRawBufferPointer, _ index: Int, lower: Bool, first: LSN, last: LSN) -> LSN? {
        let arg = argument(bytes, index)
        if arg.count == 1 && arg[0] == UInt8(ascii: "-") { return first }
        if arg.count == 1 && arg[0] == UInt8(ascii: "+") { return last }
        let exclusive = arg.first == UInt8(ascii: "(")
        guard let (ms, sequence) = Self.streamID(exclusive ? UnsafeRawBufferPointer(rebasing: arg[1...]) : arg) else { return nil }
        var lsn: LSN
        if lower {
            // The first entry at or after (ms, seq): ms itself unless seq > 0 or exclusive.
            let skip = exclusive || sequence > 0
            guard !skip || ms < LSN.max else { return last &+ 1 }
            lsn = skip ? ms + 1 : ms
            lsn = max(lsn, first)
        } else {
            // The last entry at or before (ms, seq): ms itself, or before it when exclusive of (ms, 0).
            if exclusive && sequence == 0 {
                guard ms > 0 else { return 0 }
                lsn = ms - 1
            } else {
                lsn = ms
            }
            lsn = min(lsn, last)
        }
        return lsn
    }

    /// `XREAD [COUNT n] [BLOCK ms] STREAMS key id`: entries after `id` (`$`: after the last
    /// one now); with BLOCK, answered as soon as one is durable, or null after `ms` (0: never).
    private func xread(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        var index = 1
        var limit = UInt64.max
        var block: Int64?
        while index < count {
            if argument(bytes, index, is: "COUNT"), index + 1 < count, let n = Int64(text(bytes, index + 1)) {
                limit = n > 0 ? UInt64(n) : UInt64.max
                index += 2
            } else if argument(bytes, index, is: "BLOCK"), index + 1 < count {
                guard let ms = Int64(text(bytes, index + 1)), ms >= 0 else {
                    resp.writer.error("timeout is not an integer or out of range", into: &output)
                    return
                }
                block = ms
                index += 2
            } else if argument(bytes, index, is: "STREAMS") {
                index += 1
                break
            } else {
                resp.writer.error("syntax error", into: &output)
                return
            }
        }
        let rest = count - index
        guard rest >= 2, rest % 2 == 0 else {
            resp.writer.error("Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.", into: &output)
            return
        }
        guard rest == 2 else {
            resp.writer.error("wald serves one stream, '\(options.respStream)': XREAD takes one key", into: &output)
            return
        }
        guard checkKey(bytes, index) else { return }
        let idArg = argument(bytes, index + 1)
        var start: LSN
        if idArg.count == 1 && idArg[0] == UInt8(ascii: "$") {
            start = wal.lastLSN + 1
        } else if let (ms, _) = Self.streamID(idArg) {
            guard ms < LSN.max else {
                resp.writer.nullArray(into: &output)
                return
            }
            start = ms + 1
        } else {
            resp.writer.error("Invalid stream ID specified as stream command argument", into: &output)
            return
        }
        start = max(start, wal.status.firstLSN)
        let key = Array(argument(bytes, index))
        if wal.durableLSN >= start {
            answerRead(start: start, count: limit, key: key)
        } else if let block {
            let wait = RESPWait(kind: .read(start: start, count: limit, key: key))
            blockRESP(wait, timeout: block)
        } else {
            resp.writer.nullArray(into: &output)
        }
    }

    /// Answers an XREAD with the durable entries from `start` on (some exist).
    private func answerRead(start: LSN, count limit: UInt64, key: [UInt8]) {
        let durable = wal.durableLSN
        let total = min(durable - start + 1, limit)
        let writer = resp.writer
        // RESP3: {key: entries}; RESP2: [[key, entries]] (t_stream.c, xreadCommand).
        if writer.version >= 3 {
            writer.map(1, into: &output)
        } else {
            writer.array(1, into: &output)
            writer.array(2, into: &output)
        }
        key.withUnsafeBytes { writer.bulk($0, into: &output) }
        writer.array(Int(clamping: total), into: &output)
        startRESPStream(RESPRange(forward: start...(start + total - 1), count: total))
    }

    /// `XINFO STREAM key`: Redis 7's fields, from the log's positions.
    private func xinfo(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        guard count >= 2 else { _ = arity("xinfo"); return }
        guard argument(bytes, 1, is: "STREAM") else {
            resp.writer.error("unknown subcommand '\(String(text(bytes, 1).prefix(128)))'. Try XINFO HELP.", into: &output)
            return
        }
        guard count == 3 else {
            resp.writer.error(count > 3 && argument(bytes, 3, is: "FULL") ? "wald does not support XINFO STREAM FULL" : "syntax error",
                              into: &output)
            return
        }
        guard checkKey(bytes, 2) else { return }
        let status = wal.status
        let durable = status.durableLSN
        let length = durable >= status.firstLSN ? durable - status.firstLSN + 1 : 0
        let writer = resp.writer
        writer.map(10, into: &output)
        writer.bulk("length", into: &output)
        writer.integer(Int(clamping: length), into: &output)
        writer.bulk("radix-tree-keys", into: &output)
        writer.integer(status.segments, into: &output)
        writer.bulk("radix-tree-nodes", into: &output)
        writer.integer(status.segments, into: &output)
        writer.bulk("last-generated-id", into: &output)
        writer.bulk("\(durable)-0", into: &output)
        writer.bulk("max-deleted-entry-id", into: &output)
        writer.bulk("\(status.firstLSN > 0 ? status.firstLSN - 1 : 0)-0", into: &output)
        writer.bulk("entries-added", into: &output)
        writer.integer(Int(clamping: durable), into: &output)
        writer.bulk("recorded-first-entry-id", into: &output)
        writer.bulk(length > 0 ? "\(status.firstLSN)-0" : "0-0", into: &output)
        writer.bulk("groups", into: &output)
        writer.integer(0, into: &output)
        writer.bulk("first-entry", into: &output)
        entry(length > 0 ? status.firstLSN : nil)
        writer.bulk("last-entry", into: &output)
        entry(length > 0 ? durable : nil)
    }

    /// One entry `[id, [data, record]]` read here and now, or null.
    private func entry(_ lsn: LSN?) {
        guard let lsn, let reader = try? wal.reader(from: lsn) else {
            resp.writer.null(into: &output)
            return
        }
        let writer = resp.writer
        var found = false
        _ = try? reader.read(maxCount: 1) { lsn, payload in
            Self.encodeEntry(writer, lsn: lsn, payload: payload, into: &output)
            found = true
            return false
        }
        if !found { writer.null(into: &output) }
    }

    static func encodeEntry(_ writer: RESPWriter, lsn: LSN, payload: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        writer.array(2, into: &out)
        writer.bulk("\(lsn)-0", into: &out)
        writer.array(2, into: &out)
        out.append(contentsOf: "$4\r\ndata\r\n".utf8)
        writer.bulk(payload, into: &out)
    }

    /// `XTRIM key MINID ~ id` (or `MAXLEN ~ n`): drops whole segments below it, like TRUNCATE;
    /// answers how many entries went.
    private func xtrim(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        guard count >= 4 else { _ = arity("xtrim"); return }
        guard checkKey(bytes, 1) else { return }
        let minid = argument(bytes, 2, is: "MINID"), maxlen = argument(bytes, 2, is: "MAXLEN")
        guard minid || maxlen else {
            resp.writer.error("syntax error", into: &output)
            return
        }
        guard count >= 5, argument(bytes, 3, is: "~") else {
            resp.writer.error("wald trims whole segments only: use XTRIM \(options.respStream) \(minid ? "MINID" : "MAXLEN") ~ <threshold>",
                              into: &output)
            return
        }
        var before: LSN
        if minid {
            guard let (ms, _) = Self.streamID(argument(bytes, 4)) else {
                resp.writer.error("Invalid stream ID specified as stream command argument", into: &output)
                return
            }
            before = ms
        } else {
            guard let keep = UInt64(text(bytes, 4)) else {
                resp.writer.error("value is not an integer or out of range", into: &output)
                return
            }
            let durable = wal.durableLSN
            before = durable >= keep ? durable - keep + 1 : 0
        }
        before = min(before, wal.durableLSN + 1)
        let firstBefore = wal.status.firstLSN
        do {
            let (first, token) = try wal.truncateOnLoop(before: before)
            if let token {
                blocked = .truncate
                respTrimFrom = firstBefore
                loop.truncations[token] = self
            } else {
                resp.writer.integer(Int(clamping: first - firstBefore), into: &output)
            }
        } catch {
            writeRESPError(Response.failure(error))
        }
    }

    // MARK: Replicas

    /// `WAIT numreplicas timeout`: how many followers acknowledged this connection's last
    /// append, once `numreplicas` have or after `timeout` ms (0: no limit).
    private func waitReplicas(_ bytes: UnsafeRawBufferPointer) {
        guard resp.arguments.count == 3 else { _ = arity("wait"); return }
        guard let needed = Int(text(bytes, 1)), needed >= 0, let timeout = Int64(text(bytes, 2)), timeout >= 0 else {
            resp.writer.error("value is not an integer or out of range", into: &output)
            return
        }
        let acknowledged = loop.syncReplicas.count(atLeast: resp.lastAppend)
        if acknowledged >= needed || needed == 0 {
            resp.writer.integer(acknowledged, into: &output)
            return
        }
        blockRESP(RESPWait(kind: .replicas(lsn: resp.lastAppend, needed: needed)), timeout: timeout)
    }

    // MARK: Blocking

    /// Parks the connection on `wait` until the loop sees it satisfied, or `timeout` ms pass.
    private func blockRESP(_ wait: RESPWait, timeout: Int64) {
        blocked = .respWait
        respWait = wait
        loop.respWaits[id] = self
        if timeout > 0 {
            loop.queue.asyncAfter(deadline: .now() + .milliseconds(Int(clamping: timeout))) { [self] in
                guard respWait === wait, !wait.finished else { return }
                finishRESPWait(timedOut: true)
            }
        }
        checkRESPWait()
    }

    /// Answers the parked XREAD or WAIT if it can be answered now.
    func checkRESPWait() {
        guard let wait = respWait, !wait.finished else { return }
        switch wait.kind {
        case .read(let start, _, _):
            if wal.durableLSN >= start { finishRESPWait(timedOut: false) }
        case .replicas(let lsn, let needed):
            if loop.syncReplicas.count(atLeast: lsn) >= needed { finishRESPWait(timedOut: false) }
        }
    }

    /// Forgets the parked XREAD or WAIT without answering it (the client left).
    func abandonRESPWait() {
        guard let wait = respWait else { return }
        wait.finished = true
        respWait = nil
        loop.respWaits[id] = nil
        blocked = nil
    }

    private func finishRESPWait(timedOut: Bool) {
        guard let wait = respWait, !closed else { return }
        wait.finished = true
        respWait = nil
        loop.respWaits[id] = nil
        blocked = nil
        switch wait.kind {
        case .read(let start, let count, let key):
            if timedOut || wal.durableLSN < start { resp.writer.nullArray(into: &output) } else { answerRead(start: start, count: count, key: key) }
        case .replicas(let lsn, _):
            resp.writer.integer(loop.syncReplicas.count(atLeast: lsn), into: &output)
        }
        service()
    }

    // MARK: Connection commands

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches RESP2/RESP3, answers with
    /// the server's description (Redis 7's fields).
    private func hello(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        var version = resp.writer.version
        var index = 1
        if count > 1 {
            guard let requested = Int(text(bytes, 1)) else {
                resp.writer.error("Protocol version is not an integer or out of range", into: &output)
                return
            }
            guard requested == 2 || requested == 3 else {
                resp.writer.error("unsupported protocol version", code: "NOPROTO", into: &output)
                return
            }
            version = requested
            index = 2
        }
        while index < count {
            if argument(bytes, index, is: "AUTH"), index + 2 < count {
                let user = text(bytes, index + 1)
                guard authenticate(user: user, password: argument(bytes, index + 2)) else { return }
                index += 3
            } else if argument(bytes, index, is: "SETNAME"), index + 1 < count {
                resp.name = text(bytes, index + 1)
                index += 2
            } else {
                resp.writer.error("Syntax error in HELLO option '\(String(text(bytes, index).prefix(128)))'", into: &output)
                return
            }
        }
        if loop.authRequired && role == nil {
            resp.writer.error("HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                              code: "NOAUTH", into: &output)
            return
        }
        resp.writer.version = version
        let writer = resp.writer
        writer.map(7, into: &output)
        writer.bulk("server", into: &output)
        writer.bulk("wald", into: &output)
        writer.bulk("version", into: &output)
        writer.bulk(Self.redisVersion, into: &output)
        writer.bulk("proto", into: &output)
        writer.integer(version, into: &output)
        writer.bulk("id", into: &output)
        writer.integer(id, into: &output)
        writer.bulk("mode", into: &output)
        writer.bulk("standalone", into: &output)
        writer.bulk("role", into: &output)
        writer.bulk(loop.replication.isFollower ? "replica" : "master", into: &output)
        writer.bulk("modules", into: &output)
        writer.array(0, into: &output)
    }

    /// The Redis version whose commands and replies wald's RESP follows (what clients read
    /// from HELLO and INFO to pick features).
    static let redisVersion = "7.0.0"

    private func auth(user: String, password: UnsafeRawBufferPointer) {
        guard loop.authRequired else {
            resp.writer.error("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                              into: &output)
            return
        }
        if authenticate(user: user, password: password) { resp.writer.simple("OK", into: &output) }
    }

    /// Checks the password: `default` (or no user) is the auth token or any user's token; a
    /// named user's must match that user's hash. Answers WRONGPASS when it fails.
    private func authenticate(user: String, password: UnsafeRawBufferPointer) -> Bool {
        guard let (role, name) = loop.role(forToken: password, user: user == "default" ? nil : user) else {
            resp.writer.error("invalid username-password pair or user is disabled.", code: "WRONGPASS", into: &output)
            authFailed()
            return false
        }
        self.role = role
        userName = name
        return true
    }

    /// `CLIENT SETNAME|GETNAME|ID|SETINFO|WALD-DURABILITY`.
    private func client(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        guard count >= 2 else { _ = arity("client"); return }
        let sub = text(bytes, 1).lowercased()
        switch sub {
        case "setname" where count == 3:
            resp.name = text(bytes, 2)
            resp.writer.simple("OK", into: &output)
        case "getname" where count == 2:
            if let name = resp.name { resp.writer.bulk(name, into: &output) } else { resp.writer.null(into: &output) }
        case "id" where count == 2:
            resp.writer.integer(id, into: &output)
        case "setinfo" where count == 4:
            resp.writer.simple("OK", into: &output)
        case "wald-durability" where count == 3:
            switch text(bytes, 2).lowercased() {
            case "buffered": resp.buffered = true
            case "durable": resp.buffered = false
            default:
                resp.writer.error("CLIENT WALD-DURABILITY takes 'buffered' or 'durable'", into: &output)
                return
            }
            resp.writer.simple("OK", into: &output)
        default:
            resp.writer.error("unknown subcommand or wrong number of arguments for '\(String(text(bytes, 1).prefix(128)))'. Try CLIENT HELP.",
                              into: &output)
        }
    }

    /// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, `COMMAND INFO`: what redis-cli asks at start;
    /// wald describes no commands (clients then fall back to their defaults).
    private func command(_ bytes: UnsafeRawBufferPointer) {
        if resp.arguments.count >= 2 {
            switch text(bytes, 1).lowercased() {
            case "count": return resp.writer.integer(0, into: &output)
            case "docs": return resp.writer.map(0, into: &output)
            default: break
            }
        }
        resp.writer.array(0, into: &output)
    }

    /// `CONFIG GET <pattern>...`: the persistence settings a Redis tool asks about (redis-benchmark
    /// reads `save` and `appendonly` at start), answered with what wald does: a log that is always
    /// on and synced per durable append. Other names match nothing (an empty reply, as Redis 7
    /// gives for an unknown parameter). `CONFIG SET` and the rest are refused: wald's settings
    /// live in wald.yaml and are reloaded with SIGHUP.
    private func config(_ bytes: UnsafeRawBufferPointer) {
        let count = resp.arguments.count
        guard count >= 2 else { _ = arity("config"); return }
        guard text(bytes, 1).lowercased() == "get", count >= 3 else {
            resp.writer.error("CONFIG \(String(text(bytes, 1).prefix(32)).uppercased()) is not supported: wald reads wald.yaml (reload with SIGHUP)",
                              into: &output)
            return
        }
        let table = [("save", ""), ("appendonly", "yes"), ("appendfsync", "always"), ("databases", "1")]
        let patterns = (2..<count).map { text(bytes, $0).lowercased() }
        let matches = table.filter { entry in patterns.contains { Self.globMatches($0, entry.0) } }
        resp.writer.map(matches.count, into: &output)
        for (name, value) in matches {
            resp.writer.bulk(name, into: &output)
            resp.writer.bulk(value, into: &output)
        }
    }

    /// Redis's glob subset for CONFIG GET: `*` and `?` (stringmatchlen without classes), in
    /// O(pattern × name) steps whatever the client sends.
    static func globMatches(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern.utf8), n = Array(name.utf8)
        // matched[j]: the pattern so far matches the first j bytes of the name.
        var matched = [Bool](repeating: false, count: n.count + 1)
        matched[0] = true
        for c in p {
            var next = [Bool](repeating: false, count: n.count + 1)
            for j in 0...n.count {
                if c == UInt8(ascii: "*") {
                    next[j] = matched[j] || (j > 0 && next[j - 1])
                } else if j > 0, matched[j - 1], c == UInt8(ascii: "?") || c == n[j - 1] {
                    next[j] = true
                }
            }
            matched = next
        }
        return matched[n.count]
    }

    /// INFO as Redis lays it out (`# Section` and `key:value` lines) with wald's fields.
    private func infoText() -> String {
        let status = wal.status
        let role = loop.replication
        var lines = ["# Server", "redis_version:\(Self.redisVersion)", "wald_version:\(loop.version)", "redis_mode:standalone",
                     "", "# Clients", "connected_clients:\(loop.connections.count)", "",
                     "# Persistence", "aof_enabled:1", "wald_failed:\(status.failure == nil ? 0 : 1)", "",
                     "# Replication", "role:\(role.isFollower ? "slave" : "master")"]
        if let upstream = role.upstream, !hidesAddresses {
            let parts = upstream.split(separator: ":")
            lines += ["master_host:\(parts.dropLast().joined(separator: ":"))", "master_port:\(parts.last ?? "")",
                      "master_link_status:\(role.upstreamConnected ? "up" : "down")"]
        }
        lines += ["connected_slaves:\(loop.followers.count)", "", "# wald",
                  "log_id:\(status.logID)", "stream:\(options.respStream)", "first_lsn:\(status.firstLSN)",
                  "last_lsn:\(status.lastLSN)", "durable_lsn:\(status.durableLSN)", "segments:\(status.segments)",
                  "bytes:\(status.bytes)", "syncs:\(status.syncStats.syncs)", "", "# Keyspace",
                  "db0:keys=1,expires=0,avg_ttl=0", ""]
        return lines.joined(separator: "\r\n")
    }

    // MARK: Streaming

    /// Sends the entries of `range` (its array header is already in the output), one chunk per
    /// pump like a REPLAY; requests after it wait for it to finish.
    private func startRESPStream(_ range: RESPRange) {
        stream = .resp(range)
        blocked = .replay
        loop.streaming[id] = self
        pumpStream()
    }

    /// One chunk of entries. Forward ranges read on with one LogReader; reverse ones read
    /// windows of up to 256 entries forward and send each window backwards.
    func pumpRESP(_ range: RESPRange) {
        let writer = resp.writer
        let start = output.count
        do {
            if !range.reverse {
                if range.reader == nil { range.reader = try wal.reader(from: range.next) }
                let wanted = min(range.remaining, range.end - range.next + 1)
                let sent = try range.reader!.read(maxCount: Int(min(wanted, 1 << 30))) { lsn, payload in
                    Self.encodeEntry(writer, lsn: lsn, payload: payload, into: &output)
                    return output.count - start < Self.streamChunkBytes
                }
                guard sent > 0 || wanted == 0 else { throw WALError.outOfRange(lsn: range.next, first: wal.status.firstLSN, last: wal.durableLSN) }
                range.next += UInt64(sent)
                range.remaining -= UInt64(sent)
            } else {
                let window = min(256, range.remaining, range.next - range.end + 1)
                let low = range.next - window + 1
                var entries: [(LSN, [UInt8])] = []
                entries.reserveCapacity(Int(window))
                _ = try wal.reader(from: low).read(maxCount: Int(window)) { lsn, payload in
                    entries.append((lsn, Array(payload)))
                    return true
                }
                guard entries.count == Int(window) else {
                    throw WALError.outOfRange(lsn: low, first: wal.status.firstLSN, last: wal.durableLSN)
                }
                for (lsn, payload) in entries.reversed() {
                    payload.withUnsafeBytes { Self.encodeEntry(writer, lsn: lsn, payload: $0, into: &output) }
                }
                range.remaining -= window
                if low > range.end { range.next = low - 1 } else { range.remaining = 0 }
            }
        } catch {
            // The reply's array header is out: the client cannot be told in band. Send what is
            // there and close (retention dropped the segments, or the log is damaged).
            loop.logger.warning("a RESP range read failed midway; closing the connection",
                                metadata: ["peer": "\(peer)", "error": "\(error)"])
            endStream()
            blocked = nil
            closeGracefully()
            return
        }
        if range.remaining == 0 || (!range.reverse && range.next > range.end) {
            endStream()
            blocked = nil
            service()
            return
        }
        sendOutput()
        continueStream()
    }
}

/// The entries an XRANGE, XREVRANGE or XREAD still has to send.
final class RESPRange: CustomStringConvertible, @unchecked Sendable {
    // @unchecked Sendable: used only on the loop's queue (like Connection).
    let reverse: Bool
    /// Forward: the next LSN to send. Reverse: the highest LSN still to send.
    var next: LSN
    /// Forward: the last LSN to send. Reverse: the lowest.
    let end: LSN
    var remaining: UInt64
    var reader: LogReader?

    init(forward range: ClosedRange<LSN>, count: UInt64) {
        reverse = false
        next = range.lowerBound
        end = range.upperBound
        remaining = count
    }

    init(reverse range: ClosedRange<LSN>, count: UInt64) {
        reverse = true
        next = range.upperBound
        end = range.lowerBound
        remaining = count
    }

    var description: String { "resp(\(reverse ? "reverse " : "")next=\(next) remaining=\(remaining))" }
}
