// `make bench-compare`: wald against Redis's append-only file on the same machine, disk and
// load generator shape, plus a raw fdatasync-per-write loop as the physical reference.
// Prints one table per pass; every ratio comes from runs made side by side in this process.
@preconcurrency import Foundation
import WALClient

@main
struct BenchCompare {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let quick = arguments.contains("--quick")
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("wald-bench-compare-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }

        let raw = RawSyncLoop.run(directory: work.path, iterations: quick ? 1000 : 4000)
        print(String(format: "raw pwrite(100 B)+fdatasync loop on a zero-filled file: %.0f writes/s (p50 %.0f µs)\n",
                     raw.perSecond, raw.p50Micros))

        if !arguments.contains("--no-replication") {
            try await Replication.run(binaries: binaries, work: work, seconds: quick ? 2 : 5)
        }
        if arguments.contains("--replication-only") { return }

        let clients = quick ? [1, 16] : [1, 16, 64]
        let pipelines = [1, 16]
        let sizes = quick ? [100] : [100, 4096]
        for pass in [Pass.durable, .buffered] {
            let redis = try Server.redis(directory: work.appendingPathComponent("redis-\(pass)").path, fsync: pass.redisFsync)
            let wald = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("wald-\(pass)").path)
            defer { redis.stop(); wald.stop() }
            print("## \(pass.title)\n")
            print("| clients | pipeline | size | Redis req/s | Redis p99 ms | wald req/s | wald p99 ms | wald/Redis | p99 no worse |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
            for size in sizes {
                for c in clients {
                    for p in pipelines {
                        let requests = max(pass == .buffered ? 50_000 : 10_000, min(2_000_000, 5_000 * c * p)) / (quick ? 4 : 1)
                        // Each RPUSH cell starts from an empty list, so Redis's memory stays bounded.
                        _ = try? Runner.run("/usr/bin/redis-cli", ["-p", "\(redis.port)", "flushall"])
                        let r: Measurement
                        let w: Measurement
                        do {
                            r = try Runner.redisBenchmark(port: redis.port, clients: c, pipeline: p, size: size, requests: requests)
                            w = try Runner.waldBench(binaries: binaries, port: wald.port, clients: c, pipeline: p, size: size,
                                                     requests: requests, buffered: pass == .buffered)
                        } catch {
                            print("| \(c) | \(p) | \(size) | failed: \(error) |")
                            continue
                        }
                        let ratio = w.perSecond / max(r.perSecond, 1)
                        print(String(format: "| %d | %d | %d | %.0f | %.2f | %.0f | %.2f | %.2f× | %@ |",
                                     c, p, size, r.perSecond, r.p99Millis, w.perSecond, w.p99Millis, ratio,
                                     w.p99Millis <= r.p99Millis ? "yes" : "no"))
                        if c == 1 && p == 1 && pass == .durable {
                            print(String(format: "|  |  |  | raw fdatasync %.0f/s |  | wald = %.0f%% of raw |  |  |  |",
                                         raw.perSecond, 100 * w.perSecond / raw.perSecond))
                        }
                        fflush(stdout)
                    }
                }
            }
            print("")
        }
    }
}

enum Pass: CustomStringConvertible {
    case durable, buffered
    var redisFsync: String { self == .durable ? "always" : "everysec" }
    var title: String {
        self == .durable ? "Durable: wald durable appends vs Redis appendfsync always"
            : "Buffered: wald --buffered (10 ms flush) vs Redis appendfsync everysec"
    }
    var description: String { self == .durable ? "durable" : "buffered" }
}

struct Measurement {
    var perSecond: Double
    var p99Millis: Double
}

final class Server {
    let process: Process
    let port: UInt16

    private init(process: Process, port: UInt16) {
        self.process = process
        self.port = port
    }

    static func redis(directory: String, fsync: String) throws -> Server {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", fsync,
                             "--save", "", "--dir", directory, "--daemonize", "no", "--loglevel", "warning"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try waitForPort(port)
        return Server(process: process, port: port)
    }

