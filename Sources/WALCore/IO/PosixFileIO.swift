// The real file system: every syscall WALCore makes is here, wrapped once, retrying
// EINTR and turning errno into IOError (the swift-nio System.swift pattern).
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let ENOSPCValue: Int32 = ENOSPC
let EDQUOTValue: Int32 = EDQUOT
let EWOULDBLOCKValue: Int32 = EWOULDBLOCK
let ENOENTValue: Int32 = ENOENT

func errnoDescription(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// `FileIO` backed by POSIX calls.
public struct PosixFileIO: FileIO {
    public init() {}

    @inline(__always)
    private func retrying<T: BinaryInteger>(_ operation: String, _ path: String, _ call: () -> T) throws -> T {
        while true {
            let result = call()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw IOError(operation, path: path, errno: code)
        }
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
        guard let dir = opendir(directory) else { throw IOError("opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
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
