// Plain descriptors and directories, for the tools: read(2) and write(2) until done,
// opendir(3)/readdir(3). The storage engine reaches files through WALCore's FileIO
// (PosixFileIO calls these wrappers and `retryingInterrupts`).
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

public enum Descriptors {
    /// write(2) until every byte is out. Throws `SystemError` naming `what` (ENOSPC, EPIPE, …).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            offset += try retryingInterrupts("write", what()) {
                Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            }
        }
    }

    /// One read(2) into `buffer`: the byte count, 0 at end of file. Throws `SystemError`.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, what: @autoclosure () -> String) throws(SystemError) -> Int {
        try retryingInterrupts("read", what()) { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// The names in `directory` without `.` and `..`, in readdir order. Throws `SystemError`
    /// from opendir (ENOENT, EACCES, ENOTDIR).
    public static func listDirectory(_ directory: String) throws(SystemError) -> [String] {
        guard let dir = opendir(directory) else { throw SystemError("opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
