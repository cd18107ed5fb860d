// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every record
// and segment header. Uses the SSE4.2 instruction when the CPU has it and a
// slicing-by-8 table otherwise; both are tested against the same known vectors.
import CCRC32C

public enum CRC32C {
    /// Whether `checksum` uses the hardware instruction on this CPU.
    public static let hardwareAvailable: Bool = ccrc32c_hardware_available() == 1

    /// The CRC32C of `bytes` (initial value ~0, final inversion), continuing from `crc`
    /// when given, so `checksum(b, continuing: checksum(a)) == checksum(a + b)`.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        ~update(~crc, bytes)
    }

    public static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: crc) }
    }

    /// Raw register update (no inversions).
    @usableFromInline
    static func update(_ register: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard bytes.count > 0 else { return register }
        if hardwareAvailable {
            return ccrc32c_hardware_update(register, bytes.baseAddress, bytes.count)
        }
        return software(register, bytes)
    }

    /// The portable implementation, exposed so tests can check it on hardware machines.
    public static func softwareChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        ~software(~crc, bytes)
    }

    static func software(_ register: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = register
        var index = 0
        let count = bytes.count
        let t = table
        while count - index >= 8 {
            let low = UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24
            let one = crc ^ low
            crc = t[7 * 256 + Int(one & 0xFF)] ^ t[6 * 256 + Int((one >> 8) & 0xFF)]
                ^ t[5 * 256 + Int((one >> 16) & 0xFF)] ^ t[4 * 256 + Int(one >> 24)]
                ^ t[3 * 256 + Int(bytes[index + 4])] ^ t[2 * 256 + Int(bytes[index + 5])]
                ^ t[1 * 256 + Int(bytes[index + 6])] ^ t[Int(bytes[index + 7])]
            index += 8
        }
        while index < count {
            crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
            index += 1
        }
        return crc
    }

    /// Slicing-by-8 tables: table[k*256 + b] is the CRC of byte b followed by k zero bytes.
    static let table: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for b in 0..<256 {
            var crc = UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            t[b] = crc
        }
        for k in 1..<8 {
            for b in 0..<256 {
                let previous = t[(k - 1) * 256 + b]
                t[k * 256 + b] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()
}
