// What an append accepts as a record: any contiguous bytes that can cross into the writer
// actor. Array slices let the server hand over records parsed from a read buffer without copying.

public protocol RecordPayload: Sendable {
    var count: Int { get }
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: RecordPayload where Element == UInt8 {}
extension ArraySlice: RecordPayload where Element == UInt8 {}
