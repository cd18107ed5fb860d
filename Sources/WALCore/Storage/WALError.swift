// Every way a WAL call can fail, with what the caller needs to act on it.

public enum WALError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A record is larger than `maxRecordBytes`; nothing was written.
    case recordTooLarge(size: Int, limit: Int)
    /// An append of zero records.
    case emptyBatch
    /// The WAL was closed.
    case closed
    /// An earlier fsync (or write) failed; nothing more can be made durable. Reopen the
    /// directory: recovery decides what survived. `cause` is the failed call (its errno and
    /// C function) when the failure was a system call's.
    indirect case failed(reason: String, cause: IOError? = nil)
    /// The file system is full; nothing of the failed call was written. Free space (for example
    /// with `truncate(before:)`) and retry.
    case noSpace(path: String)
    /// Another process holds the directory's lock file.
    case locked(directory: String)
    /// The log on disk is damaged; `repair` can cut it at this place.
    case corruption(file: String, offset: Int, lsn: LSN, reason: String)
    /// The LSN lies outside [first, last + 1].
    case outOfRange(lsn: LSN, first: LSN, last: LSN)
    /// A file-system call failed.
    indirect case io(IOError)
    /// The options are inconsistent.
    case invalidOptions(String)
    /// Something in the data directory is named like a segment (or a temp segment) but is not a
    /// regular file: a directory, a FIFO. Nothing was changed; move it out of the directory.
    case notASegmentFile(path: String, type: FileType)
    /// The log holds the largest LSN it can hand out (2^64 − 2): nothing more can be appended.
    /// Start a new log (another data directory).
    case exhausted(lastLSN: LSN)
    /// The directory holds files but no segment: it is not a log, and a new one is not created
    /// among someone else's files (a mistyped `--data-dir`). Use an empty or new directory.
    case notALog(directory: String, found: String)
    /// A conditional append expected its first record to get `expected`, but the log's next
    /// LSN is `next`; nothing was written. (The retry of an append that did land, or a race.)
    case conflict(expected: LSN, next: LSN)

    public var description: String {
        switch self {
        case .recordTooLarge(let size, let limit):
            "record of \(size) bytes exceeds max_record_bytes (\(limit)); nothing was written"
        case .emptyBatch: "append of zero records"
        case .closed: "the WAL is closed"
        case .failed(let reason, _): "the WAL is in its failed state and accepts no writes until reopened: \(reason)"
        case .noSpace(let path): "no space left on device writing \(path); free space (e.g. truncate) and retry"
        case .locked(let dir): "\(dir) is locked by another process (LOCK file held); stop it first"
        case .corruption(let file, let offset, let lsn, let reason):
            "corruption in \(file) at byte \(offset) (LSN \(lsn)): \(reason); run `walctl repair` to cut the log there"
        case .outOfRange(let lsn, let first, let last):
            "LSN \(lsn) is out of range: the first available LSN is \(first), the last is \(last)"
        case .io(let error): error.description
        case .invalidOptions(let text): "invalid options: \(text)"
        case .conflict(let expected, let next):
            "the append expected LSN \(expected) but the log's next LSN is \(next); nothing was written"
        case .notASegmentFile(let path, let type):
            "\(path) is \(type), not a segment file; move it out of the data directory (nothing was changed)"
        case .notALog(let directory, let found):
            "\(directory) holds no log (no segment files) but is not empty: \(found); refusing to create a new log among them "
                + "(a mistyped data directory?); give an empty or new directory"
        case .exhausted(let last):
            "the log is full: its last LSN \(last) leaves no LSN for another record; start a new log in another data directory"
        }
    }
}
