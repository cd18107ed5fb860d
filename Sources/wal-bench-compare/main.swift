// `make bench-compare`: wald against Redis's append-only file on the same machine, disk and
// load shape, plus a raw fdatasync-per-write loop as the physical reference. Prints one table
// per pass; every ratio comes from runs made side by side in this process. Besides requests
// per second and latency, each row gives each server's CPU per request (the sum of its
// threads' run time from /proc/PID/task/*/schedstat, in ns: user + sys) and the load
// generator's (getrusage of the finished child), so a reader can tell the cost of a request
// from the speed of the client. Latency of one client is compared interleaved (A B A B):
// loopback round trips on a VM swing with the machine's state.
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
        print(String(format: "raw pwrite(100 B)+fdatasync loop on a zero-filled file: %.0f writes/s (p50 %.1f µs)\n",
                     raw.perSecond, raw.p50Micros))

        if !arguments.contains("--no-replication") {
            try await Replication.run(binaries: binaries, work: work, seconds: quick ? 2 : 5)
        }
        if arguments.contains("--replication-only") { return }

        let ping = try PingComparison.run(binaries: binaries, work: work, rounds: quick ? 4 : 20, perRound: 500)
        let floor = raw.p50Micros + ping.redis.p50
        print("## One client, one request at a time\n")
        print(String(format: "PING round trip, interleaved (%d each): Redis p50 %.1f µs p99 %.1f µs; wald p50 %.1f µs p99 %.1f µs; "
                     + "wald/Redis p50 %.2f× (target ≤ 1.10×)", ping.count, ping.redis.p50, ping.redis.p99, ping.wald.p50,
                     ping.wald.p99, ping.wald.p50 / ping.redis.p50))
        print(String(format: "disk floor for a durable append: raw fdatasync p50 %.1f µs + Redis PING p50 %.1f µs = %.1f µs\n",
                     raw.p50Micros, ping.redis.p50, floor))

        let clients = quick ? [1, 16] : [1, 16, 64]
        let pipelines = [1, 16]
        let sizes = quick ? [100] : [100, 4096]
        if !arguments.contains("--no-xadd") {
            try XADDComparison.run(binaries: binaries, work: work, clients: clients, pipelines: pipelines, sizes: sizes, quick: quick)
        }
        if !arguments.contains("--no-tls") {
            try TLSComparison.run(binaries: binaries, work: work, quick: quick)
        }
        for pass in [Pass.durable, .buffered] {
            let redis = try Server.redis(directory: work.appendingPathComponent("redis-\(pass)").path, fsync: pass.redisFsync)
            let wald = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("wald-\(pass)").path)
            defer { redis.stop(); wald.stop() }
            print("## \(pass.title)\n")
            print("CPU = the server's CPU time per request (all threads, user + sys); client = the load generator's "
                  + "(redis-benchmark for Redis, walctl bench for wald).\n")
            print("| clients | pipeline | size | Redis req/s | p50 ms | p99 ms | CPU µs | client µs "
                  + "| wald req/s | p50 ms | p99 ms | CPU µs | client µs | wald/Redis | CPU wald/Redis | p99 no worse |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
            var summary = PassSummary()
            for size in sizes {
                for c in clients {
                    for p in pipelines {
                        let requests = max(pass == .buffered ? 50_000 : 10_000, min(2_000_000, 5_000 * c * p)) / (quick ? 4 : 1)
                        // Each RPUSH cell starts from an empty list, so Redis's memory stays bounded,
                        // and from a wald log cut back to one segment, so the disk does not fill.
                        _ = try? Runner.run("/usr/bin/redis-cli", ["-p", "\(redis.port)", "flushall"])
                        Runner.dropWaldLog(binaries: binaries, port: wald.port)
                        let r: Measurement
                        let w: Measurement
                        do {
                            r = try Runner.measured(server: redis, requests: requests) {
                                try Runner.redisBenchmark(port: redis.port, clients: c, pipeline: p, size: size, requests: requests)
                            }
                            w = try Runner.measured(server: wald, requests: requests) {
                                try Runner.waldBench(binaries: binaries, port: wald.port, clients: c, pipeline: p, size: size,
                                                     requests: requests, buffered: pass == .buffered)
                            }
                        } catch {
                            print("| \(c) | \(p) | \(size) | failed: \(error) |")
                            continue
                        }
                        let ratio = w.perSecond / max(r.perSecond, 1)
                        let cpuRatio = w.serverMicros / max(r.serverMicros, 0.001)
                        print(String(format: "| %d | %d | %d | %.0f | %.3f | %.2f | %.2f | %.2f | %.0f | %.3f | %.2f | %.2f | %.2f | %.2f× | %.2f× | %@ |",
                                     c, p, size, r.perSecond, r.p50Millis, r.p99Millis, r.serverMicros, r.clientMicros,
                                     w.perSecond, w.p50Millis, w.p99Millis, w.serverMicros, w.clientMicros, ratio, cpuRatio,
                                     w.p99Millis <= r.p99Millis ? "yes" : "no"))
                        summary.add(inFlight: c * p, ratio: ratio, cpuRatio: cpuRatio, p99OK: w.p99Millis <= r.p99Millis)
                        if c == 1 && p == 1 && size == 100 {
                            if pass == .durable {
                                print(String(format: "|  |  |  | disk floor %.1f µs |  |  |  |  | wald p50 − floor = %+.1f µs (target ≤ +15) |  |  |  |  |  |  |  |",
                                             floor, w.p50Millis * 1000 - floor))
                            } else {
                                print(String(format: "|  |  |  |  |  |  |  |  | wald p50 / Redis p50 = %.2f× (target ≤ 1.05×) |  |  |  |  |  |  |  |",
                                             w.p50Millis / max(r.p50Millis, 0.0001)))
                            }
                        }
                        if c == 64 && p == 16 {
                            print(String(format: "|  |  |  | Redis RSS %.1f MiB |  |  |  |  | wald RSS %.1f MiB with 64 clients (target ≤ 64) |  |  |  |  |  |  |  |",
                                         redis.rssMiB, wald.rssMiB))
                        }
                        fflush(stdout)
                    }
                }
            }
            print("")
            print(summary.describe())
            print("")
        }
    }
}

