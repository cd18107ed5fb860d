// `walctl hash-token`: reads a token on standard input and prints its salted hash for the
// `users:` list of wald's config file. The token is read from stdin, never from an argument, so
// it does not show in `ps` or a shell history, and it is never printed.
import ArgumentParser
import WALTLS
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import WALSystem

struct HashToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-token",
        abstract: "Read a token on stdin, print its salted hash (for users: in wald's config).",
        discussion: """
            Prints pbkdf2-sha256$ITERATIONS$SALT$HASH (PBKDF2-HMAC-SHA256, a random 16-byte salt). \
            One trailing newline is dropped; the token may hold any bytes above space. Example: \
            head -c 32 /dev/urandom | base64 | tee token.txt | walctl hash-token
            """)

    @Option(help: ArgumentHelp("PBKDF2 iterations (each AUTH costs this many on the server). Default 10000.", valueName: "count"))
    var iterations: Int = TokenHash.defaultIterations

    func validate() throws {
        guard (1_000...10_000_000).contains(iterations) else {
            throw ValidationError("--iterations must be from 1000 to 10000000")
        }
    }

    func run() throws {
        var input: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n: Int
            do {
                n = try chunk.withUnsafeMutableBytes { try Descriptors.read(0, into: $0, what: "standard input") }
            } catch {
                fail("cannot read the token from stdin: \(SystemError.describe(errno: (error as? SystemError)?.errno ?? EIO))")
            }
            if n == 0 { break }
            input += chunk[0..<n]
            if input.count > 4096 { fail("the token on stdin is longer than 4096 bytes") }
        }
        if input.last == UInt8(ascii: "\n") { input.removeLast() }
        if input.last == UInt8(ascii: "\r") { input.removeLast() }
        guard !input.isEmpty else { fail("no token on stdin: pipe the token in, e.g. walctl hash-token < token.txt") }
        // The same rule as auth_token: AUTH sends it on a text line.
        guard input.allSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
            fail("the token may not hold spaces or control characters")
        }
        do {
            StandardStreams.printLine(try TokenHash(hashing: input, iterations: iterations).description)
        } catch {
            fail("\(error)")
        }
    }
}
