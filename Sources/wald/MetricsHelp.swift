// The `# HELP` line of every metric wald exports. swift-metrics has no place for help text, and
// swift-prometheus stops the process when one name is registered with two different help texts,
// so the lines are added to the exposition text here, before each metric's `# TYPE` line.

enum MetricsHelp {
    static let text: [String: String] = [
        "wald_appended_records_total": "Records appended since start.",
        "wald_appended_bytes_total": "Payload bytes appended since start.",
        "wald_fsync_duration_seconds": "Duration of each fdatasync of the log (group commit).",
        "wald_records_per_fsync": "Records made durable by each fdatasync.",
        "wald_segments": "Segment files of the log.",
        "wald_disk_bytes": "Sizes of the segment files in bytes, preallocated space included (INFO bytes).",
        "wald_failed": "1 when the log is in its failed state (an fsync failed), else 0.",
        "wald_connections": "Open client connections.",
        "wald_connections_rejected_total": "Connections refused because max_connections were open.",
        "wald_replay_streams": "REPLAY streams being sent.",
        "wald_follow_streams": "Follow streams (followers and REPLAY FOLLOW) being served.",
        "wald_log_lines_dropped_total": "Log lines wald could not write whole (stderr or the journal would block or failed).",
        "wald_first_lsn": "First LSN still in the log.",
        "wald_last_lsn": "Last LSN appended (0 when empty).",
        "wald_durable_lsn": "Last LSN known to be on disk.",
        "wald_follower_lag_records": "Records a follower has not yet reported durable (by follower address).",
        "wald_damaged_places": "Damaged places in the log found since start, by replays and the scrub (INFO damage).",
        "wald_scrubbed_bytes_total": "Bytes of sealed segments checked by the background scrub.",
        "wald_scrub_passes_total": "Completed scrub passes over the sealed segments.",
        "wald_failovers_total": "Times this member took the leader lease in an election (automatic failover).",
        "wald_term": "The leadership term this member knows of (automatic failover; 0 without it).",
        "wald_lease_renew_duration_seconds": "Round trip of each renewal of this member's etcd lease (automatic failover).",
    ]

    /// `text` (Prometheus exposition) with a `# HELP` line before each `# TYPE` line that has none.
    static func annotate(_ exposition: String) -> String {
        var out = ""
        out.reserveCapacity(exposition.utf8.count + 2048)
        var previous = ""
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                if !previous.hasPrefix("# HELP \(name) ") {
                    out += "# HELP \(name) \(text[String(name)] ?? "wald metric \(name).")\n"
                }
            }
            out += line
            out += "\n"
            previous = String(line)
        }
        return String(out.dropLast())
    }
}
