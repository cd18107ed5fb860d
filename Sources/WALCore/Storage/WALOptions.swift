// Every knob of the storage engine, documented where it is declared (default and unit).
import Logging

/// Durability of one append.
public enum Durability: Sendable {
    /// Returns only after the records are on disk (fdatasync). Many concurrent durable
    /// appends share one fdatasync (group commit).
    case durable
    /// Returns once the records are accepted; they become durable at the next
    /// flush-interval sync or explicit `sync()`, and are lost if the process dies first.
    case buffered
}

/// Options for `WAL.open`. The seed library's names are noted where they differ.
public struct WALOptions: Sendable {
    /// The data directory; created if missing. Seed: `LogDir`.
    public var directory: String
    /// File name prefix of segments: `<prefix><first LSN, 20 digits>.wal`. Default `wal-`. Seed: `LogPrefix`.
    public var segmentPrefix: String = "wal-"
    /// Size in bytes at which a segment is closed and the next one started. Default 64 MiB.
    /// A batch is never split across segments, so a segment only exceeds this when one
    /// batch is larger than a whole segment. Seed: `MaxLogSize`.
    public var maxSegmentBytes: Int = 64 << 20
    /// Keep at most this many segment files; older ones are deleted after rotation.
    /// 0 = unlimited. Default 0. Seed: `MaxSegments`.
    public var maxSegments: Int = 0
    /// Delete the oldest segments while all segments together exceed this many bytes.
    /// 0 = unlimited. Default 0.
    public var retentionBytes: Int = 0
    /// Largest record payload accepted, in bytes. Default 1 MiB (1,048,576).
    public var maxRecordBytes: Int = 1 << 20
    /// How often buffered appends are written and fdatasynced. Default 10 ms;
    /// `.zero` = only on `sync()` or a durable append. Seed: `FlushInterval`.
    public var flushInterval: Duration = .milliseconds(10)
    /// Buffered appends collect in memory up to this many bytes before one pwrite. Default 1 MiB.
    /// Seed: `MaxBufSize`.
    public var maxBufferBytes: Int = 1 << 20
    /// Zero-fill each new segment to `maxSegmentBytes` before use (like PostgreSQL's
    /// wal_init_zero), so an fdatasync after an append commits no file-size metadata. Default true.
    public var preallocate: Bool = true
    /// An fdatasync slower than this is logged at warning with its duration. Default 1 s.
    public var slowSyncThreshold: Duration = .seconds(1)
    /// Where the engine logs. Default: a logger labelled "wald.wal". Seed: `Log`.
    public var logger: Logger = Logger(label: "wald.wal")
    /// The file system. Default: the real one. Tests pass a `SimulatedFileIO`.
    public var io: any FileIO = PosixFileIO()
    /// Open a damaged log by cutting it at the first damage, after copying each damaged
    /// file to `<name>.broken`. Default false: damage makes `open` fail.
    public var repair: Bool = false
    /// Open cutting every record after this LSN: a former primary rejoining the log of a newer
    /// leader drops the suffix it wrote that the leader never received (docs/replication.md,
    /// "Rejoin"), as Raft's log matching and PostgreSQL's pg_rewind do. The segment that is cut
    /// is first copied to `<name>.broken` (`.broken.N`), later segments are renamed so; the
    /// generation stays (the leader's records take those LSNs in the same log). Open throws
    /// `WALError.outOfRange` when the log starts after `keepThrough + 1`. Default nil: keep all.
    public var keepThrough: LSN? = nil
    /// Every this often, a scrub pass reads every sealed segment (all but the one being written)
    /// in the background and checks each header, record CRC and LSN, like ZFS's and Ceph's
    /// scrubs: open only checks the last segment, so damage in older ones would otherwise stay
    /// hidden until a replay reaches it. What it finds is logged once at error and listed in
    /// `WAL.damage`. The first pass starts `min(interval, 10 min)` after open (so restarts more
    /// frequent than the interval do not skip every pass). `.zero` = never. Default `.zero`.
    public var scrubInterval: Duration = .zero
    /// The most a scrub pass reads per second, in bytes, so it never competes with appends for
    /// the disk. Default 16 MiB; at least 64 KiB.
    public var scrubBytesPerSecond: Int = 16 << 20

    public init(directory: String) {
        self.directory = directory
    }

    func validate() throws(WALError) {
        guard !directory.isEmpty else { throw .invalidOptions("directory is empty") }
        guard !segmentPrefix.isEmpty, !segmentPrefix.contains("/") else {
            throw .invalidOptions("segmentPrefix must be non-empty and contain no '/'")
        }
        guard maxRecordBytes >= 0, maxRecordBytes <= Int(UInt32.max) - RecordFrame.headerSize else {
            throw .invalidOptions("maxRecordBytes must be between 0 and 4 GiB")
        }
        guard maxSegmentBytes >= SegmentHeader.size + RecordFrame.headerSize else {
            throw .invalidOptions("maxSegmentBytes must be at least \(SegmentHeader.size + RecordFrame.headerSize)")
        }
        guard maxSegments >= 0, retentionBytes >= 0, maxBufferBytes >= 0 else {
            throw .invalidOptions("maxSegments, retentionBytes and maxBufferBytes must not be negative")
        }
        // Both become nanosecond counts and timer deadlines: a year keeps those far from overflow.
        guard flushInterval >= .zero, flushInterval <= Self.longestDuration else {
            throw .invalidOptions("flushInterval must be between 0 and a year")
        }
        guard slowSyncThreshold >= .zero, slowSyncThreshold <= Self.longestDuration else {
            throw .invalidOptions("slowSyncThreshold must be between 0 and a year")
        }
        guard scrubInterval >= .zero, scrubInterval <= Self.longestDuration else {
            throw .invalidOptions("scrubInterval must be between 0 and a year")
        }
        guard scrubBytesPerSecond >= 64 << 10 else { throw .invalidOptions("scrubBytesPerSecond must be at least 64 KiB") }
    }

    /// The longest `flushInterval` and `slowSyncThreshold`: a year.
    public static let longestDuration = Duration.seconds(365 * 24 * 3600)
}
