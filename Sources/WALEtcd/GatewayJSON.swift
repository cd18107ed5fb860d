// The JSON bodies of etcd's gRPC gateway (`/v3/...`), and their translation to and from the public types.
//
// The gateway's JSON is the protobuf JSON mapping of the gRPC messages, with these rules (observed on
// etcd 3.4.23; see https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/):
// - keys and values are base64 strings;
// - int64 fields come back as JSON strings ("revision":"12"); we send them as strings too, because
//   lease IDs exceed 2^53 and would lose precision as JSON numbers;
// - a field at its zero value is omitted: absent means 0, false or empty;
// - enum fields are names ("type":"DELETE"), and the zero enum (PUT, EQUAL) is omitted too.
// Everything read here is checked: a bad integer or base64 throws EtcdError.malformed naming the field.
import Foundation

// MARK: Integers that etcd writes as strings

/// An int64 as the gateway writes it: a JSON string of decimal digits (a plain JSON number is accepted too).
struct GatewayInt64: Codable, Sendable {
    var value: Int64

    init(_ value: Int64) { self.value = value }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            guard let parsed = Int64(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "not an int64: \"\(text.prefix(40))\"")
            }
            value = parsed
        } else if let number = try? container.decode(Int64.self) {
            value = number
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected an int64 (string or number)")
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(String(value))
    }
}

extension Optional where Wrapped == GatewayInt64 {
    /// The gateway omits zero values.
    var orZero: Int64 { self?.value ?? 0 }
}

// MARK: Common pieces

struct ResponseHeader: Decodable {
    var revision: GatewayInt64?
}

struct WireKeyValue: Decodable {
    var key: String?
    var value: String?
    var create_revision: GatewayInt64?
    var mod_revision: GatewayInt64?
    var version: GatewayInt64?
    var lease: GatewayInt64?

    func decoded() throws -> EtcdKeyValue {
        let keyBytes = try base64Bytes(key ?? "", field: "kv.key")
        guard let keyText = String(validating: keyBytes, as: UTF8.self) else {
            throw EtcdError.malformed("kv.key is not UTF-8")
        }
        return EtcdKeyValue(
            key: keyText,
            value: try base64Bytes(value ?? "", field: "kv.value"),
            createRevision: create_revision.orZero,
            modRevision: mod_revision.orZero,
            version: version.orZero,
            lease: lease.orZero
        )
    }
}

/// The error body of a failed gateway call: `{"error":"...","message":"...","code":5}`; inside a stream,
/// `{"error":{"grpc_code":5,"http_code":404,"message":"...","http_status":"Not Found"}}`.
struct GatewayErrorBody: Decodable {
    var message: String?

    enum CodingKeys: String, CodingKey { case error, message }

    struct StreamError: Decodable { var message: String? }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let message = try? container.decode(String.self, forKey: .message) {
            self.message = message
        } else if let text = try? container.decode(String.self, forKey: .error) {
            self.message = text
        } else if let nested = try? container.decode(StreamError.self, forKey: .error) {
            self.message = nested.message ?? "unknown error"
        } else {
            self.message = nil
        }
    }
}

func base64Bytes(_ text: String, field: String) throws -> [UInt8] {
    if text.isEmpty { return [] }
    guard let data = Data(base64Encoded: text) else {
        throw EtcdError.malformed("\(field) is not base64: \"\(text.prefix(40))\"")
    }
    return [UInt8](data)
}

func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

/// The smallest key greater than every key starting with `prefix` (etcd's `clientv3.GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and what follows it dropped; "\0" (every key) when
/// there is no such byte.
func prefixRangeEnd(_ prefix: String) -> [UInt8] {
    var bytes = Array(prefix.utf8)
    while let last = bytes.last {
        if last < 0xff {
            bytes[bytes.count - 1] = last + 1
            return bytes
        }
        bytes.removeLast()
    }
    return [0]
}

// MARK: Leases

struct LeaseGrantRequest: Encodable { var TTL: GatewayInt64; var ID: GatewayInt64 }
struct LeaseGrantResponse: Decodable { var ID: GatewayInt64?; var TTL: GatewayInt64?; var error: String? }
struct LeaseIDRequest: Encodable { var ID: GatewayInt64 }
struct LeaseTimeToLiveResponse: Decodable { var ID: GatewayInt64?; var TTL: GatewayInt64? }
/// /v3/lease/keepalive is a gRPC stream; the gateway answers one request body with one `{"result":{...}}`.
struct LeaseKeepAliveResponse: Decodable {
    struct Result: Decodable { var ID: GatewayInt64?; var TTL: GatewayInt64? }
    var result: Result?
}

// MARK: KV

