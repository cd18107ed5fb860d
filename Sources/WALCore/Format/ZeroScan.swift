// Finding non-zero bytes in large, mostly zero-filled regions (the preallocated tail of a
// segment) with memcmp against a zero page, so recovery stays fast even in debug builds.
#if canImport(Glibc)
import Glibc
#endif

enum ZeroScan {
    private static let pageSize = 4096
    // Never written after initialisation, so sharing it across threads is safe.
    nonisolated(unsafe) private static let zeroPage = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096).initializeMemory(as: UInt8.self, repeating: 0, count: 4096))

    /// Index of the first non-zero byte, or nil when all are zero.
    static func firstNonZero(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var start = 0
        while start < bytes.count {
            let length = min(pageSize, bytes.count - start)
            if memcmp(bytes.baseAddress! + start, zeroPage, length) != 0 {
                for index in start..<(start + length) where bytes[index] != 0 { return index }
            }
            start += length
        }
        return nil
    }

    /// Index of the last non-zero byte, or nil when all are zero.
    static func lastNonZero(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var end = bytes.count
        while end > 0 {
            let length = min(pageSize, end)
            if memcmp(bytes.baseAddress! + end - length, zeroPage, length) != 0 {
                for index in stride(from: end - 1, through: end - length, by: -1) where bytes[index] != 0 { return index }
            }
            end -= length
        }
        return nil
    }
}
