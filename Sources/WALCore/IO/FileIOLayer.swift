// A FileIO that wraps another and changes one or two calls (the test-only fault point, the
// scrub's throttle): every call it does not implement itself goes to `base` unchanged.

public protocol FileIOLayer: FileIO {
    /// The file system underneath.
    var base: any FileIO { get }
}

extension FileIOLayer {
    public func open(_ path: String, mode: OpenMode) throws -> IOHandle { try base.open(path, mode: mode) }
    public func close(_ handle: IOHandle) { base.close(handle) }
    public func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        try base.write(handle, bytes, at: offset, path: path)
    }
    public func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        try base.read(handle, into: buffer, at: offset, path: path)
    }
    public func syncData(_ handle: IOHandle, path: String) throws { try base.syncData(handle, path: path) }
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
