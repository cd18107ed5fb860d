// An in-memory file system for fault-injection tests. It keeps what was written apart
// from what was made durable (fdatasync for file data, directory fsync for names), and
// `powerCut` returns the disk as a crash would leave it: durable state plus, per file, either
// a random prefix of the unsynced writes (the last one torn at a sector boundary), or any
// subset of the unsynced 4 KiB pages, each whole, missing or torn at 512-byte sectors, in no
// particular order (what a page cache and a disk really do); per directory a random prefix of
// the unsynced name changes. A sector is the unit a disk writes whole.
import Synchronization
#if canImport(Glibc)
import Glibc
import WALSync
#endif

public final class SimulatedFileIO: FileIO {
    private enum FileOp {
        case write(offset: Int, bytes: [UInt8])
        case truncate(size: Int)
    }

    private enum DirectoryOp {
        case link(name: String, inode: Int)
        case unlink(name: String)
    }

    private struct Inode {
        var durable: [UInt8] = []
        var current: [UInt8] = []
        var pending: [FileOp] = []
    }

    private struct State {
        var inodes: [Int: Inode] = [:]
        var nextInode = 1
        /// Names as the running system sees them (full paths).
        var names: [String: Int] = [:]
        /// Names that survive a crash.
        var durableNames: [String: Int] = [:]
        var pendingNames: [String: [DirectoryOp]] = [:]  // per directory
        var directories: Set<String> = []
        var handles: [Int32: (inode: Int, path: String)] = [:]
        var nextHandle: Int32 = 100
        var locks: [String: Int32] = [:]
        // Faults
        var syncCalls = 0
        var failSyncAtCall: Int?
        var syncErrno: Int32 = 5  // EIO
        var capacityBytes: Int?
        var noSpaceFailures = 0
        var syncDelayHook: (@Sendable (_ path: String) -> Void)?
    }

    private let state = WALMutex(State())

    public init() {}

    // MARK: Fault controls

    /// Makes the `n`-th fdatasync from now (1 = the next one) and every later one fail with `errno`.
    public func failSync(afterCalls n: Int = 1, errno: Int32 = 5) {
        state.withLock {
            $0.failSyncAtCall = $0.syncCalls + n
            $0.syncErrno = errno
        }
    }

    /// Limits the total size of all files; writes past it fail with ENOSPC after a partial write.
    public func setCapacity(_ bytes: Int?) {
        state.withLock { $0.capacityBytes = bytes }
    }

    /// Writes that have failed with ENOSPC so far (lets a test wait for background work to hit a full disk).
    public var noSpaceFailures: Int {
        state.withLock { $0.noSpaceFailures }
    }

    /// Total bytes of all files currently reachable by name.
    public var usedBytes: Int {
        state.withLock { s in Set(s.names.values).reduce(0) { $0 + (s.inodes[$1]?.current.count ?? 0) } }
    }

    /// How a power cut treats data written but not synced.
    public enum CrashModel: Sendable {
        /// A random prefix of each file's unsynced writes survives, the last one torn at a
        /// sector boundary.
        case prefix
        /// Each unsynced 4 KiB page survives whole, not at all, or torn (each 512-byte sector
        /// new or old), independently of the others; a grown file keeps its new size or not.
        case pages
    }

    public static let sectorSize = 512
    public static let pageSize = 4096

    /// The disk after a power cut: durable bytes and names, plus what `model` lets survive of
    /// the unsynced writes, and for each directory a random prefix of its unsynced changes.
    public func powerCut<G: RandomNumberGenerator>(using generator: inout G, model: CrashModel = .prefix) -> SimulatedFileIO {
        let survivor = SimulatedFileIO()
        let snapshot = state.withLock { $0 }
        var inodes: [Int: Inode] = [:]
        for (id, inode) in snapshot.inodes {
            let data: [UInt8]
            switch model {
            case .prefix: data = Self.prefixSurvivor(inode, using: &generator)
            case .pages: data = inode.pending.isEmpty ? inode.durable : Self.pageSurvivor(inode, using: &generator)
            }
            inodes[id] = Inode(durable: data, current: data, pending: [])
        }
        var names = snapshot.durableNames
        for (_, ops) in snapshot.pendingNames {
            let keep = Int.random(in: 0...ops.count, using: &generator)
            for op in ops.prefix(keep) {
                switch op {
                case .link(let name, let inode): names[name] = inode
                case .unlink(let name): names[name] = nil
                }
            }
        }
        survivor.state.withLock {
            $0.inodes = inodes.filter { entry in names.values.contains(entry.key) }
            $0.nextInode = snapshot.nextInode
            $0.names = names
            $0.durableNames = names
            $0.directories = snapshot.directories
        }
        return survivor
    }

