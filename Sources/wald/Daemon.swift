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
import WALConfig
import WALEtcd
import WALProtocol
import WALServer
import WALTLS
import WALSync
import WALSystem

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
        // Every address is bound before the log is opened: a start that fails here (a port in
        // use, a name that does not resolve) leaves no directory and no segment behind.
        let activated = Systemd.listenFileDescriptors()
        var serverOptions = serverOptions(from: config)
        do {
            serverOptions.tls = try serverTLS(from: config)
        } catch {
            return fatal("\(error)", errno: EINVAL, logger: logger)
        }
        let listeners: Listeners
        do {
            listeners = try bindListeners(activated: activated, options: serverOptions, environment: environment)
        } catch {
            return fatal("\(error)", errno: (error as? SystemError)?.errno, logger: logger)
        }
        serverOptions.inheritedListeners = listeners.server
        serverOptions.inheritedTLSListeners = listeners.tls
        if let problem = dataDirectoryProblem() {
            listeners.release()
            return fatal(problem, errno: ENOENT, logger: logger)
        }

        // Automatic failover: etcd first, to learn whether this log must be cut before it opens.
        var failover: (settings: FailoverCoordinator.Settings, etcd: EtcdClient)?
        var options = walOptions(environment: environment, logger: logger)
        if let advertise = config.advertise, let cluster = config.haCluster, !config.haEtcd.isEmpty {
            let settings = FailoverCoordinator.Settings(
                endpoints: config.haEtcd, cluster: cluster, advertise: advertise.description, leaseTTL: config.haLeaseTTL,
                dataDirectory: config.dataDirectory, token: config.authToken)
            let etcd: EtcdClient
            do {
                etcd = try EtcdClient(endpoints: config.haEtcd, requestTimeout: min(.seconds(2), config.haLeaseTTL / 3))
            } catch {
                listeners.release()
                return fatal("--ha-etcd: \(error)", errno: EINVAL, logger: logger)
            }
            failover = (settings, etcd)
            Systemd.notify("STATUS=asking etcd who leads cluster \(cluster)")
            options.keepThrough = await FailoverCoordinator.keepThroughAtStart(settings: settings, etcd: etcd, logger: logger)
        }

        Systemd.notify("STATUS=recovering \(config.dataDirectory)")
        let wal: WAL
        do {
            wal = try await WAL.open(options)
        } catch {
            listeners.release()
            await failover?.etcd.shutdown()  // async-http-client traps on a client dropped without shutdown
            return fatal("cannot open the log in \(config.dataDirectory): \(error)", errno: errnoOf(error), logger: logger)
        }

        serverOptions.metricsText = { MetricsHelp.annotate(registry.emitToString()) }
        // How a follower (or a member under automatic failover) reaches its upstream.
        let followTLS = config.followTLS ? ClientTLS(caFile: config.followTLSCAFile, certificateFile: config.followTLSCertFile,
                                                     keyFile: config.followTLSKeyFile, serverName: config.followTLSServerName) : nil
        if let followTLS {
            // Read the files now: a missing one is a start-up error, not a retry loop.
            do {
                _ = try followTLS.makeContext()
            } catch {
                listeners.release()
                try? await wal.close()
                await failover?.etcd.shutdown()
                return fatal("follow_tls: \(error)", errno: EINVAL, logger: logger)
            }
        }
        var role = config.follow.map { ReplicationRole(upstream: $0.description) }
        failover?.settings.tls = followTLS
        if let failover {
            role = ReplicationRole(highAvailability: HighAvailabilityStatus(
                endpoints: failover.settings.endpoints, cluster: failover.settings.cluster, leaseTTL: failover.settings.leaseTTL))
        }
        if let role { serverOptions.replication = role }
        let server = WALServer(wal: wal, options: serverOptions)
        var coordinator: FailoverCoordinator?
        if let failover, let role {
            coordinator = FailoverCoordinator(settings: failover.settings, etcd: failover.etcd, wal: wal, server: server,
                                              role: role, logger: logger) { reason in signals.requestRestart(reason) }
        }
        var replicator: Replicator?
        if let upstream = config.follow, let role {
            let follower = Replicator(wal: wal, server: server, upstream: upstream, token: config.authToken, tls: followTLS,
                                      role: role, logger: logger)
            role.setPromotionHandler {
                await follower.stop()
                logger.notice("promoted: no longer following; accepting appends", metadata: ["upstream": "\(upstream)"])
            }
            replicator = follower
        }
        let metrics = MetricsEndpoint(text: { server.metricsText() }, token: config.metricsToken)
        var addresses: [String]
        do {
            addresses = try server.start()
            if let fd = listeners.metrics {
                addresses.append("metrics=" + (try metrics.start(address: nil, inherited: fd)))
            }
        } catch {
            try? await wal.close()
            listeners.removeUnixSocket()
            await failover?.etcd.shutdown()
            return fatal("cannot listen: \(error)", errno: (error as? SystemError)?.errno, logger: logger)
        }
        if !activated.isEmpty {
            logger.info("serving on sockets passed by systemd", metadata: ["names": "\(activated.map(\.name))"])
        }
        logStart(wal: wal, addresses: addresses, logger: logger)
        replicator?.start()
        coordinator?.start()
        print("ready " + addresses.joined(separator: " "))
        fflush(stdout)
        Systemd.notify("READY=1\n" + (await statusLine(wal: wal, server: server, addresses: addresses)))

        // A copy of `addresses` (a var): the task must not share it with the loop below.
        let status = Task { [addresses] in
            while true {
                do { try await Task.sleep(for: .seconds(2)) } catch { return }
                let line = await statusLine(wal: wal, server: server, addresses: addresses)
                // Cancelled while computing it: STOPPING=1 may be out, and nothing follows it.
                guard !Task.isCancelled else { return }
                Systemd.notify(line)
            }
        }
        var watchdog: Task<Void, Never>?
        if let interval = Systemd.watchdogInterval() {
            logger.info("watchdog enabled", metadata: ["interval": "\(interval)"])
            watchdog = Task { await WriterWatchdog(wal: wal, interval: interval, logger: logger).run() }
        }

        var running = config
        var restartReason: String?
        for await signal in signals.signals {
            if signal == SignalWatcher.restart {
                restartReason = signals.restartReason
                logger.notice("restarting", metadata: ["reason": "\(restartReason ?? "")"])
                break
            }
            if signal == SIGHUP {
                running = await reload(from: running, wal: wal, server: server, metrics: metrics, level: level, logger: logger)
                Systemd.notify("READY=1\n" + (await statusLine(wal: wal, server: server, addresses: addresses)))
                continue
            }
            logger.notice("stopping", metadata: ["signal": "\(signal)"])
            break
        }
        watchdog?.cancel()
        // No STATUS=serving after STOPPING=1: the status task is finished before it goes out.
        status.cancel()
        await status.value
        Systemd.notify("STOPPING=1\nSTATUS=stopping: draining connections and syncing")
        await coordinator?.stop()
        await replicator?.stop()
        await server.shutdown()
        metrics.stop()
        listeners.removeUnixSocket()
        do {
            try await wal.close()
        } catch {
            return fatal("final fdatasync failed: \(error)", errno: errnoOf(error), logger: logger)
        }
        if let failure = wal.status.failure {
            return fatal("stopped without a final fdatasync: \(failure)", errno: EIO, logger: logger)
        }
        if let restartReason {
            // Same process, same command line: systemd sees one service, and the new image
            // opens the log with the cut (FailoverCoordinator.keepThroughAtStart).
            Systemd.notify("STATUS=restarting: \(restartReason)")
            return Self.reexecute(logger: logger)
        }
        logger.notice("stopped cleanly")
        return 0
    }

    /// execv of /proc/self/exe with the same arguments and environment, every descriptor but
    /// stdin, stdout and stderr closed on exec. Returns 1 (after logging) only if exec fails.
    private static func reexecute(logger: Logger) -> Int32 {
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            for entry in entries {
                guard let fd = Int32(entry), fd > 2 else { continue }
                let flags = fcntl(fd, F_GETFD)
                if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
            }
        }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        let code = errno
        logger.critical("restart failed: execv /proc/self/exe", metadata: ["errno": "\(code)"])
        return 1
    }

    /// The listening sockets, bound (or taken from systemd) before the log is opened.
    struct Listeners {
        var server: [Int32]
        var tls: [Int32] = []
        var metrics: Int32?
        /// The unix socket file wald created itself (removed at exit; systemd's is systemd's).
        var unixSocket: String?

        /// Closes everything and removes the socket file: the start failed.
        func release() {
            for fd in server + tls { close(fd) }
            if let metrics { close(metrics) }
            removeUnixSocket()
        }

        func removeUnixSocket() {
            if let unixSocket { unlink(unixSocket) }
        }
    }

    private func bindListeners(activated: [(fd: Int32, name: String)], options: ServerOptions,
                               environment: [String: String]) throws -> Listeners {
        guard activated.isEmpty else {
            let passed = activated.filter { $0.name != "metrics" }
            try checkExplicitListen(matches: passed.map(\.fd), environment: environment)
            // TLS listeners are wald's own even under socket activation.
            let tls = try WALServer.bindTLS(options)
            return Listeners(server: passed.map(\.fd), tls: tls, metrics: activated.first { $0.name == "metrics" }?.fd)
        }
        let fds = try WALServer.bind(options)
        var tls: [Int32] = []
        var metricsFD: Int32?
        do {
            tls = try WALServer.bindTLS(options)
            if let address = config.metricsListen {
                metricsFD = try MetricsEndpoint.bind(address)
            }
        } catch {
            Listeners(server: fds, tls: tls, unixSocket: config.unixSocket).release()
            throw error
        }
        return Listeners(server: fds, tls: tls, metrics: metricsFD, unixSocket: config.unixSocket)
    }

    /// With socket activation wald serves on the sockets systemd passes, whatever the config
    /// file says; but a `--listen` (or WALD_LISTEN) given explicitly that names other
    /// addresses is a mistake to stop at, not to ignore.
    private func checkExplicitListen(matches fds: [Int32], environment: [String: String]) throws {
        guard flags.values[.listen] != nil || environment[WaldOption.listen.environmentVariable] != nil else { return }
        let passed = Set(fds.map { WALServer.localAddress($0) }.filter { !$0.hasPrefix("unix:") })
        let wanted = Set(config.listen.map(\.description))
        guard wanted.isSubset(of: passed) else {
            throw StartError("--listen \(wanted.sorted().joined(separator: ",")) does not match the sockets systemd passed "
                             + "(\(passed.sorted().joined(separator: ", "))); drop --listen or change the socket unit")
        }
    }

    /// A data directory that is missing must at least have its parent: a mistyped path must not
    /// quietly become a new, empty log in a new directory tree.
    private func dataDirectoryProblem() -> String? {
        let directory = config.dataDirectory
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            return isDirectory.boolValue ? nil : "the data directory \(directory) is not a directory"
        }
        // Foundation's deletingLastPathComponent traps on a one-component path: cut by hand.
        let trimmed = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let base = trimmed.lastIndex(of: "/").map { $0 == trimmed.startIndex ? "/" : String(trimmed[..<$0]) } ?? "."
        guard FileManager.default.fileExists(atPath: base, isDirectory: &isDirectory), isDirectory.boolValue else {
            return "the data directory \(directory) does not exist, nor does its parent \(base): "
                + "wald creates the data directory, not the path to it (a mistyped --data-dir?)"
        }
        return nil
    }

    /// One line that says what this wald is: version, where its log is and what it holds, and
    /// every option that is not at its default.
    private func logStart(wal: WAL, addresses: [String], logger: Logger) {
        let status = wal.status
        let defaults = WaldConfig().loggingMetadata
        let changed = config.loggingMetadata.filter { key, value in key != "data_dir" && "\(defaults[key] ?? "")" != "\(value)" }
        logger.notice("wald started", metadata: [
            "version": "\(WaldVersion.string)", "data_dir": "\(config.dataDirectory)", "log_id": "\(status.logID)",
            "generation": "\(status.generation)", "first_lsn": "\(status.firstLSN)", "last_lsn": "\(status.lastLSN)",
            "addresses": "\(addresses.joined(separator: " "))",
            "options": "\(changed.keys.sorted().map { "\($0)=\(changed[$0]!)" }.joined(separator: " "))",
        ])
    }

    /// SIGHUP: reads the configuration again and applies what can change while running.
    /// A configuration with errors is rejected and the running one stays in force.
    private func reload(from running: WaldConfig, wal: WAL, server: WALServer, metrics: MetricsEndpoint, level: LogLevelSetting,
                        logger: Logger) async -> WaldConfig {
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
        let applied = running.applyingReloadable(from: new)
        // The certificate files are read again even when their names did not change: renewing
        // a certificate in place and sending SIGHUP is how it is rotated.
        let tls: TLSContext?
        do {
            tls = try serverTLS(from: applied)
        } catch {
            logger.error("configuration reload rejected; the running configuration stays in force", metadata: ["error": "\(error)"])
            return running
        }
        if tls == nil && !(config.tlsListen.isEmpty) {
            logger.error("configuration reload rejected: the TLS listeners need tls_cert_file and tls_key_file; the running configuration stays in force")
            return running
        }
        level.value = applied.logLevel
        do {
            try wal.update(walOptions(from: applied))
        } catch {
            logger.error("configuration reload rejected by the WAL", metadata: ["error": "\(error)"])
            return running
        }
        var reloaded = serverOptions(from: applied)
        reloaded.tls = tls
        server.update(reloaded)
        metrics.update(token: applied.metricsToken)
        logger.notice("configuration reloaded", metadata: ["changed": "\(changed.filter { !needsRestart.contains($0) })"])
        return applied
    }

    private func statusLine(wal: WAL, server: WALServer, addresses: [String]) async -> String {
        let status = wal.status
        if let failure = status.failure { return "STATUS=failed: \(failure)" }
        var line = "STATUS=serving \(addresses.joined(separator: " ")); last LSN \(status.lastLSN), "
            + "durable LSN \(status.durableLSN), \(server.connectionCount) connections"
        if let ha = server.replication.highAvailability {
            let role = server.replication
            line += "; term \(role.term), " + (role.appendRefusal.map { "read-only: \($0)" } ?? "leader")
            if let error = ha.error { line += "; etcd: \(error)" }
        }
        return line
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
        case WALError.failed(_, let cause?): cause.errno
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
        options.scrubInterval = config.scrubInterval
        options.scrubBytesPerSecond = config.scrubBytesPerSecond
        options.logger = Logger(label: "wald.wal")
        return options
    }

    func serverOptions(from config: WaldConfig) -> ServerOptions {
        var options = ServerOptions()
        options.listen = config.listen
        options.unixSocket = config.unixSocket
        options.maxConnections = config.maxConnections
        options.maxFrameBytes = config.maxFrameBytes
        options.authToken = config.authToken
        options.minSyncReplicas = config.minSyncReplicas
        options.syncReplicaTimeout = config.syncReplicaTimeout
        options.maxFollowerHoldBytes = config.maxFollowerHoldBytes
        options.respStream = config.respStream
        options.respBuffered = config.respDurability == "buffered"
        options.tlsListen = config.tlsListen
        options.tlsHandshakeTimeout = config.tlsHandshakeTimeout
        options.idleTimeout = config.idleTimeout == .zero ? nil : config.idleTimeout
        options.maxConnectionsPerAddress = config.maxConnectionsPerAddress
        (options.users, options.certificateRoles) = access(from: config)
        options.logger = Logger(label: "wald.server")
        return options
    }
}

