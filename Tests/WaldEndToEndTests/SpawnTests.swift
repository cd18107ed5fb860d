// WALTestSupport's spawnChild: a child starts with only stdin, stdout and stderr. Every test
// target runs in one process, so anything another test holds open without O_CLOEXEC would
// otherwise live on in every wald, etcd or tool a test starts.
import Foundation
import Testing
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SpawnTests {
    /// A socketpair end closed here must read as EOF at the other end while a spawned child
    /// runs: the child must not hold a copy (a TSan run mixing the suites kept HalfCloseTests'
    /// client waiting for an EOF that a wald child prevented).
    @Test(.timeLimit(.minutes(1)))
    func aSpawnedChildInheritsNoDescriptorOfTheTestProcess() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)  // no CLOEXEC on purpose
        let log = NSTemporaryDirectory() + "wald-spawn-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try spawnChild("/bin/sleep", ["30"], environment: [:], stdout: log)
        defer {
            kill(child, SIGKILL)
            _ = waitForChild(child, timeout: 10)
        }
        close(fds[0])
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let n = read(fds[1], &byte, 1)
        close(fds[1])
        #expect(n == 0, "no EOF: the child holds the other end (read returned \(n), errno \(errno))")
    }
}
