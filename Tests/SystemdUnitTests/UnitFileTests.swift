// The shipped unit files, checked offline with systemd's own tools: `systemd-analyze verify` must have
// nothing to say about them, and `systemd-analyze security` must rate the service's exposure at most 1.5.
import Foundation
import Testing

@Suite("systemd unit files")
struct UnitFileTests {
    let service = repositoryRoot.appendingPathComponent("systemd/wald.service").path
    let socket = repositoryRoot.appendingPathComponent("systemd/wald.socket").path

    /// `verify` exits 0 even for unknown keys and bad values, so any output at all is a failure. It also
    /// insists that the ExecStart binary exists: a private mount namespace puts a stand-in executable on a
    /// tmpfs over the binary's directory, so the check needs neither an installed wald nor a dirty host.
    @Test func verifyPrintsNothingForServiceAndSocket() throws {
        let execStart = try #require(try serviceExecutable(), "wald.service has no absolute ExecStart=")
        let binaryDirectory = (execStart as NSString).deletingLastPathComponent
        let script = """
            set -e
            mount -t tmpfs none "$1"
            printf '#!/bin/sh\\nexit 0\\n' > "$2"
            chmod 755 "$2"
            exec systemd-analyze verify --man=no "$3" "$4"
            """
        let result = try shell(
            "inner=$1; shift; exec /usr/bin/unshare -m sh -c \"$inner\" sh \"$@\"",
            [script, binaryDirectory, execStart, service, socket], timeout: 60)
        #expect(result.status == 0, "systemd-analyze verify failed (status \(result.status))")
        #expect(result.output.isEmpty, "systemd-analyze verify printed:\n\(result.output)")
    }

    @Test func securityExposureIsAtMostOnePointFive() throws {
        let result = try shell("systemd-analyze security --offline=yes --man=no \"$1\"", [service], timeout: 60)
        #expect(result.status == 0, "systemd-analyze security failed:\n\(result.output)")
        // "→ Overall exposure level for wald.service: 1.1 OK 🙂"
        let line = try #require(
            result.output.split(separator: "\n").first { $0.contains("Overall exposure level for wald.service:") },
            "no overall exposure line in:\n\(result.output)")
        let afterColon = line.split(separator: ":").last ?? ""
        let exposure = try #require(afterColon.split(separator: " ").first.flatMap { Double($0) },
                                    "cannot parse the exposure in \(line)")
        let costs = result.output.split(separator: "\n").filter { $0.hasPrefix("✗") }.joined(separator: "\n")
        #expect(exposure <= 1.5, "exposure \(exposure) > 1.5; the directives that cost points:\n\(costs)")
    }

    @Test func socketPassesTheWalListenerByName() throws {
        let text = try String(contentsOfFile: socket, encoding: .utf8)
        let settings = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(settings.contains("FileDescriptorName=wal"))
        #expect(settings.contains("Service=wald.service"))
        #expect(settings.contains("ListenStream=7070"))
    }

    /// The first word of the service's ExecStart= (the path `make install` rewrites).
    private func serviceExecutable() throws -> String? {
        let text = try String(contentsOfFile: service, encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ExecStart=/") }) else { return nil }
        return line.dropFirst("ExecStart=".count).split(separator: " ").first.map(String.init)
    }
}