    private static func prefixSurvivor<G: RandomNumberGenerator>(_ inode: Inode, using generator: inout G) -> [UInt8] {
        var data = inode.durable
        let keep = inode.pending.isEmpty ? 0 : Int.random(in: 0...inode.pending.count, using: &generator)
        for (index, op) in inode.pending.prefix(keep).enumerated() {
            switch op {
            case .truncate(let size): resize(&data, to: size)
            case .write(let offset, var bytes):
                if index == keep - 1 && Bool.random(using: &generator) {
                    // Torn at a sector boundary: the sectors before it are new, the rest old.
                    let firstBoundary = (offset / sectorSize + 1) * sectorSize
                    let boundaries = stride(from: firstBoundary, to: offset + bytes.count, by: sectorSize).map { $0 }
                    let cut = ([offset] + boundaries).randomElement(using: &generator)!
                    bytes = Array(bytes.prefix(cut - offset))
                }
                apply(&data, offset: offset, bytes: bytes)
            }
        }
        return data
    }

    private static func pageSurvivor<G: RandomNumberGenerator>(_ inode: Inode, using generator: inout G) -> [UInt8] {
        let old = inode.durable
        let new = inode.current
        // The size is metadata: a file that grew may keep its old size.
        let size = old.count == new.count ? new.count : (Bool.random(using: &generator) ? new.count : old.count)
        var data = [UInt8](repeating: 0, count: size)
        let pages = (max(old.count, new.count) + pageSize - 1) / pageSize
        for page in 0..<pages {
            let start = page * pageSize
            guard start < size else { break }
            let end = min(start + pageSize, size)
            let oldPage = Self.slice(old, start, end)
            let newPage = Self.slice(new, start, end)
            if oldPage == newPage {
                data.replaceSubrange(start..<end, with: newPage)
                continue
            }
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: data.replaceSubrange(start..<end, with: oldPage)
            case 1: data.replaceSubrange(start..<end, with: newPage)
            default:
                for sector in stride(from: start, to: end, by: sectorSize) {
                    let sectorEnd = min(sector + sectorSize, end)
                    let source = Bool.random(using: &generator) ? newPage : oldPage
                    data.replaceSubrange(sector..<sectorEnd, with: source[(sector - start)..<(sectorEnd - start)])
                }
            }
        }
        return data
    }

    /// Bytes [start, end) of `data`, zeros where `data` is shorter.
    private static func slice(_ data: [UInt8], _ start: Int, _ end: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: end - start)
        if start < data.count {
            let available = min(end, data.count)
            out.replaceSubrange(0..<(available - start), with: data[start..<available])
        }
        return out
    }

    /// Flips one bit of `path`'s synced contents (and what the running system sees): the
    /// bit rot a medium can do to data that was written and synced long ago.
    public func flipBit(_ path: String, at offset: Int, bit: Int) {
        state.withLock { s in
            guard let id = s.names[path], var inode = s.inodes[id], offset < inode.durable.count else { return }
            inode.durable[offset] ^= UInt8(1 << (bit % 8))
            if offset < inode.current.count { inode.current[offset] ^= UInt8(1 << (bit % 8)) }
            s.inodes[id] = inode
        }
    }

    /// The paths of every file, for tests that pick one to damage.
    public var filePaths: [String] {
        state.withLock { Array($0.names.keys) }
    }

    /// The current contents of `path` (as the running system sees it), for assertions.
    public func contents(of path: String) -> [UInt8]? {
        state.withLock { s in s.names[path].flatMap { s.inodes[$0]?.current } }
    }

    /// Replaces the contents of `path` durably (to plant corruption in tests).
    public func overwrite(_ path: String, with bytes: [UInt8]) {
        state.withLock { s in
            guard let id = s.names[path] else { return }
            s.inodes[id] = Inode(durable: bytes, current: bytes, pending: [])
        }
    }

    // MARK: FileIO

    private static func apply(_ data: inout [UInt8], offset: Int, bytes: [UInt8]) {
        if data.count < offset + bytes.count { data.append(contentsOf: repeatElement(0, count: offset + bytes.count - data.count)) }
        data.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    private static func resize(_ data: inout [UInt8], to size: Int) {
        if data.count > size { data.removeLast(data.count - size) } else {
            data.append(contentsOf: repeatElement(0, count: size - data.count))
        }
    }

    private static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private func handleInfo(_ s: State, _ handle: IOHandle, _ op: String) throws -> (inode: Int, path: String) {
        guard let info = s.handles[handle.raw] else { throw IOError(op, path: "fd \(handle.raw)", errno: EBADF) }
        return info
    }

    public func open(_ path: String, mode: OpenMode) throws -> IOHandle {
        try state.withLock { s in
            let dir = Self.parent(of: path)
            guard s.directories.contains(dir) else { throw IOError("open", path: path, errno: ENOENT) }
            var inode = s.names[path]
            switch mode {
            case .createExclusive:
                guard inode == nil else { throw IOError("open", path: path, errno: EEXIST) }
                let id = s.nextInode
                s.nextInode += 1
                s.inodes[id] = Inode()
                s.names[path] = id
                s.pendingNames[dir, default: []].append(.link(name: path, inode: id))
                inode = id
            case .readOnly, .readWrite:
                guard inode != nil else { throw IOError("open", path: path, errno: ENOENT) }
            }
            let handle = s.nextHandle
            s.nextHandle += 1
            s.handles[handle] = (inode!, path)
            return IOHandle(raw: handle)
        }
    }

    public func close(_ handle: IOHandle) {
        state.withLock { s in
            s.handles[handle.raw] = nil
            if let locked = s.locks.first(where: { $0.value == handle.raw }) { s.locks[locked.key] = nil }
        }
    }

    public func write(_ handle: IOHandle, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        try state.withLock { s in
            let info = try handleInfo(s, handle, "pwrite")
            var inode = s.inodes[info.inode]!
            var data = Array(bytes)
            var failure: IOError?
            if let capacity = s.capacityBytes {
                let used = Set(s.names.values).reduce(0) { $0 + (s.inodes[$1]?.current.count ?? 0) }
                let growth = max(0, offset + data.count - inode.current.count)
                let room = capacity - used
                // Only growth needs space: a write within the file's size never fails, even when
                // other files (a background preparation) already pushed usage past the capacity.
                if growth > 0 && growth > room {
                    let fits = max(0, data.count - (growth - max(0, room)))
                    data = Array(data.prefix(fits))
                    failure = IOError("pwrite", path: path, errno: ENOSPC)
                    s.noSpaceFailures += 1
                }
            }
            if !data.isEmpty {
                Self.apply(&inode.current, offset: offset, bytes: data)
                inode.pending.append(.write(offset: offset, bytes: data))
                s.inodes[info.inode] = inode
            }
            if let failure { throw failure }
        }
    }

    public func read(_ handle: IOHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws -> Int {
        try state.withLock { s in
            let info = try handleInfo(s, handle, "pread")
            let data = s.inodes[info.inode]!.current
            guard offset < data.count else { return 0 }
            let n = min(buffer.count, data.count - offset)
            data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            return n
        }
    }

    public func syncData(_ handle: IOHandle, path: String) throws {
        let hook = state.withLock { $0.syncDelayHook }
        hook?(path)
        try state.withLock { s in
            let info = try handleInfo(s, handle, "fdatasync")
            s.syncCalls += 1
            if let failAt = s.failSyncAtCall, s.syncCalls >= failAt {
                // Like Linux after a writeback error: the dirty data may be gone for good.
                s.inodes[info.inode]!.pending.removeAll()
                s.inodes[info.inode]!.current = s.inodes[info.inode]!.durable
                throw IOError("fdatasync", path: path, errno: s.syncErrno)
            }
            s.inodes[info.inode]!.durable = s.inodes[info.inode]!.current
            s.inodes[info.inode]!.pending.removeAll()
        }
    }

    /// Runs `hook` (outside the lock) at the start of every fdatasync, e.g. to stall it.
    public func setSyncHook(_ hook: (@Sendable () -> Void)?) {
        let pathHook: (@Sendable (String) -> Void)? = if let hook { { _ in hook() } } else { nil }
        state.withLock { $0.syncDelayHook = pathHook }
    }

    /// Like `setSyncHook`, but `hook` is told which file is being synced, so a test can stall
    /// the group-commit sync of a segment without stalling the preparation of the next one.
    public func setSyncPathHook(_ hook: (@Sendable (_ path: String) -> Void)?) {
        state.withLock { $0.syncDelayHook = hook }
    }

    /// Handles currently open (files and locks), for descriptor-leak checks.
    public var openHandleCount: Int {
        state.withLock { $0.handles.count }
    }

    /// The path each open handle was opened by, for checks on one file's descriptors.
    public var openHandlePaths: [String] {
        state.withLock { $0.handles.values.map(\.path) }
    }

    public func size(_ handle: IOHandle, path: String) throws -> Int {
        try state.withLock { s in s.inodes[try handleInfo(s, handle, "fstat").inode]!.current.count }
    }

    public func truncate(_ handle: IOHandle, to size: Int, path: String) throws {
        try state.withLock { s in
            let id = try handleInfo(s, handle, "ftruncate").inode
            Self.resize(&s.inodes[id]!.current, to: size)
            s.inodes[id]!.pending.append(.truncate(size: size))
        }
    }

    public func rename(_ source: String, to destination: String) throws {
        try state.withLock { s in
            guard let id = s.names[source] else { throw IOError("rename", path: source, errno: ENOENT) }
            s.names[source] = nil
            s.names[destination] = id
            let dir = Self.parent(of: destination)
            s.pendingNames[dir, default: []].append(contentsOf: [.link(name: destination, inode: id), .unlink(name: source)])
        }
    }

    public func remove(_ path: String) throws {
        try state.withLock { s in
            guard s.names[path] != nil else { throw IOError("unlink", path: path, errno: ENOENT) }
            s.names[path] = nil
            s.pendingNames[Self.parent(of: path), default: []].append(.unlink(name: path))
        }
    }

    public func syncDirectory(_ directory: String) throws {
        state.withLock { s in
            for op in s.pendingNames[directory] ?? [] {
                switch op {
                case .link(let name, let inode): s.durableNames[name] = inode
                case .unlink(let name): s.durableNames[name] = nil
                }
            }
            s.pendingNames[directory] = nil
        }
    }

    public func list(_ directory: String) throws -> [String] {
        try state.withLock { s in
            guard s.directories.contains(directory) else { throw IOError("opendir", path: directory, errno: ENOENT) }
            let entries = Array(s.names.keys) + s.directories
            return entries.filter { Self.parent(of: $0) == directory && $0 != directory }.map { String($0.dropFirst(directory.count + 1)) }
        }
    }

    /// Only files and directories exist here.
    public func fileType(_ path: String) throws -> FileType {
        try state.withLock { s in
            if s.names[path] != nil { return .regular }
            if s.directories.contains(path) { return .directory }
            throw IOError("stat", path: path, errno: ENOENT)
        }
    }

    public func createDirectory(_ directory: String) throws {
        state.withLock { _ = $0.directories.insert(directory) }
    }

    public func lock(_ path: String) throws -> IOHandle {
        let handle: IOHandle
        if state.withLock({ $0.names[path] != nil }) {
            handle = try open(path, mode: .readWrite)
        } else {
            handle = try open(path, mode: .createExclusive)
        }
        return try state.withLock { s in
            if s.locks[path] != nil {
                s.handles[handle.raw] = nil
                throw IOError("flock", path: path, errno: EWOULDBLOCK)
            }
            s.locks[path] = handle.raw
            return handle
        }
    }
}
