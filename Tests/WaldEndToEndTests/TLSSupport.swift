// Real certificates for the TLS tests, made once per test run with the `openssl` command (Debian's
// openssl package; `make test` installs it): a CA, a server certificate for localhost and
// 127.0.0.1, client certificates by common name, an expired server and client certificate
// (`-days -1`), a renewed server certificate (for the SIGHUP reload test) and a second, unrelated
// CA. EC P-256 keys, because RSA key generation costs seconds.
import Foundation
import Synchronization
import Testing
import WALClient
import WALSync
import WALTestSupport

final class TestCertificates: Sendable {
    let directory: String

    private static let made = WALMutex<TestCertificates?>(nil)

    /// The run's certificates (made on first use).
    static func shared() throws -> TestCertificates {
        try made.withLock { cached in
            if let cached { return cached }
            let certificates = try TestCertificates()
            cached = certificates
            return certificates
        }
    }

    private init() throws {
        directory = NSTemporaryDirectory() + "wald-e2e-certs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try makeCA("ca", subject: "/CN=wald test CA")
        try makeCA("other-ca", subject: "/CN=someone else's CA")
        try Data("subjectAltName=DNS:localhost,IP:127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: path("server.ext")))
        try issue("server", subject: "/CN=localhost", extensions: "server.ext")
        try issue("server-renewed", subject: "/CN=localhost-renewed", extensions: "server.ext")
        try issue("server-expired", subject: "/CN=localhost", extensions: "server.ext", days: -1)
        for name in ["follower-1", "reader-cert", "appender-cert", "admin-cert", "stranger"] {
            try issue(name, subject: "/CN=\(name)")
        }
        try issue("client-expired", subject: "/CN=follower-1", days: -1)
    }

    func path(_ name: String) -> String { directory + "/" + name }
    func certificate(_ name: String) -> String { path(name + ".pem") }
    func key(_ name: String) -> String { path(name + ".key") }
    var ca: String { certificate("ca") }

    /// wald's server flags: a TLS listener on a free port with `certificate`.
    func serverArguments(_ certificate: String = "server", clientAuth: String = "none") -> [String] {
        ["--tls-listen", "127.0.0.1:0", "--tls-cert-file", self.certificate(certificate), "--tls-key-file", key(certificate),
         "--tls-ca-file", ca, "--tls-client-auth", clientAuth]
    }

    /// Client TLS settings trusting the test CA, presenting `client` when given.
    func client(_ client: String? = nil, ca: String? = nil) -> ClientTLS {
        ClientTLS(caFile: ca ?? self.ca, certificateFile: client.map(certificate), keyFile: client.map(key))
    }

    private func openssl(_ arguments: [String]) throws {
        let run = try runProgram("/usr/bin/openssl", arguments, timeout: 60)
        guard run.status == 0 else {
            Issue.record("openssl \(arguments.joined(separator: " ")) failed (make test installs openssl): \(run.stderr)")
            throw CancellationError()
        }
    }

    private static let keyOptions = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    private func makeCA(_ name: String, subject: String) throws {
        try openssl(["req", "-x509"] + Self.keyOptions + ["-keyout", key(name), "-out", certificate(name), "-days", "30",
                                                          "-subj", subject])
    }

    private func issue(_ name: String, subject: String, extensions: String? = nil, days: Int = 30) throws {
        try openssl(["req"] + Self.keyOptions + ["-keyout", key(name), "-out", path(name + ".csr"), "-subj", subject])
        try openssl(["x509", "-req", "-in", path(name + ".csr"), "-CA", ca, "-CAkey", key("ca"), "-CAcreateserial",
                     "-out", certificate(name), "-days", "\(days)"] + (extensions.map { ["-extfile", path($0)] } ?? []))
    }
}

extension WaldProcess {
    /// The port of the first TLS listener on the ready line (`tls=127.0.0.1:PORT`).
    var tlsPort: UInt16 {
        let field = readyLine.split(separator: " ").first { $0.hasPrefix("tls=") } ?? ""
        return UInt16(field.split(separator: ":").last ?? "") ?? 0
    }

    var tlsEndpoint: Endpoint { .tcp(host: "127.0.0.1", port: tlsPort) }
    var plainEndpoint: Endpoint { .tcp(host: "127.0.0.1", port: port) }
}