    static func wald(binaries: URL, directory: String, extra: [String] = []) throws -> Server {
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("wald")
        process.arguments = ["--data-dir", directory, "--listen", "127.0.0.1:0", "--log-level", "warning"] + extra
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        var text = ""
        while !text.contains("\n") {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { throw BenchError.failed("wald exited before it was ready") }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard text.hasPrefix("ready "), let port = text.split(separator: "\n")[0].split(separator: ":").last.flatMap({ UInt16($0) }) else {
            throw BenchError.failed("unexpected wald output: \(text)")
        }
        return Server(process: process, port: port)
    }

    /// SIGTERM, then SIGKILL if the server has not exited within 10 s.
    func stop() {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        for _ in 0..<200 where process.isRunning { usleep(50_000) }
        if process.isRunning {
            FileHandle.standardError.write(Data("bench-compare: pid \(pid) ignored SIGTERM for 10 s; killing it\n".utf8))
            kill(pid, SIGKILL)
        }
        process.waitUntilExit()
    }

    private static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length); return getsockname(fd, $0, &length) }
        }
        return UInt16(bigEndian: address.sin_port)
    }

    private static func waitForPort(_ port: UInt16) throws {
        for _ in 0..<200 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            } == 0
            close(fd)
            if ok { return }
            usleep(25_000)
        }
        throw BenchError.failed("server on port \(port) did not start")
    }
}

enum Runner {
    static func redisBenchmark(port: UInt16, clients: Int, pipeline: Int, size: Int, requests: Int) throws -> Measurement {
        let output = try run("/usr/bin/redis-benchmark", ["-p", "\(port)", "-t", "rpush", "-c", "\(clients)", "-P", "\(pipeline)",
                                                          "-n", "\(requests)", "-d", "\(size)", "--csv"])
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("\"RPUSH") }) else {
            throw BenchError.failed("redis-benchmark printed: \(output)")
        }
        let fields = line.split(separator: ",").map { Double($0.replacingOccurrences(of: "\"", with: "")) ?? 0 }
        return Measurement(perSecond: fields[1], p99Millis: fields[6])
    }

    static func waldBench(binaries: URL, port: UInt16, clients: Int, pipeline: Int, size: Int, requests: Int, buffered: Bool) throws -> Measurement {
        var arguments = ["bench", "--server", "127.0.0.1:\(port)", "--clients", "\(clients)", "--pipeline", "\(pipeline)",
                         "--size", "\(size)", "--count", "\(requests)", "--json"]
        if buffered { arguments.append("--buffered") }
        let output = try run(binaries.appendingPathComponent("walctl").path, arguments)
        guard let data = output.split(separator: "\n").last.map({ Data($0.utf8) }),
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rate = object["ops_per_sec"] as? Double, let p99 = object["p99_us"] as? Double else {
            throw BenchError.failed("walctl bench printed: \(output)")
        }
        return Measurement(perSecond: rate, p99Millis: p99 / 1000)
    }

    static func run(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// pwrite 100 bytes + fdatasync, in a loop, on a zero-filled file: the disk's floor.
enum RawSyncLoop {
    static func run(directory: String, iterations: Int) -> (perSecond: Double, p50Micros: Double) {
        let path = directory + "/raw-fdatasync.dat"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd); unlink(path) }
        let size = iterations * 100 + 4096
        let zeros = [UInt8](repeating: 0, count: size)
        _ = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, size, 0) }
        fsync(fd)
        let record = [UInt8](repeating: 42, count: 100)
        var samples: [Double] = []
        samples.reserveCapacity(iterations)
        let start = DispatchTime.now().uptimeNanoseconds
        for i in 0..<iterations {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = record.withUnsafeBytes { pwrite(fd, $0.baseAddress, 100, off_t(i * 100)) }
            fdatasync(fd)
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        samples.sort()
        return (Double(iterations) / seconds, samples[samples.count / 2])
    }
}

enum BenchError: Error { case failed(String) }

