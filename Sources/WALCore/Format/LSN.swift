// The log sequence number, as docs/format.md defines it.

/// A log sequence number: records are numbered densely from 1 (docs/format.md); 0 means
/// "none" (an empty log's last LSN, a header's previous-segment field when there is none), and
/// 2^64 − 2 is the last a log can hand out (the next would leave no LSN after it).
public typealias LSN = UInt64
