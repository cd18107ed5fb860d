// Output that never traps and is never lost in silence: stdout goes through stdio, is checked
// after each streamed record and once more at exit, and a failed write (a full disk, /dev/full)
// ends walctl with an error on stderr and exit status 1. Foundation's FileHandle.write is not
// used: it traps on ENOSPC and EPIPE.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

enum StandardStreams {
    /// Registered once, before any command runs.
    static func checkStandardOutputAtExit() {
        atexit {
            // exit() would flush stdout after this handler and drop a failure without a word.
            if fflush(stdout) != 0 || ferror(stdout) != 0 { StandardStreams.failedWritingStandardOutput() }
        }
    }

    /// Writes raw bytes to stdout (buffered with everything `print` writes, so in order).
    static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { _ = fwrite($0.baseAddress, 1, $0.count, stdout) }
        checkStandardOutput()
    }

    /// Pushes what stdout buffered to the file or pipe now (a streamed record must not wait).
    static func flush() {
        if fflush(stdout) != 0 { failedWritingStandardOutput() }
    }

    /// Writes one line to stdout at once: a failure is reported with its own errno, not left for
    /// the check at exit (by which time the cause may be gone).
    static func printLine(_ text: String) {
        write(Array((text + "\n").utf8))
        flush()
    }

    /// Ends walctl when an earlier write to stdout failed (a stream stops at the first one).
    static func checkStandardOutput() {
        if ferror(stdout) != 0 { failedWritingStandardOutput() }
    }

    /// Writes `text` to stderr, ignoring failure (there is nowhere left to report it).
    static func writeError(_ text: String) {
        _ = fputs(text, stderr)
    }

    /// "10" or "2.5".
    static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    /// Ends walctl with `code` once stdout is flushed (a failed flush still says so).
    static func exit(_ code: Int32) -> Never {
        flush()
        Glibc.exit(code)
    }

    static func failedWritingStandardOutput(errno code: Int32 = errno) -> Never {
        let reason = code == 0 ? "write failed" : String(cString: strerror(code))
        printError("error: cannot write to standard output: \(reason)")
        _exit(1)
    }
}
