// A test-only fault point for the real file system: wald wraps its FileIO in this when the
// environment variable WALD_TEST_FAULT_FILE names a control file (documented in README as
// test-only). Before every fdatasync the file is read: `stall` blocks the sync until the
// file says otherwise, `fail` makes it fail with EIO. Nothing else changes behaviour.
#if canImport(Glibc)
import Glibc
#endif

public struct FaultInjectingFileIO: FileIO {
    private let base: any FileIO
    private let controlFile: String

    public init(base: any FileIO, controlFile: String) {
        self.base = base
        self.controlFile = controlFile
    }

    private func currentFault() -> String {
        guard let file = fopen(controlFile, "r") else { return "" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 32)
        guard fgets(&buffer, 32, file) != nil else { return "" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters()
    }

    public func syncData(_ handle: IOHandle, path: String) throws {
        while currentFault() == "stall" { usleep(20_000) }
        if currentFault() == "fail" { throw IOError("fdatasync", path: path, errno: EIO) }
        try base.syncData(handle, path: path)
    }

    public func open(_ path: String, mode: OpenMode) throws -> IOHandle { try base.open(path, mode: mode) }
    public func close(_ handle: IOHandle) { base.close(handle) }
    public func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        try base.write(handle, bytes, at: offset, path: path)
    }
    public func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        try base.read(handle, into: buffer, at: offset, path: path)
    }
    public func size(_ handle: IOHandle, path: String) throws -> Int { try base.size(handle, path: path) }
    public func truncate(_ handle: IOHandle, to size: Int, path: String) throws { try base.truncate(handle, to: size, path: path) }
    public func rename(_ source: String, to destination: String) throws { try base.rename(source, to: destination) }
    public func remove(_ path: String) throws { try base.remove(path) }
    public func syncDirectory(_ directory: String) throws { try base.syncDirectory(directory) }
    public func list(_ directory: String) throws -> [String] { try base.list(directory) }
    public func fileType(_ path: String) throws -> FileType { try base.fileType(path) }
    public func createDirectory(_ directory: String) throws { try base.createDirectory(directory) }
    public func lock(_ path: String) throws -> IOHandle { try base.lock(path) }
    public func unlock(_ handle: IOHandle) { base.unlock(handle) }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(unicodeScalars.filter { !$0.properties.isWhitespace })
    }
}