struct RangeRequest: Encodable {
    var key: String
    var range_end: String?
}

struct RangeResponse: Decodable {
    var header: ResponseHeader?
    var kvs: [WireKeyValue]?
}

struct PutRequest: Encodable {
    var key: String
    var value: String
    var lease: GatewayInt64?
}

struct HeaderOnlyResponse: Decodable { var header: ResponseHeader? }

struct DeleteRangeRequest: Encodable {
    var key: String
    var range_end: String?
}

// MARK: Transactions

struct WireCompare: Encodable {
    var target: String
    var key: String
    var result = "EQUAL"
    var create_revision: GatewayInt64?
    var mod_revision: GatewayInt64?
    var version: GatewayInt64?
    var value: String?

    init(_ compare: EtcdCompare) {
        enum Operand { case revision(Int64), bytes([UInt8]) }
        let (field, key, relation, operand): (String, String, String, Operand)
        switch compare {
        case .createRevision(let k, let n): (field, key, relation, operand) = ("CREATE", k, "EQUAL", .revision(n))
        case .modRevision(let k, let n): (field, key, relation, operand) = ("MOD", k, "EQUAL", .revision(n))
        case .version(let k, let n): (field, key, relation, operand) = ("VERSION", k, "EQUAL", .revision(n))
        case .value(let k, let v): (field, key, relation, operand) = ("VALUE", k, "EQUAL", .bytes(v))
        case .createRevisionGreater(let k, let n): (field, key, relation, operand) = ("CREATE", k, "GREATER", .revision(n))
        case .modRevisionGreater(let k, let n): (field, key, relation, operand) = ("MOD", k, "GREATER", .revision(n))
        case .versionGreater(let k, let n): (field, key, relation, operand) = ("VERSION", k, "GREATER", .revision(n))
        case .valueGreater(let k, let v): (field, key, relation, operand) = ("VALUE", k, "GREATER", .bytes(v))
        case .createRevisionLess(let k, let n): (field, key, relation, operand) = ("CREATE", k, "LESS", .revision(n))
        case .modRevisionLess(let k, let n): (field, key, relation, operand) = ("MOD", k, "LESS", .revision(n))
        case .versionLess(let k, let n): (field, key, relation, operand) = ("VERSION", k, "LESS", .revision(n))
        case .valueLess(let k, let v): (field, key, relation, operand) = ("VALUE", k, "LESS", .bytes(v))
        }
        target = field
        self.key = base64(key)
        result = relation
        switch (field, operand) {
        case ("CREATE", .revision(let n)): create_revision = GatewayInt64(n)
        case ("MOD", .revision(let n)): mod_revision = GatewayInt64(n)
        case ("VERSION", .revision(let n)): version = GatewayInt64(n)
        case (_, .bytes(let v)): value = base64(v)
        default: preconditionFailure("unreachable: \(field) with a revision")
        }
    }
}

struct WireOp: Encodable {
    var request_put: PutRequest?
    var request_delete_range: DeleteRangeRequest?
    var request_range: RangeRequest?

    init(_ op: EtcdOp) {
        switch op {
        case .put(let key, let value, let lease):
            request_put = PutRequest(key: base64(key), value: base64(value), lease: lease == 0 ? nil : GatewayInt64(lease))
        case .delete(let key):
            request_delete_range = DeleteRangeRequest(key: base64(key))
        case .get(let key):
            request_range = RangeRequest(key: base64(key))
        case .getPrefix(let prefix):
            request_range = RangeRequest(key: base64(prefix), range_end: base64(prefixRangeEnd(prefix)))
        }
    }
}

struct TxnRequest: Encodable {
    var compare: [WireCompare]
    var success: [WireOp]
    var failure: [WireOp]
}

struct TxnResponse: Decodable {
    struct Response: Decodable {
        var response_range: RangeResponse?
    }
    var header: ResponseHeader?
    var succeeded: Bool?
    var responses: [Response]?
}

// MARK: Watches

struct WatchCreateRequest: Encodable {
    struct Create: Encodable {
        var key: String
        var range_end: String?
        var start_revision: GatewayInt64?
        var progress_notify: Bool
    }
    var create_request: Create
}

/// One message of a watch stream: `{"result":{...}}`, or `{"error":{...}}` when the gateway's stream fails.
struct WatchStreamMessage: Decodable {
    struct Result: Decodable {
        struct Event: Decodable {
            var type: String?
            var kv: WireKeyValue?
        }
        var header: ResponseHeader?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: GatewayInt64?
        var cancel_reason: String?
        var events: [Event]?
    }
    struct StreamError: Decodable { var message: String? }
    var result: Result?
    var error: StreamError?
}
