// Damage found while the log is open — by a replay that reached a record failing its check, or
// by the background scrub — is remembered here: logged once at error with file, byte offset and
// LSN, counted in the `wald_damaged_places` gauge, and listed by `WAL.damage` (INFO's "damage").
import CoreMetrics
import Logging
import Synchronization
import WALSync

/// One damaged place in the log.
public struct DamageReport: Sendable, Equatable {
    public let file: String
    public let offset: Int
    public let lsn: LSN
    public let reason: String
    /// What found it: "replay" (any reader) or "scrub".
    public let foundBy: String
}

final class DamageLog: Sendable {
    private let reports = WALMutex<[DamageReport]>([])
    private let logger: Logger
    private let gauge = Gauge(label: "wald_damaged_places")

    init(logger: Logger) {
        self.logger = logger
        gauge.record(0)
    }

    /// Records `error` if it is corruption not reported before (same file and offset).
    func report(_ error: WALError, foundBy: String) {
        guard case .corruption(let file, let offset, let lsn, let reason) = error else { return }
        let count = reports.withLock { list -> Int? in
            guard !list.contains(where: { $0.file == file && $0.offset == offset }) else { return nil }
            list.append(DamageReport(file: file, offset: offset, lsn: lsn, reason: reason, foundBy: foundBy))
            return list.count
        }
        guard let count else { return }
        gauge.record(count)
        logger.error("the log is damaged: records from this LSN on in this segment cannot be read; stop wald and run walctl verify", metadata: [
            "file": "\(file)", "offset": "\(offset)", "lsn": "\(lsn)", "reason": "\(reason)", "found_by": "\(foundBy)",
        ])
    }

    var all: [DamageReport] { reports.withLock { $0 } }
}
