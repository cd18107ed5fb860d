// Which old segments to delete: the policy as a pure function, so it is tested apart
// from the files. Deletion always takes a prefix of the segment list (oldest first).

enum Retention {
    /// How many of the oldest `segments` to delete. The last (active) segment is never
    /// deleted, nor any segment holding an LSN at or above `lowestHold`.
    static func segmentsToDelete(
        segments: [SegmentInfo], sizes: [LSN: Int], activeBytes: Int,
        maxSegments: Int, retentionBytes: Int, truncateBefore: LSN?, lowestHold: LSN?
    ) -> Int {
        let count = segments.count
        guard count > 1 else { return 0 }
        var wanted = 0
        if maxSegments > 0 { wanted = max(wanted, count - maxSegments) }
        if retentionBytes > 0 {
            var total = activeBytes + segments.dropLast().reduce(0) { $0 + (sizes[$1.firstLSN] ?? 0) }
            var k = 0
            while total > retentionBytes && k < count - 1 {
                total -= sizes[segments[k].firstLSN] ?? 0
                k += 1
            }
            wanted = max(wanted, k)
        }
        if let truncateBefore {
            // Segment i holds only LSNs below segments[i+1].firstLSN.
            var k = 0
            while k < count - 1 && segments[k + 1].firstLSN <= truncateBefore { k += 1 }
            wanted = max(wanted, k)
        }
        var allowed = count - 1
        if let lowestHold {
            var k = 0
            while k < count - 1 && segments[k + 1].firstLSN <= lowestHold { k += 1 }
            allowed = min(allowed, k)
        }
        return min(wanted, allowed)
    }
}
