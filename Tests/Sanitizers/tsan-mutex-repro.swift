// Why `make test-tsan` reports races on state that only Synchronization.Mutex guards: on Linux
// that Mutex locks through futexes that ThreadSanitizer does not see (the stdlib is not
// instrumented), so TSan learns no happens-before edge from it. This program is correct (every
// access to the dictionary is inside withLock) and TSan still reports "Swift access race":
//
//   swiftc -sanitize=thread -g Tests/Sanitizers/tsan-mutex-repro.swift -o /tmp/tsan-mutex-repro
//   /tmp/tsan-mutex-repro      # WARNING: ThreadSanitizer: Swift access race, in the withLock body
import Dispatch
import Synchronization

final class Box: Sendable { let state = Mutex([Int: [UInt8]]()) }
let box = Box()
DispatchQueue.concurrentPerform(iterations: 4) { i in
    for n in 0..<20000 {
        box.state.withLock { s in
            var a = s[n % 8] ?? []
            a.append(UInt8(i))
            if a.count > 64 { a.removeAll() }
            s[n % 8] = a
        }
    }
}
print("done", box.state.withLock { $0.count })
