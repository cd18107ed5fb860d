// The real file system: every syscall WALCore makes is here, through WALSystem's one
// EINTR rule (`retryingInterrupts`) and its typed error (IOError is WALSystem's SystemError).
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import WALSystem

/// `FileIO` backed by POSIX calls.
public struct PosixFileIO: FileIO {
    public init() {}

    @inline(__always)
    private func retrying<T: BinaryInteger>(_ operation: String, _ path: String, _ call: () -> T) throws -> T {
        try retryingInterrupts(operation, path, call)
    }

    public func open(_ path: String, mode: OpenMode) throws -> IOHandle {
        let flags: Int32 = switch mode {
        case .readOnly: O_RDONLY
        case .readWrite: O_RDWR
        case .createExclusive: O_RDWR | O_CREAT | O_EXCL
        }
        let fd = try retrying("open", path) { Glibc.open(path, flags | O_CLOEXEC, 0o644) }
        return IOHandle(raw: fd)
    }

    public func close(_ handle: IOHandle) {
        // close(2) must not be retried on EINTR on Linux: the descriptor is already gone.
        _ = Glibc.close(handle.raw)
    }

    public func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = try retrying("pwrite", path) {
                pwrite(handle.raw, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            }
            done += n
        }
    }

    public func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try retrying("pread", path) {
                pread(handle.raw, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func syncData(_ handle: IOHandle, path: String) throws {
        // Not retried on failure beyond EINTR: after a failed fdatasync the kernel may have
        // dropped the dirty pages, so a later success would prove nothing (see "fsyncgate").
        _ = try retrying("fdatasync", path) { fdatasync(handle.raw) }
    }

    public func size(_ handle: IOHandle, path: String) throws -> Int {
        var info = stat()
        _ = try retrying("fstat", path) { fstat(handle.raw, &info) }
        return Int(info.st_size)
    }

    public func truncate(_ handle: IOHandle, to size: Int, path: String) throws {
        _ = try retrying("ftruncate", path) { ftruncate(handle.raw, off_t(size)) }
    }

    public func rename(_ source: String, to destination: String) throws {
        _ = try retrying("rename", source + " -> " + destination) { Glibc.rename(source, destination) }
    }

    public func remove(_ path: String) throws {
        _ = try retrying("unlink", path) { unlink(path) }
    }

    public func syncDirectory(_ directory: String) throws {
        let fd = try retrying("open", directory) { Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { _ = Glibc.close(fd) }
        _ = try retrying("fsync", directory) { fsync(fd) }
    }

    public func list(_ directory: String) throws -> [String] {
        try Descriptors.listDirectory(directory)
    }

    public func fileType(_ path: String) throws -> FileType {
        var info = stat()
        _ = try retrying("stat", path) { stat(path, &info) }
        return switch info.st_mode & S_IFMT {
        case S_IFREG: .regular
        case S_IFDIR: .directory
        case S_IFIFO: .fifo
        case S_IFSOCK: .socket
        case S_IFCHR: .characterDevice
        case S_IFBLK: .blockDevice
        default: .unknown
        }
    }

    public func createDirectory(_ directory: String) throws {
        var path = directory.hasPrefix("/") ? "/" : ""
        for component in directory.split(separator: "/") {
            path += (path.isEmpty || path == "/" ? "" : "/") + component
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                throw IOError("mkdir", path: path, errno: errno)
            }
        }
    }

    public func unlock(_ handle: IOHandle) {
        _ = flock(handle.raw, LOCK_UN)
        close(handle)
    }

    public func lock(_ path: String) throws -> IOHandle {
        let fd = try retrying("open", path) { Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        do {
            _ = try retrying("flock", path) { flock(fd, LOCK_EX | LOCK_NB) }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        return IOHandle(raw: fd)
    }
}
