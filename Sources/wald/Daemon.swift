// The daemon's lifecycle, outside main so no handler is MainActor-isolated (a Dispatch
// signal handler defined in MainActor code crashes when it runs on another queue):
// recover, bind, READY=1, serve; SIGHUP reloads; SIGTERM/SIGINT drain, fsync, exit 0.
import Dispatch
@preconcurrency import Foundation
import Logging
import Metrics
import Prometheus
import Synchronization
import WALClient
import WALCore
import WALDaemon
import WALServer

struct Daemon: Sendable {
    let config: WaldConfig
    let flags: WaldFlags

    /// Runs until SIGTERM or SIGINT; returns the exit code.
    func run() async -> Int32 {
        let environment = ProcessInfo.processInfo.environment
        // Metrics first: the log output's dropped-lines counter must come from the real factory.
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["wald_fsync_duration_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        factory.valueHistogramBuckets["wald_records_per_fsync"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
        MetricsSystem.bootstrap(factory)
        let level = LogLevelSetting(config.logLevel)
        let output = LogOutput(journal: WaldLogHandler.stderrIsJournal(environment: environment))
        LoggingSystem.bootstrap { WaldLogHandler(label: $0, output: output, setting: level) }
        let logger = Logger(label: "wald")
        // WALD_TEST_FAULT_FILE is no option but is known (the test-only fault point, warned about below).
        for name in WaldConfig.unrecognizedEnvironmentVariables(in: environment) where name != "WALD_TEST_FAULT_FILE" {
            logger.warning("ignoring unknown environment variable", metadata: ["name": "\(name)"])
        }

        let signals = SignalWatcher(signals: [SIGTERM, SIGINT, SIGHUP])
        Systemd.notify("STATUS=recovering \(config.dataDirectory)")
        let wal: WAL
        do {
            wal = try await WAL.open(walOptions(environment: environment, logger: logger))
        } catch {
            return fatal("cannot open the log in \(config.dataDirectory): \(error)", errno: errnoOf(error), logger: logger)
        }

        let activated = Systemd.listenFileDescriptors()
        var serverOptions = serverOptions(from: config)
        serverOptions.metricsText = { registry.emitToString() }
        serverOptions.inheritedListeners = activated.filter { $0.name != "metrics" }.map(\.fd)
        let role = config.follow.map { ReplicationRole(upstream: $0.description) }
        if let role { serverOptions.replication = role }
        let server = WALServer(wal: wal, options: serverOptions)
        var replicator: Replicator?
        if let upstream = config.follow, let role {
            let endpoint = Endpoint.tcp(host: upstream.host, port: upstream.port)
            let follower = Replicator(wal: wal, server: server, upstream: endpoint, token: config.authToken, role: role,
                                      logger: logger)
            role.setPromotionHandler {
                await follower.stop()
                logger.notice("promoted: no longer following; accepting appends", metadata: ["upstream": "\(upstream)"])
            }
            replicator = follower
        }
        let metrics = MetricsEndpoint { registry.emitToString() }
        var addresses: [String]
        do {
            addresses = try server.start()
            let metricsFD = activated.first { $0.name == "metrics" }?.fd
            let metricsAddress = config.metricsListen.map { SocketAddress(host: $0.host, port: $0.port) }
            if metricsFD != nil || metricsAddress != nil {
                addresses.append("metrics=" + (try metrics.start(address: metricsAddress, inherited: metricsFD)))
            }
        } catch {
            try? await wal.close()
            return fatal("cannot listen: \(error)", errno: (error as? SocketError)?.errno, logger: logger)
        }
        if !activated.isEmpty {
            logger.info("serving on sockets passed by systemd", metadata: ["names": "\(activated.map(\.name))"])
        }
        replicator?.start()
        print("ready " + addresses.joined(separator: " "))
        fflush(stdout)
        Systemd.notify("READY=1\n" + (await statusLine(wal: wal, server: server, addresses: addresses)))

        var background: [Task<Void, Never>] = []
        // A copy of `addresses` (a var): the task must not share it with the loop below.
        background.append(Task { [addresses] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                Systemd.notify(await statusLine(wal: wal, server: server, addresses: addresses))
            }
        })
        if let interval = Systemd.watchdogInterval() {
            logger.info("watchdog enabled", metadata: ["interval": "\(interval)"])
            background.append(Task { await WriterWatchdog(wal: wal, interval: interval, logger: logger).run() })
        }

        var running = config
        for await signal in signals.signals {
            if signal == SIGHUP {
                running = await reload(from: running, wal: wal, server: server, level: level, logger: logger)
                Systemd.notify("READY=1\n" + (await statusLine(wal: wal, server: server, addresses: addresses)))
                continue
            }
            logger.notice("stopping", metadata: ["signal": "\(signal)"])
            break
        }
        for task in background { task.cancel() }
        Systemd.notify("STOPPING=1\nSTATUS=stopping: draining connections and syncing")
        await replicator?.stop()
        await server.shutdown()
        metrics.stop()
        do {
            try await wal.close()
        } catch {
            return fatal("final fdatasync failed: \(error)", errno: errnoOf(error), logger: logger)
        }
        if let failure = wal.status.failure {
            return fatal("stopped without a final fdatasync: \(failure)", errno: EIO, logger: logger)
        }
        logger.notice("stopped cleanly")
        return 0
    }

