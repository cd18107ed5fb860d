// A Mutex that ThreadSanitizer can see, swapped in for Synchronization.Mutex by `make test-tsan`.
//
// On Linux, Synchronization.Mutex locks through raw futex syscalls inside the (uninstrumented)
// standard library, so TSan learns no happens-before edge from it and reports every access it
// guards as a race (Tests/Sanitizers/tsan-mutex-repro.swift shows one on a correct program).
// pthread_mutex_lock/unlock are intercepted by TSan. Every module locks with `WALMutex`, defined
// here once: under `-DWALD_TSAN` this class, otherwise the stdlib Mutex, so ordinary builds keep its
// cost (as swift-system switches its syscalls with one ENABLE_MOCKING flag). A public `Mutex`
// alias would be ambiguous beside Synchronization's in every module that imports both.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

#if WALD_TSAN
/// The mutex wald's modules use: under `make test-tsan`, one ThreadSanitizer can see.
public typealias WALMutex<Value: ~Copyable> = TSanVisibleMutex<Value>
#else
/// The mutex wald's modules use: `Synchronization.Mutex` (a futex), or under `make test-tsan`
/// (`-DWALD_TSAN`) `TSanVisibleMutex`, the same API over a pthread mutex TSan can see.
public typealias WALMutex<Value: ~Copyable> = Synchronization.Mutex<Value>
#endif

/// The subset of `Synchronization.Mutex` that wald uses, with the same signatures.
public final class TSanVisibleMutex<Value: ~Copyable>: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    /// Out of line: stored inline, a zero-sized Value (`Mutex(())`) made TSan pair one thread's
    /// unlocked read of this object with another's locked `inout` access and report a race.
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_mutex_t())
        precondition(pthread_mutex_init(lock, nil) == 0, "pthread_mutex_init failed")
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body(&value.pointee)
    }
}