extension Daemon {
    /// The TLS listeners' context from the configured files, or nil when none are set. Throws
    /// `TLSError` naming the file and the reason (unreadable, not PEM, the key not the
    /// certificate's).
    /// The users and certificate roles for the server (the loader already checked every role
    /// name and hash, so nothing is dropped here).
    func access(from config: WaldConfig) -> (users: [ServerUser], certificateRoles: [String: Role]) {
        let users = config.users.compactMap { user -> ServerUser? in
            guard let role = Role(rawValue: user.role), let hash = TokenHash(parsing: user.tokenHash) else { return nil }
            return ServerUser(name: user.name, role: role, tokenHash: hash)
        }
        return (users, config.certificateRoles.compactMapValues { Role(rawValue: $0) })
    }

    func serverTLS(from config: WaldConfig) throws -> TLSContext? {
        guard let certificate = config.tlsCertFile, let key = config.tlsKeyFile else { return nil }
        return try TLSContext(serverCertificateFile: certificate, keyFile: key, caFile: config.tlsCAFile,
                              clientAuth: TLSClientAuth(rawValue: config.tlsClientAuth) ?? .none)
    }
}

/// Why wald could not start (one line for the operator).
struct StartError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Turns signals into an async sequence (their default action is disabled).
final class SignalWatcher: Sendable {
    private let sources: [Source]
    let signals: AsyncStream<Int32>

    private struct Source: @unchecked Sendable {
        // @unchecked: DispatchSource is thread-safe; kept only so the sources stay alive.
        let source: any DispatchSourceSignal
    }

    /// Not a signal: `requestRestart` was called.
    static let restart: Int32 = -1
    private let continuation: AsyncStream<Int32>.Continuation
    private let reason = WALMutex<String?>(nil)

    /// Ends the signal loop as SIGTERM does, but asks for a restart afterwards.
    func requestRestart(_ why: String) {
        reason.withLock { $0 = why }
        continuation.yield(Self.restart)
    }

    var restartReason: String? { reason.withLock { $0 } }

    init(signals numbers: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        signals = stream
        self.continuation = continuation
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
