// The daemon's lifecycle, outside main so no handler is MainActor-isolated (a Dispatch
// signal handler defined in MainActor code crashes when it runs on another queue).
import Dispatch
@preconcurrency import Foundation
import Logging
import WALCore
import WALDaemon
import WALServer

struct Daemon: Sendable {
    let config: WaldConfig

    /// Runs until SIGTERM or SIGINT; returns the exit code.
    func run() async -> Int32 {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = config.logLevel
            return handler
        }
        var logger = Logger(label: "wald")
        logger.logLevel = config.logLevel
        for name in WaldConfig.unrecognizedEnvironmentVariables(in: ProcessInfo.processInfo.environment) {
            logger.warning("ignoring unknown environment variable", metadata: ["name": "\(name)"])
        }

        let signals = SignalWatcher(signals: [SIGTERM, SIGINT])
        let wal: WAL
        do {
            wal = try await WAL.open(walOptions(logger: logger))
        } catch {
            logger.critical("cannot open the log", metadata: ["directory": "\(config.dataDirectory)", "error": "\(error)"])
            return 1
        }
        let server = WALServer(wal: wal, options: serverOptions(logger: logger))
        let addresses: [String]
        do {
            addresses = try server.start()
        } catch {
            logger.critical("cannot listen", metadata: ["error": "\(error)"])
            try? await wal.close()
            return 1
        }
        print("ready " + addresses.joined(separator: " "))
        fflush(stdout)

        let signal = await signals.next()
        logger.notice("stopping", metadata: ["signal": "\(signal)"])
        await server.shutdown()
        do {
            try await wal.close()
        } catch {
            logger.error("final sync failed", metadata: ["error": "\(error)"])
            return 1
        }
        logger.notice("stopped cleanly")
        return 0
    }

    func walOptions(logger: Logger) -> WALOptions {
        var options = WALOptions(directory: config.dataDirectory)
        options.segmentPrefix = config.segmentPrefix
        options.maxSegmentBytes = config.maxSegmentBytes
        options.maxSegments = config.maxSegments
        options.retentionBytes = config.retentionBytes
        options.maxRecordBytes = config.maxRecordBytes
        options.flushInterval = config.flushInterval
        options.maxBufferBytes = config.maxBufferBytes
        options.slowSyncThreshold = config.slowSyncThreshold
        var walLogger = Logger(label: "wald.wal")
        walLogger.logLevel = logger.logLevel
        options.logger = walLogger
        return options
    }

    func serverOptions(logger: Logger) -> ServerOptions {
        var options = ServerOptions()
        options.listen = config.listen.map { SocketAddress(host: $0.host, port: $0.port) }
        options.unixSocket = config.unixSocket
        options.maxConnections = config.maxConnections
        options.maxFrameBytes = config.maxFrameBytes
        options.authToken = config.authToken
        var serverLogger = Logger(label: "wald.server")
        serverLogger.logLevel = logger.logLevel
        options.logger = serverLogger
        return options
    }
}

/// Turns signals into values a task can await (the default action is disabled for them).
final class SignalWatcher: @unchecked Sendable {
    // @unchecked: `sources` is written once in init and never mutated; `stream` is Sendable.
    private var sources: [any DispatchSourceSignal] = []
    private let stream: AsyncStream<Int32>
    private let queue = DispatchQueue(label: "wald.signals")

    init(signals: [Int32]) {
        var continuation: AsyncStream<Int32>.Continuation!
        stream = AsyncStream { continuation = $0 }
        let yield = continuation!
        for number in signals {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { yield.yield(number) }
            source.resume()
            sources.append(source)
        }
    }

    func next() async -> Int32 {
        for await signal in stream { return signal }
        return 0
    }
}
