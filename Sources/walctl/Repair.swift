// `walctl repair`: opens a damaged log with repair, which cuts it at the first damage and
// keeps a `.broken` copy of every file it changes or sets aside.
import ArgumentParser
import WALCore

struct Repair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut a damaged log at its first damage so it can be opened again.",
        discussion: """
            Everything from the first damaged record on is removed from the log. Each segment \
            that is cut is first copied to <name>.broken; segments after the damage are renamed \
            to <name>.broken. Takes the directory's LOCK file: stop wald first.
            """
    )

    @OptionGroup var data: DataDirectoryOptions

    func run() async throws {
        let before = Set(try data.requireSegments())
        let report = try? verifyLog(directory: data.directory, segmentPrefix: data.segmentPrefix)
        if case .corruption(let file, let offset, let lsn, let reason)? = report?.damage {
            print("damage in \(file) at byte \(offset) (LSN \(lsn)): \(reason)")
        } else if let damage = report?.damage {
            print("damage found: \(damage)")
        } else if let torn = report?.tornTail {
            print("no damage; torn tail in \(torn.file) at byte \(torn.offset) (LSN \(torn.lsn)) will be cut")
        } else {
            print("no damage found; opening the log to confirm")
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
        for name in before.subtracting(after).sorted() { print("set aside \(name) as \(name).broken") }
        if report?.damage != nil {
            print("cut at the damage: every record after LSN \(status.lastLSN) is only in the .broken files")
        }
        if status.lastLSN >= status.firstLSN {
            print("repaired: \(status.segments) segments, LSN \(status.firstLSN)...\(status.lastLSN)")
        } else {
            print("repaired: \(status.segments) segments, no records (next LSN \(status.firstLSN))")
        }
    }
}
