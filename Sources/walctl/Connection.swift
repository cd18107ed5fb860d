// Options shared by the network commands: where the server is and how to authenticate.
import ArgumentParser
import WALClient

struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "Server address HOST:PORT (IPv6 as [::1]:7070).")
    var server: String = "127.0.0.1:7070"

    @Option(name: .long, help: "Connect to a unix socket instead of --server.")
    var unix: String?

    @Option(name: .long, help: "Auth token (when the server requires one).")
    var token: String?

    var endpoint: Endpoint {
        get throws {
            if let unix { return .unix(path: unix) }
            guard let endpoint = Endpoint(parsing: server) else {
                throw ValidationError("--server must be HOST:PORT, got '\(server)'")
            }
            return endpoint
        }
    }

    func connect() async throws -> WALClient {
        try await WALClient.connect(try endpoint, token: token)
    }
}
