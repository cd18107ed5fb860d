// `walctl repair`: says what cutting a damaged log at its first damage removes (records,
// segments, bytes, LSNs, and whether any of it looks acknowledged), then cuts it, keeping a
// `.broken` copy of every file it changes or sets aside. Removing what looks acknowledged
// needs --force; a repair that cuts records starts a new generation of the log, so LSNs handed
// out again are told apart (INFO shows it; followers of the old generation refuse to go on).
import ArgumentParser
import WALCore

struct Repair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut a damaged log at its first damage so it can be opened again.",
        discussion: """
            First prints what the cut removes: the records (count and LSNs), the bytes cut from \
            the damaged segment and the later segments set aside. With --dry-run it stops there \
            and changes nothing. Records that look acknowledged as durable (in a segment that \
            was sealed, in a log stopped cleanly, or covered by a later record's committed LSN) \
            are only removed with --force. Each segment that is cut is first copied to \
            <name>.broken; later segments are renamed to <name>.broken. A cut of records starts a \
            new generation: the log goes on at the first LSN cut, in a new segment whose header \
            carries the next generation. Takes the directory's LOCK file: stop wald first.

            Exit status: 0 repaired (or nothing to repair, or a dry run), 1 an error, 3 refused: \
            the cut would remove acknowledged-looking records and --force was not given.
            """
    )

    @OptionGroup var data: DataDirectoryOptions
    @Flag(name: .customLong("dry-run"), help: "Print what would be cut and change nothing.") var dryRun = false
    @Flag(help: "Cut even records that look acknowledged as durable.") var force = false

    func run() async throws {
        let before = Set(try data.requireSegments())
        let report: VerifyReport
        do { report = try verifyLog(directory: data.directory, segmentPrefix: data.segmentPrefix) } catch { fail("\(error)") }
        guard let plan = report.cut else {
            print("nothing to repair: every segment of \(data.directory) is intact (\(report.records) records)")
            return
        }
        describe(plan, report: report)
        if dryRun {
            print("dry run: nothing was changed")
            return
        }
        if plan.discardsAcknowledged && !force {
            StandardStreams.flush()
            printError("refusing to cut records that look acknowledged as durable (through LSN \(plan.acknowledgedThrough!)); "
                       + "copy the directory first if you can, then rerun with --force")
            throw ExitCode(3)
        }
        let status: WALStatus
        do {
            status = try await WAL.repair(data.walOptions())
        } catch WALError.locked(let directory) {
            fail("\(directory) is locked by another process (is wald running on it?); stop it and retry")
        } catch {
            fail("repair failed: \(error)")
        }
        let after = Set((try? data.requireSegments()) ?? [])
        for name in before.subtracting(after).sorted() { print("set aside \(name) (renamed with a .broken suffix)") }
        let records = status.lastLSN >= status.firstLSN ? "LSN \(status.firstLSN)...\(status.lastLSN)" : "no records"
        print("repaired: \(status.segments) segments, \(records), generation \(status.generation); the next append gets LSN \(status.lastLSN + 1)")
    }

    private func describe(_ plan: RepairPlan, report: VerifyReport) {
        var lines: [String] = []
        for slack in plan.slackZeroed {
            lines.append("damage in \(slack.file) at byte \(slack.offset), after the segment's last record: "
                         + "\(slack.bytes) bytes are zeroed (the file is copied to .broken first); no record is lost")
        }
        if plan.slackOnly {
            lines.append("damage in \(plan.file) at byte \(plan.offset): \(plan.reason)")
            lines.append("repair zeroes \(plan.bytesCut) bytes (the file is copied to .broken first) and cuts nothing: "
                         + "every record and segment stays, in the same generation")
            print(lines.joined(separator: "\n"))
            return
        }
        if plan.tornTailOnly {
            lines.append("torn tail in \(plan.file) at byte \(plan.offset) (LSN \(plan.lsn)): \(plan.reason)")
            lines.append("nothing in it was acknowledged as durable; wald cuts it by itself at its next start")
        } else {
            lines.append("damage in \(plan.file) at byte \(plan.offset) (LSN \(plan.lsn)): \(plan.reason)")
            if report.damages.count > 1 {
                lines.append("\(report.damages.count - 1) more damaged places after it go with the cut (walctl verify lists them)")
            }
        }
        lines.append("the cut removes:")
        let more = plan.countIsLowerBound ? "at least " : ""
        if let last = plan.lastDiscardedLSN, last >= plan.lsn {
            lines.append("  records: LSN \(plan.lsn)...\(last): \(more)\(plan.validRecordsDiscarded) intact records and the damaged ones")
        } else {
            lines.append("  records: from LSN \(plan.lsn): the damaged record(s) only, \(more)\(plan.validRecordsDiscarded) intact ones")
        }
        if plan.bytesCut > 0 {
            lines.append("  \(plan.bytesCut) bytes of \(plan.file) from byte \(plan.offset) (the file is copied to .broken first)")
        }
        if !plan.segmentsSetAside.isEmpty {
            lines.append("  \(plan.segmentsSetAside.count) segments (\(plan.bytesSetAside) bytes), renamed to <name>.broken: "
                         + plan.segmentsSetAside.joined(separator: ", "))
        }
        if let acknowledged = plan.acknowledgedThrough {
            lines.append("records through LSN \(acknowledged) look acknowledged as durable: clients may have been told they are safe")
        }
        if plan.emptiesLog {
            lines.append("every segment is set aside: the directory then gets a new, empty log (a new log id, from LSN 1); "
                         + "followers and clients of the old one must start over")
        } else if plan.startsNewGeneration {
            lines.append("the log then goes on at LSN \(plan.lsn) in generation \(report.generation + 1): LSNs from \(plan.lsn) will be "
                         + "handed out again; followers of generation \(report.generation) refuse to go on and must be rebuilt")
        }
        print(lines.joined(separator: "\n"))
    }
}