/// Which cells of a pass met the targets.
struct PassSummary {
    var cells = 0, concurrentCells = 0, fastEnough = 0, p99OK = 0, cheapEnough = 0
    var worstRatio = Double.infinity

    mutating func add(inFlight: Int, ratio: Double, cpuRatio: Double, p99OK ok: Bool) {
        cells += 1
        if inFlight > 1 {
            concurrentCells += 1
            if ratio >= 1.5 { fastEnough += 1 }
            worstRatio = min(worstRatio, ratio)
        }
        if ok { p99OK += 1 }
        if cpuRatio <= 0.5 { cheapEnough += 1 }
    }

    func describe() -> String {
        String(format: "cells with more than one request in flight at ≥ 1.5× Redis: %d of %d (worst %.2f×); p99 no worse: %d of %d; "
               + "CPU per request ≤ 0.5× Redis's: %d of %d", fastEnough, concurrentCells, worstRatio == .infinity ? 0 : worstRatio,
               p99OK, cells, cheapEnough, cells)
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
    var p50Millis: Double
    var p99Millis: Double
    /// CPU per request of the server and of the load generator, in µs.
    var serverMicros: Double = 0
    var clientMicros: Double = 0
}

final class Server {
    let process: Process
    let port: UInt16
    let name: String
    /// Where the server logs (its tail is shown when it does not stop in time).
    let logFile: String?

    private init(process: Process, port: UInt16, name: String, logFile: String? = nil) {
        self.process = process
        self.port = port
        self.name = name
        self.logFile = logFile
    }

    /// CPU time of every thread of the process so far, in ns (user + sys, from schedstat).
    var cpuNanos: UInt64 {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/task")) ?? []
        var total: UInt64 = 0
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/task/\(task)/schedstat", encoding: .utf8),
                  let first = text.split(separator: " ").first, let nanos = UInt64(first) else { continue }
            total += nanos
        }
        return total
    }

    /// Resident memory now, in MiB (VmRSS).
    var rssMiB: Double {
        guard let text = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") else { return 0 }
        return kib / 1024
    }

