// `walctl dump`: prints the records of a log, offline and read-only: nothing in the directory
// is written, created, removed or locked (OfflineLog), so it can run beside a running wald and
// on a read-only copy. Payloads are read in place (zero copy) through LogReader.read.
import ArgumentParser
import WALCore

struct Dump: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the records of a log (read-only).",
        discussion: """
            Changes nothing in the directory: it takes no lock, removes no temp file and cuts no \
            torn tail, so it can run while wald is running (it then sees the records written so \
            far). The log ends where wald would end it on its next start: a torn tail left by a \
            crash is not printed (a note on stderr says where it is), and damage stops the dump \
            with an error naming file, offset and LSN (exit status 2).

            """ + RecordFormat.help
    )

    @OptionGroup var data: DataDirectoryOptions

    @Option(help: "First LSN to print (default: the first in the log).")
    var from: UInt64?

    @Option(help: "Print at most this many records (default: all).")
    var count: Int?

    @Option(help: "Output format: text, json, hex or raw.")
    var format: RecordFormat = .text

    func validate() throws {
        if let count, count < 0 { throw ValidationError("--count must not be negative") }
        if from == 0 { throw ValidationError("LSNs start at 1; omit --from to start at the first record") }
    }

    func run() async throws {
        _ = try data.requireSegments()
        let log: OfflineLog
        do { log = try OfflineLog(directory: data.directory, segmentPrefix: data.segmentPrefix) } catch { fail("\(error)") }
        if let from, from < log.firstLSN || from > log.lastLSN {
            let range = log.lastLSN < log.firstLSN ? "the log is empty" : "the log holds LSN \(log.firstLSN)...\(log.lastLSN)"
            fail("--from \(from) is out of range: \(range)")
        }
        let output = OutputBuffer()
        if count != 0 {
            let format = format
            do {
                let reader = try log.reader(from: from ?? 0)
                try reader.read(maxCount: count ?? 0) { lsn, payload in
                    format.write(lsn: lsn, payload: payload, to: output)
                    return true
                }
            } catch {
                output.flush()
                fail("\(error)", code: 2)
            }
        }
        output.flush()
        let reachedEnd = count.map { $0 == 0 ? false : (from ?? log.firstLSN) &+ UInt64($0) > log.lastLSN } ?? true
        switch log.tail {
        case .torn(let file, let offset, let lsn)? where reachedEnd:
            printError("note: the log ends at LSN \(log.lastLSN): a torn tail in \(file) at byte \(offset) (from LSN \(lsn)), "
                       + "a write interrupted by a crash, is not printed; wald cuts it at its next start")
        case .damaged(let error)? where reachedEnd:
            fail("\(error)", code: 2)
        default:
            break
        }
    }
}
