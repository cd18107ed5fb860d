// The public values of the etcd client: key-values, transaction compares and operations, watch events, errors.
// Reference: https://etcd.io/docs/v3.4/dev-guide/api_reference_v3/ (the gRPC messages the JSON gateway mirrors).

/// One key as etcd stores it (`mvccpb.KeyValue`).
public struct EtcdKeyValue: Sendable, Equatable {
    /// The key, as UTF-8.
    public var key: String
    /// The value's bytes (empty for a delete event).
    public var value: [UInt8]
    /// The revision of the last creation of this key (0 in a delete event).
    public var createRevision: Int64
    /// The revision of the last change of this key (for a delete event: the revision of the delete).
    public var modRevision: Int64
    /// How many times the key was written since its creation (1 after the create; 0 after a delete).
    public var version: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(
        key: String, value: [UInt8], createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0,
        lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// A condition of a transaction (`etcdserverpb.Compare`): the key's field equals (EQUAL), is greater than
/// (`…Greater`, GREATER) or less than (`…Less`, LESS) the given one. etcd evaluates a missing key as create_revision 0,
/// mod_revision 0, version 0, so `.createRevision(key: k, equals: 0)` means "k does not exist" (the usual
/// guard for taking a key). Values compare as bytes, lexicographically (zero-pad numbers to compare them);
/// a value compare on a missing key is false whatever the relation.
public enum EtcdCompare: Sendable {
    case createRevision(key: String, equals: Int64)
    case modRevision(key: String, equals: Int64)
    case value(key: String, equals: [UInt8])
    case version(key: String, equals: Int64)
    case createRevisionGreater(key: String, than: Int64)
    case modRevisionGreater(key: String, than: Int64)
    case valueGreater(key: String, than: [UInt8])
    case versionGreater(key: String, than: Int64)
    case createRevisionLess(key: String, than: Int64)
    case modRevisionLess(key: String, than: Int64)
    case valueLess(key: String, than: [UInt8])
    case versionLess(key: String, than: Int64)
}

/// One operation of a transaction branch (`etcdserverpb.RequestOp`).
public enum EtcdOp: Sendable {
    /// Writes `value` under `key`, attached to `lease` (0 = no lease). etcd fails the whole transaction
    /// (HTTP 404, "requested lease not found") if the lease does not exist.
    case put(key: String, value: [UInt8], lease: Int64 = 0)
    /// Deletes `key` (nothing happens if it is absent).
    case delete(key: String)
    /// Reads `key`; its result is one entry of ``EtcdTxnResult/ranges``.
    case get(key: String)
    /// Reads every key starting with `prefix`; its result is one entry of ``EtcdTxnResult/ranges``.
    case getPrefix(prefix: String)
}

/// What a transaction did.
public struct EtcdTxnResult: Sendable {
    /// true when every compare held and the success branch ran; false when the failure branch ran.
    public var succeeded: Bool
    /// The store's revision after the transaction (unchanged if the branch that ran wrote nothing).
    public var revision: Int64
    /// One array per `.get` / `.getPrefix` of the branch that ran, in the order of the ops.
    public var ranges: [[EtcdKeyValue]]

    public init(succeeded: Bool, revision: Int64, ranges: [[EtcdKeyValue]]) {
        self.succeeded = succeeded
        self.revision = revision
        self.ranges = ranges
    }
}

/// One change seen by ``EtcdClient/watch(key:prefix:startRevision:)``.
public enum EtcdWatchEvent: Sendable, Equatable {
    /// The key was created or overwritten; the key-value is its new state.
    case put(EtcdKeyValue)
    /// The key was deleted, or its lease expired or was revoked. etcd sends only the key and the
    /// delete's revision (``EtcdKeyValue/modRevision``); the other fields are 0 and the value empty.
    case delete(EtcdKeyValue)
}

/// Why an etcd call failed.
public enum EtcdError: Error, CustomStringConvertible, Equatable {
    /// No endpoint could be reached: every one refused or failed the connection (or, for a read, lost it).
    /// `lastError` is the last transport error, with its endpoint.
    case unreachable(endpoints: [String], lastError: String)
    /// etcd answered with an error: the HTTP status and etcd's message (e.g. 400 for a bad request).
    case status(httpCode: Int, message: String)
    /// The lease (its ID) does not exist: never granted, expired, or revoked.
    case leaseNotFound(Int64)
    /// A request did not complete within the client's request timeout; the text names the request.
    /// A write that timed out may or may not have been applied.
    case timeout(String)
    /// etcd's answer could not be understood (bad JSON, a missing field, an integer or base64 that
    /// does not parse); the text says which.
    case malformed(String)
    /// A watch's start revision has been compacted away; the payload is etcd's compact revision.
    /// Re-read the current state and watch again from its revision + 1.
    case compacted(Int64)
    /// An endpoint is not an `http://HOST:PORT` URL.
    case invalidEndpoint(String)

    public var description: String {
        switch self {
        case .unreachable(let endpoints, let lastError):
            return "etcd unreachable at \(endpoints.joined(separator: ", ")): \(lastError)"
        case .status(let httpCode, let message):
            return "etcd answered HTTP \(httpCode): \(message)"
        case .leaseNotFound(let id):
            return "etcd lease \(id) not found (expired, revoked or never granted)"
        case .timeout(let what):
            return "etcd request timed out: \(what)"
        case .malformed(let what):
            return "malformed answer from etcd: \(what)"
        case .compacted(let revision):
            return "etcd compacted the watched history up to revision \(revision): re-read and watch again"
        case .invalidEndpoint(let endpoint):
            return "invalid etcd endpoint \"\(endpoint)\": expected http://HOST:PORT"
        }
    }
}
