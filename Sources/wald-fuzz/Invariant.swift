// How a fuzz target reports a broken property: a trap with a message, which libFuzzer (and
// the replay mode) turns into a saved crash input.
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
               file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        printError("wald-fuzz: invariant failed at \(file):\(line): \(message())")
        abort()
    }
}

/// Writes a line to standard error (unbuffered, so it is there when the process aborts).
func printError(_ text: String) {
    let line = Array((text + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// Runs async code from the synchronous fuzz callback: a detached task and a semaphore.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

/// Written by the task before `signal`, read after `wait`: the semaphore orders the two.
private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}