    static func redis(directory: String, fsync: String) throws -> Server {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", fsync,
                             "--save", "", "--dir", directory, "--daemonize", "no", "--loglevel", "notice",
                             "--logfile", directory + "/redis.log"]
        process.standardOutput = FileHandle.nullDevice
        try runWithSignalsUnblocked(process)
        try waitForPort(port)
        return Server(process: process, port: port, name: "redis-server", logFile: directory + "/redis.log")
    }

    static func wald(binaries: URL, directory: String, extra: [String] = []) throws -> Server {
        try startWald(binaries: binaries, directory: directory, extra: extra).server
    }

    /// Starts wald and reads its ready line (`ready 127.0.0.1:PORT [tls=127.0.0.1:PORT]`): the
    /// server on its plain port, and the TLS port when it has one.
    private static func startWald(binaries: URL, directory: String, extra: [String]) throws -> (server: Server, tlsPort: UInt16?) {
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("wald")
        // Every client of a cell comes from 127.0.0.1: 64 redis-benchmark clients plus the bench's own INFO
        // and truncation connections pass the default max_connections_per_address (64), which is meant for
        // many hosts; without this the 64-client cells were refused ("too many connections from 127.0.0.1").
        process.arguments = ["--data-dir", directory, "--listen", "127.0.0.1:0", "--log-level", "warning",
                             "--max-connections-per-address", "1024"] + extra
        let pipe = Pipe()
        process.standardOutput = pipe
        try runWithSignalsUnblocked(process)
        var text = ""
        while !text.contains("\n") {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { throw BenchError.failed("wald exited before it was ready") }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let fields = text.split(separator: "\n")[0].split(separator: " ")
        guard fields.count >= 2, fields[0] == "ready", let port = fields[1].split(separator: ":").last.flatMap({ UInt16($0) }) else {
            throw BenchError.failed("unexpected wald output: \(text)")
        }
        let tlsPort = fields.first(where: { $0.hasPrefix("tls=") })?.split(separator: ":").last.flatMap { UInt16($0) }
        return (Server(process: process, port: port, name: "wald"), tlsPort)
    }

    /// Redis with a TLS port beside its plain one (the same certificate as wald's).
    static func redisTLS(directory: String, fsync: String, certificates: String) throws -> (server: Server, tlsPort: UInt16) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try freePort()
        let tlsPort = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--tls-port", "\(tlsPort)", "--bind", "127.0.0.1",
                             "--tls-cert-file", certificates + "/server.pem", "--tls-key-file", certificates + "/server.key",
                             "--tls-ca-cert-file", certificates + "/ca.pem", "--tls-auth-clients", "no",
                             "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--dir", directory,
                             "--daemonize", "no", "--loglevel", "notice", "--logfile", directory + "/redis.log"]
        process.standardOutput = FileHandle.nullDevice
        try runWithSignalsUnblocked(process)
        try waitForPort(port)
        return (Server(process: process, port: port, name: "redis-server", logFile: directory + "/redis.log"), tlsPort)
    }

    /// wald with a TLS listener beside its plain one.
    static func waldTLS(binaries: URL, directory: String, certificates: String, durability: String) throws -> (server: Server, tlsPort: UInt16) {
        let started = try startWald(binaries: binaries, directory: directory, extra: [
            "--tls-listen", "127.0.0.1:0", "--tls-cert-file", certificates + "/server.pem",
            "--tls-key-file", certificates + "/server.key", "--resp-durability", durability,
        ])
        guard let tlsPort = started.tlsPort else {
            started.server.stop()
            throw BenchError.failed("wald did not report its TLS listener")
        }
        return (started.server, tlsPort)
    }

    /// SIGTERM, then SIGKILL if the server has not exited within 10 s.
    func stop() {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        for _ in 0..<200 where process.isRunning { usleep(50_000) }
        if process.isRunning {
            let tail = logFile.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }.map { $0.split(separator: "\n").suffix(8) }
            let state = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n")
                .filter { $0.hasPrefix("State") || $0.hasPrefix("SigBlk") }.joined(separator: ", ") ?? "no /proc entry"
            FileHandle.standardError.write(Data(("bench-compare: \(name) (pid \(pid)) did not exit within 10 s of SIGTERM; killing it. "
                + "\(state)\n" + (tail.map { "its log ends:\n" + $0.joined(separator: "\n") + "\n" } ?? "")).utf8))
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

/// The same command from the same load generator against both servers: `redis-benchmark …
/// XADD wal * data <value>` against Redis (`appendfsync always`, then `everysec`) and against
/// wald's RESP (`resp_durability` durable, then buffered). Nothing differs but the server, so
/// the client CPU columns are left out.
enum XADDComparison {
    static func run(binaries: URL, work: URL, clients: [Int], pipelines: [Int], sizes: [Int], quick: Bool) throws {
        for pass in [Pass.durable, .buffered] {
            try run(pass, binaries: binaries, work: work, clients: clients, pipelines: pipelines, sizes: sizes, quick: quick)
        }
    }

    static func run(_ pass: Pass, binaries: URL, work: URL, clients: [Int], pipelines: [Int], sizes: [Int], quick: Bool) throws {
        let redis = try Server.redis(directory: work.appendingPathComponent("redis-xadd-\(pass)").path, fsync: pass.redisFsync)
        let wald = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("wald-xadd-\(pass)").path,
                                   extra: ["--resp-durability", pass == .durable ? "durable" : "buffered"])
        defer { redis.stop(); wald.stop() }
        print("## Same client, same command: redis-benchmark XADD wal * data <value>, \(pass)\n")
        print(pass == .durable
              ? "Redis `appendfsync always` vs wald's RESP with `resp_durability: durable` (an XADD is answered once fdatasync covers it). "
              : "Redis `appendfsync everysec` vs wald's RESP with `resp_durability: buffered` (answered once written; fdatasync every 10 ms). ")
        print("CPU = the server's CPU time per request (all threads, user + sys).\n")
        print("| clients | pipeline | size | Redis req/s | p50 ms | p99 ms | CPU µs | wald req/s | p50 ms | p99 ms | CPU µs "
              + "| wald/Redis | CPU wald/Redis | p99 no worse |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        var summary = PassSummary()
        for size in sizes {
            let value = String(repeating: "x", count: size)
            for c in clients {
                for p in pipelines {
                    // Each cell starts from an empty stream, so Redis's memory stays bounded.
                    let requests = max(pass == .buffered ? 50_000 : 10_000, min(400_000, 5_000 * c * p)) / (quick ? 4 : 1)
                    _ = try? Runner.run("/usr/bin/redis-cli", ["-p", "\(redis.port)", "flushall"])
                    Runner.dropWaldLog(binaries: binaries, port: wald.port)
                    let r: Measurement
                    let w: Measurement
                    do {
                        r = try Runner.measured(server: redis, requests: requests) {
                            try xadd(port: redis.port, clients: c, pipeline: p, value: value, requests: requests)
                        }
                        w = try Runner.measured(server: wald, requests: requests) {
                            try xadd(port: wald.port, clients: c, pipeline: p, value: value, requests: requests)
                        }
                    } catch {
                        print("| \(c) | \(p) | \(size) | failed: \(error) |")
                        continue
                    }
                    let ratio = w.perSecond / max(r.perSecond, 1)
                    let cpuRatio = w.serverMicros / max(r.serverMicros, 0.001)
                    print(String(format: "| %d | %d | %d | %.0f | %.3f | %.2f | %.2f | %.0f | %.3f | %.2f | %.2f | %.2f× | %.2f× | %@ |",
                                 c, p, size, r.perSecond, r.p50Millis, r.p99Millis, r.serverMicros,
                                 w.perSecond, w.p50Millis, w.p99Millis, w.serverMicros, ratio, cpuRatio,
                                 w.p99Millis <= r.p99Millis ? "yes" : "no"))
                    summary.add(inFlight: c * p, ratio: ratio, cpuRatio: cpuRatio, p99OK: w.p99Millis <= r.p99Millis)
                    fflush(stdout)
                }
            }
        }
        print("")
        print(summary.describe())
        print("")
    }

    private static func xadd(port: UInt16, clients: Int, pipeline: Int, value: String, requests: Int) throws -> Measurement {
        let output = try Runner.run("/usr/bin/redis-benchmark", ["-p", "\(port)", "-c", "\(clients)", "-P", "\(pipeline)",
                                                                 "-n", "\(requests)", "--csv", "XADD", "wal", "*", "data", value])
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("\"XADD") }) else {
            throw BenchError.failed("redis-benchmark printed: \(output.prefix(300))")
        }
        // The test name holds the value (no commas or quotes in it): the numbers are the last 7 fields.
        let fields = line.split(separator: ",").suffix(7).map { Double($0.replacingOccurrences(of: "\"", with: "")) ?? 0 }
        guard fields.count == 7, fields[0] > 0 else { throw BenchError.failed("redis-benchmark printed: \(line.prefix(300))") }
        return Measurement(perSecond: fields[0], p50Millis: fields[3], p99Millis: fields[5])
    }
}

