// The one syscall layer (issue 17; swift-nio's System.swift and swift-system's Syscalls.swift
// are the models): the storage engine's files (WALCore's PosixFileIO), the server's and the
// client's sockets (Sockets.swift) and the tools' descriptors (Descriptors.swift) all call the
// C library through the wrappers of this module. Each retries EINTR in one place
// (`retryingInterrupts`) and reports any other failure as a SystemError that names the C
// function, what it was called on, and errno. Code elsewhere asks the error what it means
// (`isNoSpace`, `isWouldBlock`, …) instead of comparing errno with numbers.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A failed system call: which C function, on what, and the errno it set.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The C function that failed: `fdatasync`, `connect`, `getaddrinfo`.
    public let operation: String
    /// What it was called on: a path, an address (`127.0.0.1:7070`), or `fd N`.
    public let path: String
    /// The errno value (0 when the failure was not a syscall's, e.g. an unreadable name).
    public let errno: Int32
    /// getaddrinfo's own reason (gai_strerror) when a name could not be resolved.
    public var resolveFailure: String?

    public init(_ operation: String, path: String, errno: Int32, resolveFailure: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.resolveFailure = resolveFailure
    }

    /// ENOSPC or EDQUOT: the file system (or the user's quota) is full.
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }
    /// EAGAIN/EWOULDBLOCK: a non-blocking call would block, a receive timeout ran out, or a
    /// `flock(LOCK_NB)` found the lock taken.
    public var isWouldBlock: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
    /// ENOENT: no such file or directory.
    public var isNotFound: Bool { errno == ENOENT }
    /// ETIMEDOUT: a bounded connect ran out of time.
    public var isTimeout: Bool { errno == ETIMEDOUT }

    public var description: String {
        if let resolveFailure { return "cannot resolve \(path): \(resolveFailure)" }
        return "\(operation)(\(path)) failed: \(Self.describe(errno: errno)) (errno \(errno))"
    }

    /// strerror(3) of `code`.
    public static func describe(errno code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }
}

/// Calls `call` (a C function returning -1 and setting errno on failure) until it succeeds or
/// fails with something other than EINTR; returns its result. Throws `SystemError` naming
/// `operation` and `path`. Not for close(2): on Linux the descriptor is gone even after EINTR.
@inline(__always)
public func retryingInterrupts<T: BinaryInteger>(_ operation: String, _ path: @autoclosure () -> String,
                                                 _ call: () -> T) throws(SystemError) -> T {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw SystemError(operation, path: path(), errno: code)
    }
}
