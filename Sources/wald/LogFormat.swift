// wald's swift-log backend. Under systemd (JOURNAL_STREAM matches stderr) every event is one
// line with a `<N>` syslog priority prefix, which journald turns into the priority field, and
// metadata as key=value; by hand, human-readable lines with a timestamp. The level is shared
// and can change at run time (SIGHUP reload). A line that cannot be written (a full disk,
// /dev/full, a closed pipe, a journal socket that would block) is dropped and counted: logging
// never stops or blocks the server.
import Foundation
import Logging
import Metrics
import Synchronization
import WALSync
import WALSystem

final class LogLevelSetting: Sendable {
    private let level: WALMutex<Logger.Level>
    init(_ level: Logger.Level) { self.level = WALMutex(level) }
    var value: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
}

/// Where log lines go: standard error, one `write(2)` loop per line that gives up on any
/// error but EINTR. Lines are logged on the event loop and the sync thread, so a reader that
/// stops reading must not stop them: a socket there (the journal's stream) is written with
/// MSG_DONTWAIT, and a pipe through a second, non-blocking open of it (/proc/self/fd/2), whose
/// O_NONBLOCK is not shared with whoever else writes to that pipe. A full pipe or socket
/// drops the line. Foundation's FileHandle.write is not used: it traps on ENOSPC and EPIPE.
final class LogOutput: Sendable {
    /// Lines carry a `<N>` priority prefix for journald instead of a timestamp.
    let journal: Bool
    private let fd: Int32
    private let socket: Bool
    /// `wald_log_lines_dropped_total`: lines not written whole.
    private let dropped: Counter

    init(journal: Bool, dropped: Counter = Counter(label: "wald_log_lines_dropped_total")) {
        self.journal = journal
        self.dropped = dropped
        var info = stat()
        let type = fstat(2, &info) == 0 ? info.st_mode & S_IFMT : 0
        socket = type == S_IFSOCK
        // Opening a pipe with no reader fails (ENXIO): then fd 2 it is, where writes fail with EPIPE.
        let reopened = type == S_IFIFO ? open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC) : -1
        fd = reopened >= 0 ? reopened : 2
    }

    func write(_ line: String) {
        if !StandardError.write(line, to: fd, nonBlockingSocket: socket) { dropped.increment() }
    }
}

/// Writes to file descriptor 2 (or another open of standard error) without ever trapping.
/// SIGPIPE must be ignored (the daemon does so at start), so a closed pipe is an EPIPE here
/// instead of the end of the process.
enum StandardError {
    /// Whether all of `text` was written.
    @discardableResult
    static func write(_ text: String, to fd: Int32 = 2, nonBlockingSocket: Bool = false) -> Bool {
        var text = text
        return text.withUTF8 { utf8 in
            let bytes = UnsafeRawBufferPointer(utf8)
            guard nonBlockingSocket else {
                // ENOSPC, EPIPE, EBADF, …: give the line up.
                do { try Descriptors.writeAll(fd, bytes, what: "standard error") } catch { return false }
                return true
            }
            var offset = 0
            while offset < bytes.count {
                switch Sockets.write(fd, UnsafeRawBufferPointer(rebasing: bytes[offset...]), dontWait: true) {
                case .wrote(let n): offset += n
                case .wouldBlock, .failed: return false  // a full journal socket: give the line up
                }
            }
            return true
        }
    }
}

struct WaldLogHandler: LogHandler {
    let label: String
    let output: LogOutput
    let setting: LogLevelSetting
    var metadata: Logger.Metadata = [:]

    var logLevel: Logger.Level {
        get { setting.value }
        set { setting.value = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// True when stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode).
    static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let stream = environment["JOURNAL_STREAM"] else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return stream == "\(info.st_dev):\(info.st_ino)"
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.quote("\($0.value)"))" }.joined(separator: " ")
        let text = fields.isEmpty ? "\(event.message)" : "\(event.message) \(fields)"
        let line: String
        if output.journal {
            line = "<\(Self.priority(event.level))>\(label): \(text)\n"
        } else {
            line = "\(Self.timestamp()) \(event.level) \(label): \(text)\n"
        }
        output.write(line)
    }

    /// syslog priorities: 2 critical, 3 error, 4 warning, 5 notice, 6 info, 7 debug.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    private static func quote(_ value: String) -> String {
        value.contains(where: { $0 == " " || $0 == "\"" || $0 == "\n" }) ? "\"" + value.replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\"" : value
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}