/// The cost of TLS: `redis-benchmark --tls … XADD wal * data <100 B>` (16 clients × 16
/// pipelined) against `redis-server --tls-port` and wald's `tls_listen`, both with the same
/// certificate (made here with the openssl command), durable and buffered, and the same load
/// in clear beside it so each server's TLS overhead shows in its own row.
enum TLSComparison {
    static func run(binaries: URL, work: URL, quick: Bool) throws {
        let certificates = work.appendingPathComponent("tls").path
        try makeCertificates(in: certificates)
        print("## TLS: redis-benchmark --tls XADD wal * data <100 B>, 16 clients × 16 pipelined\n")
        print("Redis `--tls-port` vs wald `--tls-listen`, the same certificate (EC P-256, TLS 1.3), no client certificates. "
              + "The clear rows are the same load on each server's plain port. CPU = the server's CPU time per request.\n")
        print("| pass | transport | Redis req/s | p50 ms | p99 ms | CPU µs | wald req/s | p50 ms | p99 ms | CPU µs | wald/Redis | CPU wald/Redis |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        let value = String(repeating: "x", count: 100)
        for pass in [Pass.durable, .buffered] {
            let redis = try Server.redisTLS(directory: work.appendingPathComponent("redis-tls-\(pass)").path, fsync: pass.redisFsync,
                                            certificates: certificates)
            let wald = try Server.waldTLS(binaries: binaries, directory: work.appendingPathComponent("wald-tls-\(pass)").path,
                                          certificates: certificates, durability: pass == .durable ? "durable" : "buffered")
            defer { redis.server.stop(); wald.server.stop() }
            let requests = (pass == .buffered ? 400_000 : 200_000) / (quick ? 4 : 1)
            for tls in [false, true] {
                _ = try? Runner.run("/usr/bin/redis-cli", ["-p", "\(redis.server.port)", "flushall"])
                let tlsArguments = tls ? ["--tls", "--cacert", certificates + "/ca.pem"] : []
                let r: Measurement
                let w: Measurement
                do {
                    r = try Runner.measured(server: redis.server, requests: requests) {
                        try xadd(port: tls ? redis.tlsPort : redis.server.port, tls: tlsArguments, value: value, requests: requests)
                    }
                    w = try Runner.measured(server: wald.server, requests: requests) {
                        try xadd(port: tls ? wald.tlsPort : wald.server.port, tls: tlsArguments, value: value, requests: requests)
                    }
                } catch {
                    print("| \(pass) | \(tls ? "TLS" : "clear") | failed: \(error) |")
                    continue
                }
                print(String(format: "| %@ | %@ | %.0f | %.3f | %.2f | %.2f | %.0f | %.3f | %.2f | %.2f | %.2f× | %.2f× |",
                             "\(pass)", tls ? "TLS" : "clear", r.perSecond, r.p50Millis, r.p99Millis, r.serverMicros,
                             w.perSecond, w.p50Millis, w.p99Millis, w.serverMicros, w.perSecond / max(r.perSecond, 1),
                             w.serverMicros / max(r.serverMicros, 0.001)))
                fflush(stdout)
            }
        }
        print("")
    }

    private static func xadd(port: UInt16, tls: [String], value: String, requests: Int) throws -> Measurement {
        let output = try Runner.run("/usr/bin/redis-benchmark", ["-p", "\(port)", "-c", "16", "-P", "16", "-n", "\(requests)", "--csv"]
                                        + tls + ["XADD", "wal", "*", "data", value])
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("\"XADD") }) else {
            throw BenchError.failed("redis-benchmark printed: \(output.prefix(300))")
        }
        let fields = line.split(separator: ",").suffix(7).map { Double($0.replacingOccurrences(of: "\"", with: "")) ?? 0 }
        guard fields.count == 7, fields[0] > 0 else { throw BenchError.failed("redis-benchmark printed: \(line.prefix(300))") }
        return Measurement(perSecond: fields[0], p50Millis: fields[3], p99Millis: fields[5])
    }

    /// A CA and a server certificate for 127.0.0.1 and localhost (openssl command, EC P-256).
    private static func makeCertificates(in directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try Data("subjectAltName=DNS:localhost,IP:127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: directory + "/san.ext"))
        let steps: [[String]] = [
            ["req", "-x509"] + key + ["-keyout", directory + "/ca.key", "-out", directory + "/ca.pem", "-days", "2", "-subj", "/CN=bench CA"],
            ["req"] + key + ["-keyout", directory + "/server.key", "-out", directory + "/server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", directory + "/server.csr", "-CA", directory + "/ca.pem", "-CAkey", directory + "/ca.key",
             "-CAcreateserial", "-out", directory + "/server.pem", "-days", "2", "-extfile", directory + "/san.ext"],
        ]
        for step in steps {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = step
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try runWithSignalsUnblocked(process)
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw BenchError.failed("openssl \(step.joined(separator: " ")) failed") }
        }
    }
}

