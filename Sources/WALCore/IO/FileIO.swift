// The storage engine's only door to the file system. PosixFileIO calls the syscalls;
// SimulatedFileIO keeps written and fsynced bytes apart so tests can cut the power.
@_exported import WALSystem

/// An open file, as handed out by a `FileIO`. Exactly one owner closes it.
public struct IOHandle: Hashable, Sendable {
    public let raw: Int32
    public init(raw: Int32) { self.raw = raw }
}

/// A failed file-system call: which call, on what, and the errno it returned. The one
/// syscall layer's error (WALSystem's `SystemError`), shared with the sockets.
public typealias IOError = SystemError

/// How `FileIO.open` opens a file.
public enum OpenMode: Sendable {
    case readOnly
    case readWrite
    /// Create a new file (fails when it exists), opened read-write.
    case createExclusive
}

/// What a path names, as `stat` reports it (a symbolic link is followed).
public enum FileType: Sendable, Equatable, CustomStringConvertible {
    case regular, directory, fifo, socket, characterDevice, blockDevice, unknown

    /// With its article, for messages: "a directory".
    public var description: String {
        switch self {
        case .regular: "a regular file"
        case .directory: "a directory"
        case .fifo: "a FIFO"
        case .socket: "a socket"
        case .characterDevice: "a character device"
        case .blockDevice: "a block device"
        case .unknown: "not a regular file"
        }
    }
}

/// File-system calls the engine needs. Implementations retry EINTR and turn errno into `IOError`.
public protocol FileIO: Sendable {
    /// The corresponding C function is `open`.
    func open(_ path: String, mode: OpenMode) throws -> IOHandle
    /// The corresponding C function is `close`. Never fails from the caller's view.
    func close(_ handle: IOHandle)
    /// Writes all of `bytes` at `offset` (looping over short writes); the C function is `pwrite`.
    /// On failure, a prefix of `bytes` may have been written.
    func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws
    /// Reads up to `buffer.count` bytes at `offset`; returns fewer only at end of file. The C function is `pread`.
    func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int
    /// The corresponding C function is `fdatasync`.
    func syncData(_ handle: IOHandle, path: String) throws
    /// The corresponding C function is `fstat` (st_size).
    func size(_ handle: IOHandle, path: String) throws -> Int
    /// The corresponding C function is `ftruncate`.
    func truncate(_ handle: IOHandle, to size: Int, path: String) throws
    /// The corresponding C function is `rename`.
    func rename(_ source: String, to destination: String) throws
    /// The corresponding C function is `unlink`.
    func remove(_ path: String) throws
    /// Opens `directory` and calls `fsync` on it, making creates, renames and unlinks durable.
    func syncDirectory(_ directory: String) throws
    /// Names of the entries in `directory` (not "." or "..").
    func list(_ directory: String) throws -> [String]
    /// What `path` is, following a symbolic link. The corresponding C function is `stat`.
    /// Opening is no way to ask: `open` of a FIFO waits for a writer.
    func fileType(_ path: String) throws -> FileType
    /// Creates `directory` and missing parents (`mkdir -p`).
    func createDirectory(_ directory: String) throws
    /// Takes an exclusive, non-blocking `flock` on `path` (created if missing); released by `unlock`.
    func lock(_ path: String) throws -> IOHandle
    /// Releases a `lock` and closes its handle. Unlocking explicitly matters: a child forked at
    /// that moment holds a copy of the descriptor until it execs, and closing alone would leave
    /// the lock held by that copy.
    func unlock(_ handle: IOHandle)
}

extension FileIO {
    public func unlock(_ handle: IOHandle) { close(handle) }
}

extension FileIO {
    func write(_ handle: IOHandle, _ bytes: [UInt8], at offset: Int, path: String) throws {
        try bytes.withUnsafeBytes { try write(handle, $0, at: offset, path: path) }
    }

    /// Reads exactly `count` bytes at `offset`, or fewer at end of file.
    func read(_ handle: IOHandle, count: Int, at offset: Int, path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = try buffer.withUnsafeMutableBytes { try read(handle, into: $0, at: offset, path: path) }
        buffer.removeLast(count - n)
        return buffer
    }
}

func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
