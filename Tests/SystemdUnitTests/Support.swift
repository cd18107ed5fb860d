// Shared helpers for the systemd unit tests: where the repository and the built binaries are, and a
// bounded way to run a shell command and collect everything it printed.
import Foundation
import WALTestSupport

/// The repository root (this file is Tests/SystemdUnitTests/Support.swift).
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

struct CommandResult {
    let status: Int32
    /// stdout and stderr, interleaved as written.
    let output: String
    let timedOut: Bool
}

/// Runs `script` with /bin/sh (extra `arguments` are $1, $2, …), killing it after `timeout` seconds.
@discardableResult
func shell(_ script: String, _ arguments: [String] = [], environment: [String: String] = [:],
           timeout: TimeInterval = 60) throws -> CommandResult {
    let outputPath = NSTemporaryDirectory() + "wald-sd-\(UUID().uuidString).out"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    defer { try? output.close() }
    // WALTestSupport's runProgram (posix_spawn + waitpid), stdout and stderr into one file.
    let result = try runProgram("/bin/sh", ["-c", script, "sh"] + arguments, timeout: timeout, standardOutput: output,
                                standardError: output, environment: environment)
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    return CommandResult(status: result.status, output: text, timedOut: result.timedOut)
}

/// A new empty directory under /tmp (short, so Unix socket paths inside it stay under 108 bytes).
func makeTemporaryDirectory(_ label: String) throws -> URL {
    let url = URL(fileURLWithPath: "/tmp/wald-\(label)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