enum Runner {
    /// Runs one load, measuring the server's CPU and the load generator's around it.
    static func measured(server: Server, requests: Int, _ load: () throws -> Measurement) throws -> Measurement {
        let serverBefore = server.cpuNanos
        let clientBefore = childrenCPUNanos()
        var measurement = try load()
        measurement.serverMicros = Double(server.cpuNanos - serverBefore) / 1000 / Double(requests)
        measurement.clientMicros = Double(childrenCPUNanos() - clientBefore) / 1000 / Double(requests)
        return measurement
    }

    /// User + sys time of every child that has exited and been waited for, in ns.
    static func childrenCPUNanos() -> UInt64 {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        let micros = (Int64(usage.ru_utime.tv_sec) + Int64(usage.ru_stime.tv_sec)) * 1_000_000
            + Int64(usage.ru_utime.tv_usec) + Int64(usage.ru_stime.tv_usec)
        return UInt64(micros) * 1000
    }

    static func redisBenchmark(port: UInt16, clients: Int, pipeline: Int, size: Int, requests: Int) throws -> Measurement {
        let output = try run("/usr/bin/redis-benchmark", ["-p", "\(port)", "-t", "rpush", "-c", "\(clients)", "-P", "\(pipeline)",
                                                          "-n", "\(requests)", "-d", "\(size)", "--csv"])
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("\"RPUSH") }) else {
            throw BenchError.failed("redis-benchmark printed: \(output)")
        }
        let fields = line.split(separator: ",").map { Double($0.replacingOccurrences(of: "\"", with: "")) ?? 0 }
        return Measurement(perSecond: fields[1], p50Millis: fields[4], p99Millis: fields[6])
    }

    static func waldBench(binaries: URL, port: UInt16, clients: Int, pipeline: Int, size: Int, requests: Int, buffered: Bool) throws -> Measurement {
        var arguments = ["bench", "--server", "127.0.0.1:\(port)", "--clients", "\(clients)", "--pipeline", "\(pipeline)",
                         "--size", "\(size)", "--count", "\(requests)", "--json"]
        if buffered { arguments.append("--buffered") }
        let output = try run(binaries.appendingPathComponent("walctl").path, arguments)
        guard let data = output.split(separator: "\n").last.map({ Data($0.utf8) }),
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rate = object["ops_per_sec"] as? Double, let p99 = object["p99_us"] as? Double,
              let p50 = object["p50_us"] as? Double else {
            throw BenchError.failed("walctl bench printed: \(output)")
        }
        return Measurement(perSecond: rate, p50Millis: p50 / 1000, p99Millis: p99 / 1000)
    }

    /// Drops every segment of wald's log it can (TRUNCATE before the durable LSN + 1): between
    /// cells, so the buffered 4 KiB cells do not fill the disk (they once wrote it full: NO_SPACE).
    static func dropWaldLog(binaries: URL, port: UInt16) {
        let walctl = binaries.appendingPathComponent("walctl").path
        guard let text = try? run(walctl, ["sync", "--server", "127.0.0.1:\(port)"]),
              let durable = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)), durable > 0 else { return }
        _ = try? run(walctl, ["truncate", "--before", "\(durable + 1)", "--server", "127.0.0.1:\(port)"])
    }

    static func run(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try runWithSignalsUnblocked(process)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Starts `process` with SIGTERM, SIGINT and SIGHUP unblocked. A child inherits the blocked
/// signal mask of the thread that spawns it, and after the first `await` this code runs on a
/// Dispatch worker thread, which libdispatch starts with those signals blocked: a redis-server
/// spawned there never saw SIGTERM (its log ended at "Ready to accept connections", and
/// /proc/PID/status listed SIGTERM in SigBlk) and was killed after 10 s.
func runWithSignalsUnblocked(_ process: Process) throws {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&unblock, signal) }
    var previous = sigset_t()
    pthread_sigmask(SIG_UNBLOCK, &unblock, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    try process.run()
}

