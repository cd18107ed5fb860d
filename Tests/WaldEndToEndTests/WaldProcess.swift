// Starts the real wald binary on a free loopback port with a temporary data directory,
// the way an operator would, and stops it with a signal.
import Foundation
import Testing

/// Directory holding the built executables (next to the test bundle).
func buildProductsDirectory() -> URL {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
}

final class WaldProcess: @unchecked Sendable {
    // @unchecked: the Process is only touched from the test that owns this object.
    let process = Process()
    let dataDirectory: String
    private(set) var address = ""
    /// Everything after "ready " on wald's ready line (`127.0.0.1:PORT metrics=…`).
    private(set) var readyLine = ""
    private let stdoutPipe = Pipe()
    private let stderrPath: String

    var port: UInt16 { UInt16(address.split(separator: ":").last!)! }

    /// Starts wald and waits for its "ready <addr>" line. `dataDirectory` nil = a new temp dir;
    /// `standardError` nil = a log file (`stderrText`).
    init(dataDirectory: String? = nil, arguments: [String] = [], environment: [String: String] = [:],
         standardError: FileHandle? = nil) throws {
        self.dataDirectory = dataDirectory ?? NSTemporaryDirectory() + "wald-e2e-\(UUID().uuidString)"
        stderrPath = self.dataDirectory + ".stderr.log"
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = buildProductsDirectory().appendingPathComponent("wald")
        var args = ["--data-dir", self.dataDirectory]
        if !arguments.contains("--log-level") { args += ["--log-level", "warning"] }
        if !arguments.contains("--flush-interval") { args += ["--flush-interval", "5ms"] }
        // A config file that sets its own listeners (`listen: []` for a TLS-only server) keeps them.
        if !arguments.contains("--listen") && !arguments.contains("--config") { args += ["--listen", "127.0.0.1:0"] }
        // Small segments by default: every start zero-fills a segment and prepares the next.
        if !arguments.contains("--max-segment-bytes") { args += ["--max-segment-bytes", "1MiB"] }
        process.arguments = args + arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WALD_") }
        env.merge(environment) { $1 }
        process.environment = env
        process.standardOutput = stdoutPipe
        process.standardError = standardError ?? FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        address = try readReadyLine()
    }

    private func readReadyLine() throws -> String {
        let handle = stdoutPipe.fileHandleForReading
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
        process.terminate()
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
    var description: String {
        switch self { case .notReady(let stderr): "wald did not print its ready line; stderr:\n\(stderr)" }
    }
}