/// Replication: follower lag under a 16-client durable load (time from the primary's ack to
/// the record arriving on a FOLLOW stream from the follower, which sends only what it has made
/// durable), and durable throughput with min_sync_replicas=1 as a ratio of without it.
enum Replication {
    static func run(binaries: URL, work: URL, seconds: Double) async throws {
        print("## Replication (primary + 1 follower on loopback, 16 clients, durable 100 B appends)\n")
        let primary = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("repl-primary").path)
        let follower = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("repl-follower").path,
                                       extra: ["--follow", "127.0.0.1:\(primary.port)"])
        defer { primary.stop(); follower.stop() }
        try await Task.sleep(for: .milliseconds(300))

        let arrivals = Arrivals()
        let stream = try await WALClient.connect(.tcp(host: "127.0.0.1", port: follower.port))
        let tail = Task {
            do {
                for try await record in stream.follow(from: 1) { arrivals.record(record.lsn) }
            } catch {}
        }
        let acks = Arrivals()
        let primaryPort = primary.port
        let deadline = ContinuousClock.now + .seconds(seconds)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    let client = try await WALClient.connect(.tcp(host: "127.0.0.1", port: primaryPort))
                    defer { client.close() }
                    let payload = [UInt8](repeating: 7, count: 100)
                    while ContinuousClock.now < deadline { acks.record(try await client.append(payload)) }
                }
            }
            try await group.waitForAll()
        }
        let total = acks.count
        let waitUntil = ContinuousClock.now + .seconds(10)
        while arrivals.count < total && ContinuousClock.now < waitUntil { try await Task.sleep(for: .milliseconds(10)) }
        stream.close()
        tail.cancel()
        var lags: [Double] = []
        for (lsn, ackedAt) in acks.all {
            guard let arrivedAt = arrivals.time(of: lsn) else { continue }
            let lag = (arrivedAt - ackedAt).components
            lags.append(max(0, Double(lag.seconds) * 1e6 + Double(lag.attoseconds) / 1e12))
        }
        lags.sort()
        let percentile = { (q: Double) in lags.isEmpty ? 0 : lags[min(lags.count - 1, Int(Double(lags.count) * q))] }
        print(String(format: "follower lag (primary ack → durable on follower and streamed): p50 %.0f µs, p99 %.0f µs over %d records (%d missing); target p99 < 2000 µs",
                     percentile(0.50), percentile(0.99), lags.count, total - lags.count))

        let asynchronous = try Runner.waldBench(binaries: binaries, port: primary.port, clients: 16, pipeline: 1, size: 100,
                                                requests: 40_000, buffered: false)
        primary.stop()
        follower.stop()
        let syncPrimary = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("repl-sync-primary").path,
                                          extra: ["--min-sync-replicas", "1", "--sync-replica-timeout", "5s"])
        let syncFollower = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("repl-sync-follower").path,
                                           extra: ["--follow", "127.0.0.1:\(syncPrimary.port)"])
        defer { syncPrimary.stop(); syncFollower.stop() }
        try await Task.sleep(for: .milliseconds(500))
        let synchronous = try Runner.waldBench(binaries: binaries, port: syncPrimary.port, clients: 16, pipeline: 1, size: 100,
                                               requests: 40_000, buffered: false)
        print(String(format: "durable appends/s, 16 clients: async %.0f (p99 %.2f ms), min_sync_replicas=1 %.0f (p99 %.2f ms): ratio %.2f (target ≥ 0.50)\n",
                     asynchronous.perSecond, asynchronous.p99Millis, synchronous.perSecond, synchronous.p99Millis,
                     synchronous.perSecond / max(asynchronous.perSecond, 1)))
    }
}

/// When each LSN was seen, from many tasks.
final class Arrivals: @unchecked Sendable {
    // @unchecked: every access goes through `lock`.
    private let lock = NSLock()
    private var times: [UInt64: ContinuousClock.Instant] = [:]

    func record(_ lsn: UInt64) {
        let now = ContinuousClock.now
        lock.lock(); times[lsn] = now; lock.unlock()
    }

    func time(of lsn: UInt64) -> ContinuousClock.Instant? {
        lock.lock(); defer { lock.unlock() }
        return times[lsn]
    }

    var count: Int { lock.lock(); defer { lock.unlock() }; return times.count }
    var all: [UInt64: ContinuousClock.Instant] { lock.lock(); defer { lock.unlock() }; return times }
}
