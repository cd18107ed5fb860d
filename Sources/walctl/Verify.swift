// `walctl verify`: reads every segment of a log (headers, record CRCs and LSNs, the chain
// between segments) without changing anything, and reports where the first damage is.
import ArgumentParser
import WALCore

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every segment and record of a log without changing it.",
        discussion: """
            Takes no lock and writes nothing, so it can run while wald is running (records being \
            appended at that moment may show up as a torn tail).

            Exit status: 0 when the log is intact (a torn tail at the end of the last segment is \
            reported as a note: it is what a crash leaves, and opening the log cuts it), 1 when \
            the directory cannot be read or holds something named like a segment that is not a \
            regular file (a directory, a FIFO: no repair applies), 2 on damage (the file, byte \
            offset and LSN are printed; `walctl repair` cuts the log there).
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
        output.append("log \(report.logID.map { "\($0)" } ?? "?") in \(data.directory)\n")
        output.append(pad("segment", 30) + pad("first LSN", 12) + pad("last LSN", 12) + pad("records", 10) + "bytes\n")
        for segment in report.segments {
            output.append(pad(segment.name, 30) + pad("\(segment.firstLSN)", 12) + pad("\(segment.lastLSN)", 12)
                          + pad("\(segment.records)", 10) + "\(segment.bytes)\n")
        }
        let bytes = report.segments.reduce(0) { $0 + $1.bytes }
        if let first = report.firstLSN, let last = report.lastLSN, last >= first {
            output.append("total: \(report.segments.count) segments, \(report.records) records (LSN \(first)...\(last)), \(bytes) bytes\n")
        } else {
            output.append("total: \(report.segments.count) segments, no records, \(bytes) bytes\n")
        }
        if let torn = report.tornTail {
            output.append("note: torn tail in \(torn.file) at byte \(torn.offset) (LSN \(torn.lsn)): "
                          + "a write interrupted by a crash; opening the log cuts it\n")
        }
        if let damage = report.damage {
            output.flush()
            if case .corruption(let file, let offset, let lsn, let reason) = damage {
                printError("DAMAGE in \(file) at byte \(offset) (LSN \(lsn)): \(reason)")
            } else {
                printError("DAMAGE: \(damage)")
            }
            printError("the log cannot be opened as it is; `walctl repair \(data.directory)` cuts it at the damage, keeping .broken copies")
            throw ExitCode(2)
        }
        output.append("ok\n")
        output.flush()
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
