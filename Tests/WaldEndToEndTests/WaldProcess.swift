// Starts the real wald binary on a free loopback port with a temporary data directory,
// the way an operator would, and stops it with a signal. Spawned with posix_spawn
// (WALTestSupport's SpawnedChild), not Foundation's Process, whose waitUntilExit hung a
// fresh-clone run once (see WALTestSupport/Spawn.swift).
import Foundation
import Testing
import WALTestSupport
#if canImport(Glibc)
import Glibc
#endif

final class WaldProcess: @unchecked Sendable {
    // @unchecked: only touched from the test that owns this object.
    let process: SpawnedChild
    let dataDirectory: String
    private(set) var address = ""
    /// Everything after "ready " on wald's ready line (`127.0.0.1:PORT metrics=…`).
    private(set) var readyLine = ""
    /// The read end of wald's stdout (the ready line, then whatever it prints).
    private let stdout: FileHandle
    private let stderrPath: String

    var port: UInt16 { UInt16(address.split(separator: ":").last!)! }

    /// Starts wald and waits for its "ready <addr>" line. `dataDirectory` nil = a new temp dir;
    /// `standardError` nil = a log file (`stderrText`).
    init(dataDirectory: String? = nil, arguments: [String] = [], environment: [String: String] = [:],
         standardError: FileHandle? = nil) throws {
        self.dataDirectory = dataDirectory ?? NSTemporaryDirectory() + "wald-e2e-\(UUID().uuidString)"
        stderrPath = self.dataDirectory + ".stderr.log"
        #expect(FileManager.default.createFile(atPath: stderrPath, contents: nil))
        var args = ["--data-dir", self.dataDirectory]
        if !arguments.contains("--log-level") { args += ["--log-level", "warning"] }
        if !arguments.contains("--flush-interval") { args += ["--flush-interval", "5ms"] }
        // A config file that sets its own listeners (`listen: []` for a TLS-only server) keeps them.
        if !arguments.contains("--listen") && !arguments.contains("--config") { args += ["--listen", "127.0.0.1:0"] }
        // Small segments by default: every start zero-fills a segment and prepares the next.
        if !arguments.contains("--max-segment-bytes") { args += ["--max-segment-bytes", "1MiB"] }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") }
        env.merge(environment) { $1 }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw WaldProcessError.spawn("pipe: errno \(errno)") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        stdout = FileHandle(fileDescriptor: ends[0], closeOnDealloc: true)
        let errorFD = standardError?.fileDescriptor ?? open(stderrPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard errorFD >= 0 else {
            close(ends[1])
            throw WaldProcessError.spawn("open \(stderrPath): errno \(errno)")
        }
        defer { if standardError == nil { close(errorFD) } }
        do {
            process = try SpawnedChild(buildProductsDirectory().appendingPathComponent("wald").path, args + arguments,
                                       environment: env, outputFD: ends[1], errorFD: errorFD)
        } catch {
            close(ends[1])
            throw error
        }
        // Only the child holds the write end now: a wald that dies before its ready line is EOF here.
        close(ends[1])
        do {
            address = try readReadyLine()
        } catch {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw error
        }
    }

    private func readReadyLine() throws -> String {
        let handle = stdout
        var line = Data()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
            if let text = String(data: line, encoding: .utf8), let newline = text.firstIndex(of: "\n") {
                let first = String(text[..<newline])
                guard first.hasPrefix("ready ") else { break }
                readyLine = String(first.dropFirst(6))
                return String(first.dropFirst(6).split(separator: " ").first ?? "")
            }
        }
        throw WaldProcessError.notReady(stderr: stderrText)
    }

    var stderrText: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` and waits for exit; returns the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    func cleanup() {
        stop(signal: SIGKILL)
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: stderrPath)
    }
}

enum WaldProcessError: Error, CustomStringConvertible {
    case notReady(stderr: String)
    case spawn(String)
    var description: String {
        switch self {
        case .notReady(let stderr): "wald did not print its ready line; stderr:\n\(stderr)"
        case .spawn(let reason): "could not start wald: \(reason)"
        }
    }
}
