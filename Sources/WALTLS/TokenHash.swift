// Salted token hashes for the `users:` list: PBKDF2-HMAC-SHA256 from OpenSSL with a random
// 16-byte salt, written `pbkdf2-sha256$ITERATIONS$SALT$HASH` (standard base64), so the format
// says how to check it. The token itself is never stored or logged; checks compare in
// constant time.
import COpenSSL

public struct TokenHash: Sendable, Equatable, CustomStringConvertible {
    public let iterations: Int
    public let salt: [UInt8]
    public let hash: [UInt8]

    /// What `walctl hash-token` uses: enough to make offline guessing slow, fast enough that
    /// an AUTH costs a few milliseconds on the loop.
    public static let defaultIterations = 10_000
    static let scheme = "pbkdf2-sha256"

    /// Hashes `token` with a fresh random salt.
    public init(hashing token: [UInt8], iterations: Int = TokenHash.defaultIterations) throws(TLSError) {
        var salt = [UInt8](repeating: 0, count: 16)
        guard RAND_bytes(&salt, Int32(salt.count)) == 1 else { throw .openSSL("cannot get random bytes for a salt") }
        self.iterations = iterations
        self.salt = salt
        hash = try Self.derive(token, salt: salt, iterations: iterations)
    }

    /// Parses `pbkdf2-sha256$ITERATIONS$SALT$HASH`; nil when it is not that form (1 to 10 000 000
    /// iterations, a salt of 8 to 64 bytes, a 32-byte hash).
    public init?(parsing text: String) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == Self.scheme, let iterations = Int(parts[1]),
              (1...10_000_000).contains(iterations),
              let salt = Self.base64Decode(String(parts[2])), (8...64).contains(salt.count),
              let hash = Self.base64Decode(String(parts[3])), hash.count == 32 else { return nil }
        self.iterations = iterations
        self.salt = salt
        self.hash = hash
    }

    public var description: String {
        "\(Self.scheme)$\(iterations)$\(Self.base64Encode(salt))$\(Self.base64Encode(hash))"
    }

    /// Whether `token` hashes to this hash (constant time in the comparison).
    public func matches(_ token: UnsafeRawBufferPointer) -> Bool {
        guard let candidate = try? Self.derive(Array(token), salt: salt, iterations: iterations) else { return false }
        return candidate.withUnsafeBytes { a in hash.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, 32) == 0 } }
    }

    private static func derive(_ token: [UInt8], salt: [UInt8], iterations: Int) throws(TLSError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let ok = token.withUnsafeBufferPointer { tokenBytes in
            tokenBytes.withMemoryRebound(to: CChar.self) { chars in
                PKCS5_PBKDF2_HMAC(chars.baseAddress, Int32(chars.count), salt, Int32(salt.count), Int32(iterations),
                                  EVP_sha256(), Int32(out.count), &out)
            }
        }
        guard ok == 1 else { throw .openSSL("PBKDF2 failed") }
        return out
    }

    static func base64Encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: (bytes.count + 2) / 3 * 4 + 1)
        let n = EVP_EncodeBlock(&out, bytes, Int32(bytes.count))
        return String(decoding: out.prefix(Int(n)), as: UTF8.self)
    }

    static func base64Decode(_ text: String) -> [UInt8]? {
        let input = Array(text.utf8)
        guard !input.isEmpty, input.count % 4 == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: input.count / 4 * 3)
        let n = EVP_DecodeBlock(&out, input, Int32(input.count))
        guard n >= 0 else { return nil }
        // EVP_DecodeBlock counts the padding's zero bytes: drop them.
        let padding = input.reversed().prefix(while: { $0 == UInt8(ascii: "=") }).count
        return Array(out.prefix(Int(n) - padding))
    }
}
