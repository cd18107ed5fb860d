// The daemon's conversation with systemd, through libsystemd: readiness and status,
// the watchdog interval, and sockets passed by socket activation. Without NOTIFY_SOCKET
// (run by hand) every call is a harmless no-op.
import CSystemd
import Foundation

enum Systemd {
    /// Sends `state` (e.g. "READY=1\nSTATUS=serving") to the service manager.
    static func notify(_ state: String) {
        _ = sd_notify(0, state)
    }

    /// The watchdog interval when systemd asked for one for this process.
    static func watchdogInterval() -> Duration? {
        var micros: UInt64 = 0
        guard sd_watchdog_enabled(0, &micros) > 0, micros > 0 else { return nil }
        return .microseconds(Int64(micros))
    }

    /// Sockets passed by socket activation, with their FileDescriptorName.
    static func listenFileDescriptors() -> [(fd: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        var result: [(Int32, String)] = []
        for index in 0..<Int(count) {
            var name = "unknown"
            if let names, let pointer = names[index] {
                name = String(cString: pointer)
                free(pointer)
            }
            result.append((SD_LISTEN_FDS_START + Int32(index), name))
        }
        free(names)
        return result
    }

    /// CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC.
    static func monotonicMicros() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
