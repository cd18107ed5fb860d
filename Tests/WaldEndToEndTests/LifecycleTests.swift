// The daemon's life: a graceful stop under load, refusing a second instance on the same
// directory, serving on a unix socket and on IPv6, and counting its connections.
import Foundation
import Testing
import WALTestSupport
import WALClient
#if canImport(Glibc)
import Glibc
#endif

/// Whether this machine can bind [::1] (some containers have no IPv6 loopback).
let ipv6LoopbackAvailable: Bool = {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
    }
    return bound == 0
}()

@Suite(.serialized) struct LifecycleTests {
    @Test(.timeLimit(.minutes(1)))
    func sigtermUnderLoadExitsZeroAndKeepsEveryAcknowledgedRecord() async throws {
        let directory = NSTemporaryDirectory() + "wald-e2e-term-\(UUID().uuidString)"
        let wald = try WaldProcess(dataDirectory: directory, arguments: ["--max-segment-bytes", "1MiB"])
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let acks = AckLog()
        let load = Task {
            await withTaskGroup(of: String?.self) { group in
                for w in 0..<8 {
                    group.addTask {
                        let client: WALClient
                        do { client = try await WALClient.connect(endpoint) } catch { return "writer \(w) could not connect: \(error)" }
                        defer { client.close() }
                        var i = 0
                        while true {
                            let batch = (0..<(1 + i % 3)).map { payload("term-w\(w)-\(i)-\($0)", size: 50 + (i * 13) % 700) }
                            do {
                                acks.add(first: try await client.append(batch: batch).firstLSN, batch)
                            } catch WALClientError.connectionClosed {
                                return nil
                            } catch WALClientError.server(let code, _) where code.name == "UNAVAILABLE" {
                                return nil  // closing: documented
                            } catch {
                                return "writer \(w): \(error)"
                            }
                            i += 1
                        }
                    }
                }
                var problems: [String] = []
                for await problem in group { if let problem { problems.append(problem) } }
                return problems
            }
        }
        // "Under load" needs appends in flight, not a throughput: with every suite running in
        // parallel on 2 cores, fdatasync can take hundreds of milliseconds.
        let deadline = ContinuousClock.now + .seconds(30)
        while acks.count < 40 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(2)) }
        #expect(acks.count >= 40, "wald running: \(wald.process.isRunning); stderr:\n\(wald.stderrText)")

        let pid = wald.process.processIdentifier
        let watchdog = Watchdog(seconds: 30) { kill(pid, SIGKILL) }
        let status = wald.stop(signal: SIGTERM)
        watchdog.cancel()
        #expect(!watchdog.fired, "wald did not exit within 30 s of SIGTERM")
        #expect(wald.process.terminationReason == .exit && status == 0, "wald exited with \(status) (\(wald.process.terminationReason)); stderr:\n\(wald.stderrText)")
        let problems = await load.value
        #expect(problems.isEmpty, "\(problems)")

        let restarted = try WaldProcess(dataDirectory: directory, arguments: ["--max-segment-bytes", "1MiB"])
        defer { restarted.stop(signal: SIGKILL) }
        let records = try await replayAll(.tcp(host: "127.0.0.1", port: restarted.port))
        expectLog(records, holds: acks.all, "after SIGTERM under load")
    }

    @Test(.timeLimit(.minutes(1)))
    func secondWaldOnTheSameDirectoryFailsWithALockedErrorAndTouchesNothing() async throws {
        // Small segments keep the byte-by-byte snapshot of the directory cheap.
        let wald = try WaldProcess(arguments: ["--max-segment-bytes", "65536"])
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let client = try await WALClient.connect(endpoint)
        defer { client.close() }
        for i in 0..<10 { try await client.append(payload("first-\(i)", size: 100)) }
        let logID = try await client.info().logID
        try await Task.sleep(for: .milliseconds(300))  // let any background segment preparation finish
        let before = try snapshot(wald.dataDirectory)

        let second = try runTool("wald", ["--data-dir", wald.dataDirectory, "--listen", "127.0.0.1:0", "--log-level", "warning"],
                                 timeout: 30)
        #expect(!second.timedOut, "the second wald kept running")
        #expect(second.exitedNormally && second.status != 0, "the second wald exited with \(second.status)")
        #expect(!second.stdout.contains("ready"), "the second wald said it was ready: \(second.stdout)")
        #expect(second.stderr.lowercased().contains("locked"), "stderr does not say the directory is locked:\n\(second.stderr)")
        #expect(second.stderr.contains(wald.dataDirectory), "stderr does not name the directory:\n\(second.stderr)")
        #expect(try snapshot(wald.dataDirectory) == before, "the second wald changed the data directory")

        // The first one carries on.
        #expect(try await client.append(payload("after", size: 10)) == 11)
        #expect(try await client.info().logID == logID)
    }

    /// wald binds its listeners before it opens (and locks) its log. A second wald given the
    /// running one's unix socket used to unlink it, fail on the lock, and unlink its own bind:
    /// the running wald was left unreachable over its socket. A live socket is not replaced.
    @Test(.timeLimit(.minutes(1)))
    func aSecondWaldLeavesTheRunningOnesUnixSocketAlone() async throws {
        let path = NSTemporaryDirectory() + "wald-e2e-\(UUID().uuidString.prefix(8)).sock"
        let wald = try WaldProcess(arguments: ["--unix", path])
        defer {
            wald.cleanup()
            unlink(path)
        }
        var before = stat()
        #expect(lstat(path, &before) == 0)
        let second = try runTool("wald", ["--data-dir", wald.dataDirectory, "--listen", "127.0.0.1:0", "--unix", path,
                                          "--log-level", "warning"], timeout: 30)
        #expect(!second.timedOut && second.exitedNormally && second.status != 0, "the second wald: \(second.status)")
        #expect(second.stderr.contains(path), "stderr does not name the socket:\n\(second.stderr)")
        var after = stat()
        #expect(lstat(path, &after) == 0 && after.st_ino == before.st_ino, "the running wald's socket file was replaced or removed")
        let client = try await WALClient.connect(.unix(path: path))
        defer { client.close() }
        #expect(try await client.append(Array("still here".utf8)) == 1)

        // A socket file nobody listens on (a wald killed with SIGKILL leaves one) is replaced.
        #expect(wald.stop(signal: SIGKILL) != 0)
        #expect(lstat(path, &after) == 0, "SIGKILL removed the socket file?")
        let restarted = try WaldProcess(dataDirectory: wald.dataDirectory, arguments: ["--unix", path])
        defer { restarted.cleanup() }
        let again = try await WALClient.connect(.unix(path: path))
        defer { again.close() }
        #expect(try await again.append(Array("after a crash".utf8)) == 2)
    }

    /// After a clean stop (SIGTERM) the forged frame is damage and wald refuses to start, naming
    /// it; after a crash (SIGKILL) it is a torn tail and is cut. Either way nothing allocates
    /// the 4 GiB the length field claims.
    @Test(.timeLimit(.minutes(1)), arguments: [SIGTERM, SIGKILL])
    func forgedRecordLengthInTheLastSegmentIsNeverAllocated(stop: Int32) async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: wald.port))
        #expect(try await client.append(Array("hello".utf8)) == 1)
        client.close()
        let status = wald.stop(signal: stop)
        if stop == SIGTERM { #expect(status == 0) }
        // A data directory someone tampered with: the first record claims 0xFFFFFFF0 bytes.
        let names = try FileManager.default.contentsOfDirectory(atPath: wald.dataDirectory).filter { $0.hasSuffix(".wal") }.sorted()
        let segment = try #require(FileHandle(forUpdatingAtPath: wald.dataDirectory + "/" + names.last!))
        try segment.seek(toOffset: 64 + 4)
        try segment.write(contentsOf: [0xF0, 0xFF, 0xFF, 0xFF])
        try segment.close()

        // Under a 2 GiB address-space limit (LimitAS=, vm.overcommit_memory=2) wald and walctl
        // must treat it as a torn frame, not try to allocate 4 GiB and abort.
        let products = buildProductsDirectory().path
        let verify = try runProgram("/bin/sh", ["-c", "ulimit -v 2097152; exec \"$0\" verify \"$1\"", products + "/walctl",
                                                wald.dataDirectory])
        #expect(verify.exitedNormally && !verify.stderr.contains("failed to allocate"), "walctl verify crashed:\n\(verify.stderr)")

        // wald itself, its stdout on a pipe (the ready line) and its stderr in a file.
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let errPath = wald.dataDirectory + ".limited.err"
        let errFD = open(errPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let daemon = try SpawnedChild(
            "/bin/sh", ["-c", "ulimit -v 2097152; exec \"$0\" --data-dir \"$1\" --listen 127.0.0.1:0 --log-level warning",
                        products + "/wald", wald.dataDirectory],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") }, outputFD: ends[1], errorFD: errFD)
        close(ends[1])
        close(errFD)
        let out = FileHandle(fileDescriptor: ends[0], closeOnDealloc: true)
        defer { if daemon.isRunning { kill(daemon.processIdentifier, SIGKILL); daemon.waitUntilExit() } }
        // The ready line, or EOF when wald exits without one.
        let ready = String(decoding: out.availableData, as: UTF8.self)
        if ready.hasPrefix("ready ") {
            kill(daemon.processIdentifier, SIGTERM)
            daemon.waitUntilExit()
            #expect(daemon.terminationStatus == 0)
            #expect(stop == SIGKILL, "wald opened a cleanly stopped log whose last record is damaged")
        } else {
            daemon.waitUntilExit()
            let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            #expect(daemon.terminationReason == .exit && daemon.terminationStatus == 1 && !stderr.contains("failed to allocate"),
                    "wald crashed on the tampered directory (status \(daemon.terminationStatus)):\n\(stderr.suffix(2000))")
            #expect(stop == SIGTERM && stderr.contains("corruption") && stderr.contains("at byte 64 (LSN 1)"),
                    "wald did not start on the tampered directory (status \(daemon.terminationStatus)):\n\(stderr.suffix(2000))")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func unixSocketServesBothProtocolsWithMode0660() async throws {
        let path = "/tmp/wald-e2e-\(UInt32.random(in: 0...UInt32.max)).sock"
        let wald = try WaldProcess(arguments: ["--unix", path])
        defer {
            wald.cleanup()
            unlink(path)
        }
        var info = stat()
        #expect(lstat(path, &info) == 0, "no socket file at \(path)")
        #expect(info.st_mode & S_IFMT == S_IFSOCK, "\(path) is not a socket")
        #expect(info.st_mode & 0o777 == 0o660, "socket mode is \(String(info.st_mode & 0o777, radix: 8)), want 660")

        let client = try await WALClient.connect(.unix(path: path))
        defer { client.close() }
        #expect(try await client.append(Array("over unix".utf8)) == 1)
        #expect(try await client.append(batch: [Array("a".utf8), Array("b".utf8)]).firstLSN == 2)

        let text = try UnixLineConnection(path: path)
        text.send("PING\nAPPEND typed\nREPLAY 1\n")
        #expect(text.readLine() == "PONG")
        #expect(text.readLine() == "OK 4")
        let lines = (0..<9).compactMap { _ in text.readLine() }
        #expect(lines == ["RECORD 1 9", "over unix", "RECORD 2 1", "a", "RECORD 3 1", "b", "RECORD 4 5", "typed", "END 5"])

        // And TCP sees the same log.
        let records = try await replayAll(.tcp(host: "127.0.0.1", port: wald.port))
        #expect(records.map { String(decoding: $0.payload, as: UTF8.self) } == ["over unix", "a", "b", "typed"])
    }

    @Test(.enabled(if: ipv6LoopbackAvailable, "this machine cannot bind [::1]"), .timeLimit(.minutes(1)))
    func ipv6ListenAddressServesTheProtocol() async throws {
        let wald = try WaldProcess(arguments: ["--listen", "[::1]:0"])
        defer { wald.cleanup() }
        #expect(wald.address.hasPrefix("[::1]:"), "ready line names \(wald.address)")
        let client = try await WALClient.connect(.tcp(host: "::1", port: wald.port))
        defer { client.close() }
        #expect(try await client.append(Array("six".utf8)) == 1)
        #expect(try await client.sync() == 1)
        let records = try await replayAll(.tcp(host: "::1", port: wald.port))
        #expect(records.map(\.lsn) == [1] && records.first?.payload == Array("six".utf8))
    }

    @Test(.timeLimit(.minutes(1)))
    func infoCountsOpenConnections() async throws {
        let wald = try WaldProcess()
        defer { wald.cleanup() }
        let endpoint = Endpoint.tcp(host: "127.0.0.1", port: wald.port)
        let observer = try await WALClient.connect(endpoint)
        defer { observer.close() }
        #expect(try await observer.info().connections == 1)

        var others: [WALClient] = []
        for _ in 0..<5 { others.append(try await WALClient.connect(endpoint)) }
        let text = try RawConnection(port: wald.port)
        text.send("PING\n")
        #expect(text.readLine() == "PONG")  // accepted and registered
        for other in others { _ = try await other.ping() }
        #expect(try await observer.info().connections == 7)

        for other in others.prefix(3) { other.close() }
        text.send("QUIT\n")
        #expect(text.readLine() == "BYE")
        // Closing is noticed asynchronously: wait (generously) for the count to drop.
        var count: UInt64 = 0
        for _ in 0..<1000 {
            count = try await observer.info().connections
            if count == 3 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(count == 3, "INFO counts \(count) connections; 3 are open")
        for other in others { other.close() }
    }
}

/// Names, sizes, modification times and contents of every entry in `directory` (contents of
/// regular files only: opening a FIFO to read it would wait for a writer).
func snapshot(_ directory: String) throws -> [String: String] {
    var result: [String: String] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
        let path = directory + "/" + name
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        let data = info.st_mode & S_IFMT == S_IFREG ? FileManager.default.contents(atPath: path) ?? Data() : Data()
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        result[name] = "size \(info.st_size) mtime \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec) ctime \(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec) mode \(String(info.st_mode, radix: 8)) fnv \(hash)"
    }
    return result
}
