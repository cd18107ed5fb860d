// `walctl verify`: reads every segment of a log to its end (headers, record CRCs and LSNs, the
// chain between segments) without changing anything, and reports every damage it finds.
import ArgumentParser
import WALCore

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every segment and record of a log without changing it.",
        discussion: """
            Takes no lock and writes nothing, so it can run while wald is running (records being \
            appended at that moment may show up as a torn tail). Every segment is read to its \
            end; after damage the check goes on at the next valid record, so all damage is \
            listed, each with file, byte offset and LSN. "bytes" are the segment files' sizes \
            (preallocated space included), as in INFO and the wald_disk_bytes metric.

            Exit status: 0 when the log is intact (a torn tail at the end of the last segment is \
            reported as a note: it is what a crash leaves, and opening the log cuts it), 1 when \
            the directory cannot be read or holds something named like a segment that is not a \
            regular file (a directory, a FIFO: no repair applies), 2 on damage (`walctl repair` \
            shows what cutting the log at the first damage would remove).
            """
    )

    @OptionGroup var data: DataDirectoryOptions

    func run() async throws {
        _ = try data.requireSegments()
        let report: VerifyReport
        do {
            report = try verifyLog(directory: data.directory, segmentPrefix: data.segmentPrefix)
        } catch {
            fail("\(error)")
        }
        let output = OutputBuffer()
        output.append("log \(report.logID.map { "\($0)" } ?? "?") generation \(report.generation) in \(data.directory)\n")
        output.append(pad("segment", 30) + pad("first LSN", 12) + pad("last LSN", 12) + pad("records", 10) + "bytes\n")
        for segment in report.segments {
            let last = segment.unreadable ? "?" : "\(segment.lastLSN)"
            let records = segment.unreadable ? "?" : "\(segment.records)"
            output.append(pad(segment.name, 30) + pad("\(segment.firstLSN)", 12) + pad(last, 12)
                          + pad(records, 10) + "\(segment.bytes)\n")
        }
        if let first = report.firstLSN, let last = report.lastLSN, last >= first {
            output.append("total: \(report.segments.count) segments, \(report.records) records (LSN \(first)...\(last)), \(report.bytes) bytes in segment files\n")
        } else {
            output.append("total: \(report.segments.count) segments, no records, \(report.bytes) bytes in segment files\n")
        }
        if let torn = report.tornTail {
            output.append("note: torn tail in \(torn.file) at byte \(torn.offset) (LSN \(torn.lsn)): "
                          + "a write interrupted by a crash; opening the log cuts it\n")
        }
        guard !report.damages.isEmpty else {
            output.append("ok\n")
            output.flush()
            return
        }
        output.flush()
        for damage in report.damages {
            if case .corruption(let file, let offset, let lsn, let reason) = damage {
                printError("DAMAGE in \(file) at byte \(offset) (LSN \(lsn)): \(reason)")
            } else {
                printError("DAMAGE: \(damage)")
            }
        }
        printError("\(report.damages.count) damaged places; the log cannot be opened as it is. "
                   + "`walctl repair --dry-run \(data.directory)` shows what cutting it at the first damage removes")
        throw ExitCode(2)
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
