// `<data dir>/ha-term`: under automatic failover, the leadership term whose leader's log this
// log is a prefix of (written before a member streams from a new leader, and before a new
// leader acknowledges its first append). A member rejoining a newer leader compares it with the
// cluster's term history to find where the logs may part (docs/replication.md, "Rejoin").
// Durable like the CLEAN marker: temp file, fdatasync, rename, directory fsync.

#if canImport(Glibc)
import Glibc
#endif

/// The data directory's record of the leadership term its log belongs to.
public enum TermFile {
    public static let name = "ha-term"

    /// The term written last; 0 when the file does not exist (a log that never took part in
    /// automatic failover). Throws `WALError.corruption` when the file holds anything but a
    /// decimal term and a newline, `IOError` when it cannot be read.
    public static func read(directory: String, io: any FileIO = PosixFileIO()) throws -> UInt64 {
        let path = joinPath(directory, name)
        let handle: IOHandle
        do {
            handle = try io.open(path, mode: .readOnly)
        } catch let error as IOError where error.isNotFound {
            return 0
        }
        defer { io.close(handle) }
        let bytes = try io.read(handle, count: 32, at: 0, path: path)
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.hasSuffix("\n"), let term = UInt64(text.dropLast()) else {
            throw WALError.corruption(file: path, offset: 0, lsn: 0, reason: "expected a decimal leadership term and a newline")
        }
        return term
    }

    /// Replaces the term durably. Throws `IOError` naming the file.
    public static func write(_ term: UInt64, directory: String, io: any FileIO = PosixFileIO()) throws {
        let temp = joinPath(directory, name + ".tmp")
        try? io.remove(temp)
        let handle = try io.open(temp, mode: .createExclusive)
        defer { io.close(handle) }
        try io.write(handle, Array("\(term)\n".utf8), at: 0, path: temp)
        try io.syncData(handle, path: temp)
        try io.rename(temp, to: joinPath(directory, name))
        try io.syncDirectory(directory)
    }
}
