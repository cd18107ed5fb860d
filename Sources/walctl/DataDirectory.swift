// What the offline commands share: the data-directory arguments, opening a log without
// creating one by accident, one-line errors on stderr, and buffered binary output.
import ArgumentParser
import WALCore
import WALSystem
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The directory and segment prefix every offline command takes.
struct DataDirectoryOptions: ParsableArguments {
    @Argument(help: "The log's data directory.")
    var directory: String

    @Option(name: .customLong("segment-prefix"), help: "File name prefix of the segments.")
    var segmentPrefix: String = "wal-"

    /// Fails (exit 1) when the directory is missing or holds no segment of this prefix, so an
    /// offline command never creates a new, empty log where the user expected one, and when
    /// something named like a segment is not a regular file (a directory, a FIFO), which no
    /// repair can make a segment of.
    func requireSegments() throws -> [String] {
        let entries: [String]
        do {
            entries = try Descriptors.listDirectory(directory)
        } catch {
            fail("cannot open \(directory): \(SystemError.describe(errno: error.errno))")
        }
        let names = entries.filter { SegmentName.parse($0, prefix: segmentPrefix) != nil }
        guard !names.isEmpty else {
            fail("no log in \(directory): no \(segmentPrefix)<lsn>.wal segment files (wrong --segment-prefix?)")
        }
        let io = PosixFileIO()
        for name in names {
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            do {
                let type = try io.fileType(path)
                if type != .regular { fail(WALError.notASegmentFile(path: path, type: type).description) }
            } catch {
                fail("\(error)")
            }
        }
        return names.sorted()
    }

    /// Options for opening the log from a tool: no preallocation of a next segment, no flush
    /// timer, and only warnings from the engine (on stderr).
    func walOptions() -> WALOptions {
        var options = WALOptions(directory: directory)
        options.segmentPrefix = segmentPrefix
        options.preallocate = false
        options.flushInterval = .zero
        options.maxRecordBytes = Int(UInt32.max) - 64
        options.logger.logLevel = .warning
        return options
    }
}

/// Prints `walctl: error: message` to stderr and exits with `code`.
func fail(_ message: String, code: Int32 = 1) -> Never {
    printError("error: \(message)")
    exit(code)
}

func printError(_ message: String) {
    var line = Array("walctl: \(message)\n".utf8)
    line.withUnsafeMutableBytes { _ = fwrite($0.baseAddress, 1, $0.count, stderr) }
}

/// Collects output bytes and writes them to stdout in large chunks.
final class OutputBuffer {
    private var bytes: [UInt8] = []
    private let limit = 1 << 16

    init() { bytes.reserveCapacity(limit + 4096) }

    func append(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
        if bytes.count >= limit { flush() }
    }

    func append(_ raw: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: raw)
        if bytes.count >= limit { flush() }
    }

    func append(byte: UInt8) { bytes.append(byte) }

    func flush() {
        do {
            try bytes.withUnsafeBytes { try Descriptors.writeAll(1, $0, what: "standard output") }
        } catch {
            StandardStreams.failedWritingStandardOutput(errno: (error as? SystemError)?.errno ?? EIO)
        }
        bytes.removeAll(keepingCapacity: true)
    }

    deinit { flush() }
}
