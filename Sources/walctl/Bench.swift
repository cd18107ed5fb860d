// `walctl bench`: a closed-loop append load against a running wald, with HdrHistogram
// latency percentiles and distribution (the same matrix `make bench-compare` runs against Redis).
import ArgumentParser
import Foundation
import Histogram
import WALClient
import WALProtocol

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure append throughput and latency: C connections, P appends in flight on each.",
        discussion: """
            The records are appended to the server's real log and stay there (drop them with \
            `walctl truncate` once they are in old segments); walctl says so on stderr before it \
            starts. Progress goes to stderr only when stderr is a terminal. The result: \
            throughput, percentiles and HdrHistogram's percentile distribution (latency in µs), \
            or with --json one object. With no --count or --duration it runs 10 s.
            """)

    @OptionGroup var connection: ServerOptions
    @Option(help: "Connections.") var clients: Int = 1
    @Option(help: "Appends in flight per connection.") var pipeline: Int = 1
    @Option(help: "Record size in bytes.") var size: Int = 100
    @Option(help: "Total appends (instead of --duration).") var count: UInt64?
    @Option(help: "Seconds to run (instead of --count). Default 10.") var duration: Double?
    @Flag(help: "Buffered appends (acknowledged before fsync).") var buffered = false
    @Flag(help: "Print one JSON object instead of a table.") var json = false

    func validate() throws {
        guard clients >= 1, pipeline >= 1 else { throw ValidationError("--clients and --pipeline must be ≥ 1") }
        // One record per APPEND frame: flags, count and the record's length come with it.
        let largest = WALClient.maxFrameLength - 10
        guard size >= 0, size <= largest else { throw ValidationError("--size must be between 0 and \(largest) (one record in one frame)") }
        guard count == nil || duration == nil else { throw ValidationError("give at most one of --count and --duration") }
        if count == 0 { throw ValidationError("--count must be at least 1") }
        if let duration, !(duration.isFinite && duration > 0 && duration <= 31_536_000) {
            throw ValidationError("--duration must be a number of seconds above 0 and at most 31536000 (a year)")
        }
    }

    func run() async throws {
        let showProgress = !json && isatty(2) == 1
        let endpoint = try connection.endpoint
        // The load generator drives raw sockets with poll(2); it has no TLS layer.
        if connection.clientTLS != nil { Self.usageError("bench does not speak TLS; run it against a plain listener") }
        let duration = count == nil ? (self.duration ?? 10) : nil
        let amount = count.map { "\($0) appends" } ?? "\(StandardStreams.seconds(duration!)) s of appends"
        printError("bench: \(amount) of \(size)-byte records to \(endpoint); they stay in its log")
        let result: LoadResult
        do {
            result = try LoadGenerator.run(
                endpoint: endpoint, token: connection.resolvedToken, clients: clients, pipeline: pipeline,
                size: size, buffered: buffered, count: count, duration: duration, timeout: try connection.resolvedTimeout
            ) { done, elapsed in
                guard showProgress else { return }
                StandardStreams.writeError(String(format: "\r%llu appends, %.0f/s ", done, Double(done) / max(elapsed, 0.001)))
            }
        } catch {
            fail("\(error)")
        }
        if showProgress { StandardStreams.writeError("\n") }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        for value in result.latenciesMicros { _ = histogram.record(UInt64(max(value, 1))) }
        let opsPerSecond = Double(result.completed) / max(result.seconds, 1e-9)
        let p = { (q: Double) in histogram.totalCount == 0 ? 0 : histogram.valueAtPercentile(q) }
        if json {
            print("""
                {"ops_per_sec":\(String(format: "%.1f", opsPerSecond)),"completed":\(result.completed),\
                "errors":\(result.errors),"seconds":\(String(format: "%.3f", result.seconds)),\
                "p50_us":\(p(50)),"p90_us":\(p(90)),"p99_us":\(p(99)),"p999_us":\(p(99.9)),\
                "max_us":\(histogram.totalCount == 0 ? 0 : histogram.max),\
                "clients":\(clients),"pipeline":\(pipeline),"size":\(size),"buffered":\(buffered)\
                \(result.firstError.map { ",\"first_error\":\(jsonString($0))" } ?? "")}
                """)
        } else {
            print(String(format: "%llu appends in %.2f s: %.0f appends/s, %llu errors", result.completed, result.seconds, opsPerSecond, result.errors))
            if histogram.totalCount > 0 {
                print("latency µs: p50 \(p(50))  p90 \(p(90))  p99 \(p(99))  p99.9 \(p(99.9))  max \(histogram.max)")
                print("\nlatency distribution (µs):")
                var table = ""
                histogram.outputPercentileDistribution(to: &table, outputValueUnitScalingRatio: 1, percentileTicksPerHalfDistance: 1)
                print(table, terminator: "")
            }
            if let error = result.firstError { print("first error: \(error)") }
        }
        if result.errors > 0 || result.completed == 0 { throw ExitCode(1) }
    }
}