/// pwrite 100 bytes + fdatasync, in a loop, on a zero-filled file: the disk's floor.
enum RawSyncLoop {
    static func run(directory: String, iterations: Int) -> (perSecond: Double, p50Micros: Double) {
        // p50 in µs with a decimal: the floor the 1 × 1 cells are held to.
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
        print(String(format: "follower lag (primary ack → durable on follower and streamed): p50 %.0f µs, p99 %.0f µs over %d records (%d missing); target p99 < 1000 µs",
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
        print(String(format: "durable appends/s, 16 clients: async %.0f (p99 %.2f ms), min_sync_replicas=1 %.0f (p99 %.2f ms): ratio %.2f (target ≥ 0.70)\n",
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

/// One client, one PING at a time, against Redis and wald side by side, in alternating rounds
/// (A B A B) so that both see the same machine state. The same client code times both.
enum PingComparison {
    struct Latency {
        var p50: Double
        var p99: Double
    }

    static func run(binaries: URL, work: URL, rounds: Int, perRound: Int) throws -> (redis: Latency, wald: Latency, count: Int) {
        let redis = try Server.redis(directory: work.appendingPathComponent("redis-ping").path, fsync: "always")
        let wald = try Server.wald(binaries: binaries, directory: work.appendingPathComponent("wald-ping").path)
        defer { redis.stop(); wald.stop() }
        // Redis's inline PING → "+PONG\r\n"; wald's binary PING (empty body) → PONG, 5 bytes.
        let redisClient = try BlockingPinger(port: redis.port, request: Array("PING\r\n".utf8), replyLength: 7)
        let waldClient = try BlockingPinger(port: wald.port, request: [0, 0, 0, 1, 5], replyLength: 5)
        defer { redisClient.close(); waldClient.close() }
        _ = try redisClient.ping(200)
        _ = try waldClient.ping(200)
        var redisSamples: [Double] = [], waldSamples: [Double] = []
        for _ in 0..<rounds {
            redisSamples += try redisClient.ping(perRound)
            waldSamples += try waldClient.ping(perRound)
        }
        return (summarize(redisSamples), summarize(waldSamples), redisSamples.count)
    }

    private static func summarize(_ samples: [Double]) -> Latency {
        let sorted = samples.sorted()
        return Latency(p50: sorted[sorted.count / 2], p99: sorted[min(sorted.count - 1, sorted.count * 99 / 100)])
    }
}

/// A blocking TCP client that sends a fixed request and reads a reply of known length.
final class BlockingPinger {
    private let fd: Int32
    private let request: [UInt8]
    private let replyLength: Int

    init(port: UInt16, request: [UInt8], replyLength: Int) throws {
        self.request = request
        self.replyLength = replyLength
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchError.failed("connect to port \(port): errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    func close() { Glibc.close(fd) }

    /// `count` round trips; each one's time in µs.
    func ping(_ count: Int) throws -> [Double] {
        var samples: [Double] = []
        samples.reserveCapacity(count)
        var reply = [UInt8](repeating: 0, count: replyLength)
        for _ in 0..<count {
            let start = DispatchTime.now().uptimeNanoseconds
            guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
                throw BenchError.failed("send failed: errno \(errno)")
            }
            var received = 0
            while received < replyLength {
                let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, replyLength - received, 0) }
                guard n > 0 else { throw BenchError.failed("recv returned \(n): errno \(errno)") }
                received += n
            }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
        }
        return samples
    }
}