    /// SIGHUP: reads the configuration again and applies what can change while running.
    /// A configuration with errors is rejected and the running one stays in force.
    private func reload(from running: WaldConfig, wal: WAL, server: WALServer, level: LogLevelSetting, logger: Logger) async -> WaldConfig {
        Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicros())")
        let new: WaldConfig
        do {
            new = try await WaldConfig.load(flags: flags, environment: ProcessInfo.processInfo.environment)
        } catch {
            logger.error("configuration reload rejected; the running configuration stays in force", metadata: ["error": "\(error)"])
            return running
        }
        let (changed, needsRestart) = running.reloadable(from: new)
        for key in needsRestart {
            logger.warning("option changed in the configuration but needs a restart to take effect", metadata: ["option": "\(key)"])
        }
        var applied = running
        applied.logLevel = new.logLevel
        applied.flushInterval = new.flushInterval
        applied.maxSegments = new.maxSegments
        applied.retentionBytes = new.retentionBytes
        applied.maxRecordBytes = new.maxRecordBytes
        applied.maxBufferBytes = new.maxBufferBytes
        applied.maxConnections = new.maxConnections
        applied.maxFrameBytes = new.maxFrameBytes
        applied.authToken = new.authToken
        applied.slowSyncThreshold = new.slowSyncThreshold
        applied.minSyncReplicas = new.minSyncReplicas
        applied.syncReplicaTimeout = new.syncReplicaTimeout
        applied.maxFollowerHoldBytes = new.maxFollowerHoldBytes
        level.value = applied.logLevel
        do {
            try wal.update(walOptions(from: applied))
        } catch {
            logger.error("configuration reload rejected by the WAL", metadata: ["error": "\(error)"])
            return running
        }
        server.update(
            maxConnections: applied.maxConnections, maxFrameBytes: applied.maxFrameBytes, authToken: .some(applied.authToken),
            minSyncReplicas: applied.minSyncReplicas, syncReplicaTimeout: applied.syncReplicaTimeout,
            maxFollowerHoldBytes: applied.maxFollowerHoldBytes)
        logger.notice("configuration reloaded", metadata: ["changed": "\(changed.filter { !needsRestart.contains($0) })"])
        return applied
    }

    private func statusLine(wal: WAL, server: WALServer, addresses: [String]) async -> String {
        let status = wal.status
        if let failure = status.failure { return "STATUS=failed: \(failure)" }
        return "STATUS=serving \(addresses.joined(separator: " ")); last LSN \(status.lastLSN), "
            + "durable LSN \(status.durableLSN), \(server.connectionCount) connections"
    }

    /// Tells systemd why wald gives up (STATUS= and ERRNO=), logs it, returns the exit code.
    private func fatal(_ reason: String, errno: Int32?, logger: Logger) -> Int32 {
        logger.critical("fatal", metadata: ["reason": "\(reason)"])
        var message = "STATUS=\(reason)"
        if let errno { message += "\nERRNO=\(errno)" }
        Systemd.notify(message)
        return 1
    }

    private func errnoOf(_ error: any Error) -> Int32? {
        switch error {
        case WALError.io(let io): io.errno
        case WALError.noSpace: ENOSPC
        case WALError.locked: EWOULDBLOCK
        default: nil
        }
    }

    func walOptions(environment: [String: String] = [:], logger: Logger) -> WALOptions {
        var options = walOptions(from: config)
        if let faultFile = environment["WALD_TEST_FAULT_FILE"], !faultFile.isEmpty {
            logger.warning("test-only fault injection is on", metadata: ["WALD_TEST_FAULT_FILE": "\(faultFile)"])
            options.io = FaultInjectingFileIO(base: PosixFileIO(), controlFile: faultFile)
        }
        return options
    }

    func walOptions(from config: WaldConfig) -> WALOptions {
        var options = WALOptions(directory: config.dataDirectory)
        options.segmentPrefix = config.segmentPrefix
        options.maxSegmentBytes = config.maxSegmentBytes
        options.maxSegments = config.maxSegments
        options.retentionBytes = config.retentionBytes
        options.maxRecordBytes = config.maxRecordBytes
        options.flushInterval = config.flushInterval
        options.maxBufferBytes = config.maxBufferBytes
        options.slowSyncThreshold = config.slowSyncThreshold
        options.logger = Logger(label: "wald.wal")
        return options
    }

    func serverOptions(from config: WaldConfig) -> ServerOptions {
        var options = ServerOptions()
        options.listen = config.listen.map { SocketAddress(host: $0.host, port: $0.port) }
        options.unixSocket = config.unixSocket
        options.maxConnections = config.maxConnections
        options.maxFrameBytes = config.maxFrameBytes
        options.authToken = config.authToken
        options.minSyncReplicas = config.minSyncReplicas
        options.syncReplicaTimeout = config.syncReplicaTimeout
        options.maxFollowerHoldBytes = config.maxFollowerHoldBytes
        options.respStream = config.respStream
        options.respBuffered = config.respDurability == "buffered"
        options.logger = Logger(label: "wald.server")
        return options
    }
}

/// Turns signals into an async sequence (their default action is disabled).
final class SignalWatcher: Sendable {
    private let sources: [Source]
    let signals: AsyncStream<Int32>

    private struct Source: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe; kept only so the sources stay alive.
        let source: any DispatchSourceSignal
    }

    init(signals numbers: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        signals = stream
        let queue = DispatchQueue(label: "wald.signals")
        sources = numbers.map { number in
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return Source(source: source)
        }
    }
}
