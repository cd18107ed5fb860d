// Sequential reading from any LSN up to the durable LSN, in constant memory, checking
// every CRC. Works while appends continue: each call to `next` sees what has become
// durable since, and rotation and retention are followed through the shared catalog.

/// One record read back from the log.
public struct Record: Sendable, Equatable {
    public let lsn: LSN
    public let payload: [UInt8]
}

/// Reads records in LSN order. Not thread-safe: use it from one task at a time.
public final class LogReader {
    private let io: any FileIO
    private let directory: String
    private let catalog: SegmentCatalog
    private let durable: DurableLSN
    private let hold: SegmentHold
    /// Where damage found while reading is reported (the open log's; none offline).
    private let damage: DamageLog?
    private var window: FileWindow?
    private var segment: SegmentInfo?
    /// How the open segment lays out its frames.
    private var layout = RecordFrame.Layout.current
    private var segmentSize = 0
    private var offset = 0
    /// The LSN `next` returns next.
    public private(set) var nextLSN: LSN
    private var limit: LSN = 0

    init(io: any FileIO, directory: String, catalog: SegmentCatalog, durable: DurableLSN, from lsn: LSN,
         damage: DamageLog? = nil) {
        self.damage = damage
        self.io = io
        self.directory = directory
        self.catalog = catalog
        self.durable = durable
        nextLSN = lsn
        hold = SegmentHold(catalog: catalog, lsn: lsn)
    }

    deinit {
        if let window { io.close(window.handle) }
    }

    /// The next durable record, or nil when the reader has caught up with the durable LSN
    /// (call again later to see newer records).
    public func next() throws -> Record? {
        var record: Record?
        _ = try read(maxCount: 1) { lsn, payload in
            record = Record(lsn: lsn, payload: Array(payload))
            return true
        }
        return record
    }

    /// Calls `body` with up to `maxCount` records (0 = no limit) without copying payloads;
    /// the buffer is only valid during the call. Stops early when `body` returns false.
    /// Returns the number of records delivered.
    @discardableResult
    public func read(maxCount: Int = 0, _ body: (LSN, UnsafeRawBufferPointer) throws -> Bool) throws -> Int {
        do {
            return try readRecords(maxCount: maxCount, body)
        } catch let error as WALError {
            if case .corruption = error { damage?.report(error, foundBy: "replay") }
            throw error
        }
    }

    private func readRecords(maxCount: Int, _ body: (LSN, UnsafeRawBufferPointer) throws -> Bool) throws -> Int {
        var delivered = 0
        while maxCount == 0 || delivered < maxCount {
            if nextLSN > limit {
                limit = durable.lsn
                if nextLSN > limit { break }
            }
            try positionForNextLSN()
            let window = window!
            var (view, decoded) = try decodeNext(window)
            if case .record = decoded {} else {
                // The window may hold bytes read before this record was written (the zero tail
                // of the active segment, or a stale size bounding the frame length): read the
                // file again before calling it damage. A tailing reader lands here once per
                // batch of new records, so the re-read starts small (see FileWindow).
                window.invalidate()
                segmentSize = try wrapIO { try io.size(window.handle, path: window.path) }
                (view, decoded) = try decodeNext(window)
            }
            switch decoded {
            case .record(_, let payload, let next):
                let keepGoing = try body(nextLSN, UnsafeRawBufferPointer(rebasing: view[payload]))
                offset += next
                nextLSN += 1
                delivered += 1
                if !keepGoing { return delivered }
            case .needMore:
                throw corruption("file ends inside the record")
            case .invalid(let reason):
                throw corruption(reason.description)
            }
        }
        return delivered
    }

    private func decodeNext(_ window: FileWindow) throws -> (UnsafeRawBufferPointer, RecordFrame.Decoded) {
        var view = try window.view(from: offset, minimum: layout.headerSize)
        let maxPayload = max(0, segmentSize - offset - layout.headerSize)
        var decoded = RecordFrame.decode(view, at: 0, expectedLSN: nextLSN, maxPayload: maxPayload, layout: layout)
        if case .needMore(let bytes) = decoded {
            view = try window.view(from: offset, minimum: bytes)
            decoded = RecordFrame.decode(view, at: 0, expectedLSN: nextLSN, maxPayload: maxPayload, layout: layout)
        }
        return (view, decoded)
    }

    private func corruption(_ reason: String) -> WALError {
        .corruption(file: joinPath(directory, segment?.name ?? "?"), offset: offset, lsn: nextLSN, reason: reason)
    }

    /// Opens the segment holding `nextLSN` when the reader is not in it yet, skipping
    /// records before `nextLSN` when starting mid-segment.
    private func positionForNextLSN() throws {
        if let segment, nextLSN >= segment.firstLSN {
            if let following = catalog.segment(containing: nextLSN), following.segment.firstLSN == segment.firstLSN {
                return
            }
        }
        guard let found = catalog.segment(containing: nextLSN), nextLSN >= catalog.firstLSN else {
            throw WALError.outOfRange(lsn: nextLSN, first: catalog.firstLSN, last: durable.lsn)
        }
        if let window { io.close(window.handle) }
        window = nil
        let path = joinPath(directory, found.segment.name)
        let handle: IOHandle
        do {
            handle = try io.open(path, mode: .readOnly)
        } catch {
            // Deleted by retention between the lookup and the open.
            throw WALError.outOfRange(lsn: nextLSN, first: catalog.firstLSN, last: durable.lsn)
        }
        let newWindow = FileWindow(io: io, handle: handle, path: path)
        window = newWindow
        segment = found.segment
        segmentSize = try wrapIO { try io.size(handle, path: path) }
        let header: SegmentHeader
        do {
            header = try SegmentScanner.readHeader(io: io, handle: handle, path: path)
        } catch WALError.corruption(let file, let offset, _, let reason) {
            // readHeader knows no LSN; name the segment's first LSN, as open and verifyLog do.
            throw WALError.corruption(file: file, offset: offset, lsn: found.segment.firstLSN, reason: reason)
        }
        guard header.firstLSN == found.segment.firstLSN else {
            offset = 0
            throw corruption("segment header says first LSN \(header.firstLSN)")
        }
        hold.move(to: found.segment.firstLSN)
        layout = header.layout
        offset = SegmentHeader.size
        var lsn = found.segment.firstLSN
        while lsn < nextLSN {
            let view = try newWindow.view(from: offset, minimum: layout.headerSize)
            var decoded = RecordFrame.decode(view, at: 0, expectedLSN: lsn, maxPayload: segmentSize, layout: layout)
            if case .needMore(let bytes) = decoded {
                decoded = RecordFrame.decode(try newWindow.view(from: offset, minimum: bytes), at: 0, expectedLSN: lsn,
                                             maxPayload: segmentSize, layout: layout)
            }
            guard case .record(_, _, let next) = decoded else {
                let saved = nextLSN
                nextLSN = lsn
                defer { nextLSN = saved }
                throw corruption("cannot skip to LSN \(saved): \(decoded)")
            }
            offset += next
            lsn += 1
        }
    }
}
