// Prepares the next segment file in the background (like etcd's file_pipeline), so a
// rotation only writes a header and renames: creating and zero-filling 64 MiB never
// happens on the append path unless appends outrun the preparer.
import Dispatch
import Synchronization
import WALSync

final class SegmentPreparer: Sendable {
    /// A created, zero-filled (when preallocating) and fdatasynced temp file.
    struct Prepared: Sendable {
        let handle: IOHandle
        let path: String
    }

    private let io: any FileIO
    private let path: String
    private let size: Int
    private let queue = DispatchQueue(label: "wald.wal.prepare")
    private let pending = WALMutex<(Result<Prepared, IOError>?, started: Bool)>((nil, false))
    private let ready = DispatchSemaphore(value: 0)

    /// `path` is the temp file's name; `size` the bytes of zeros to write (0 = no preallocation).
    init(io: any FileIO, path: String, size: Int) {
        self.io = io
        self.path = path
        self.size = size
    }

    /// Starts preparing in the background if not already started.
    func start() {
        let shouldStart = pending.withLock { state -> Bool in
            guard !state.started else { return false }
            state.started = true
            return true
        }
        guard shouldStart else { return }
        queue.async { [self] in
            let result = Result { () throws(IOError) in try prepare() }
            pending.withLock { $0.0 = result }
            ready.signal()
        }
    }

    /// Waits for the prepared file (starting the work if needed). After a failure the temp
    /// file is removed and the next call tries again.
    func take() throws(IOError) -> Prepared {
        var result = waitForResult()
        if case .failure = result {
            // The failure may be stale: a background attempt that met a full disk long ago
            // would otherwise fail the first rotation after space was freed. Try once more now.
            result = waitForResult()
        }
        return try result.get()
    }

    private func waitForResult() -> Result<Prepared, IOError> {
        start()
        ready.wait()
        return pending.withLock { state -> Result<Prepared, IOError> in
            defer { state = (nil, false) }
            return state.0!
        }
    }

    /// Closes and removes a prepared file nobody took (on close).
    func discard() {
        guard pending.withLock({ $0.started }) else { return }
        if let prepared = try? take() {
            io.close(prepared.handle)
            try? io.remove(prepared.path)
        }
    }

    private func prepare() throws(IOError) -> Prepared {
        do {
            try? io.remove(path)
            let handle = try io.open(path, mode: .createExclusive)
            do {
                try Recovery.zeroFill(io: io, handle: handle, path: path, from: 0, to: size)
                try io.syncData(handle, path: path)
            } catch {
                io.close(handle)
                try? io.remove(path)
                throw error
            }
            return Prepared(handle: handle, path: path)
        } catch let error as IOError {
            throw error
        } catch {
            throw IOError("prepare", path: path, errno: 0)
        }
    }
}
