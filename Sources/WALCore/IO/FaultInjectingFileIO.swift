// A test-only fault point for the real file system: wald wraps its FileIO in this when the
// environment variable WALD_TEST_FAULT_FILE names a control file (documented in README as
// test-only). Before every fdatasync the file is read: `stall` blocks the sync until the
// file says otherwise, `fail` makes it fail with EIO. Nothing else changes behaviour.
#if canImport(Glibc)
import Glibc
#endif

public struct FaultInjectingFileIO: FileIOLayer {
    public let base: any FileIO
    private let controlFile: String

    public init(base: any FileIO, controlFile: String) {
        self.base = base
        self.controlFile = controlFile
    }

    private func currentFault() -> String {
        guard let file = fopen(controlFile, "r") else { return "" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 32)
        guard fgets(&buffer, 32, file) != nil else { return "" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters()
    }

    public func syncData(_ handle: IOHandle, path: String) throws {
        while currentFault() == "stall" { usleep(20_000) }
        if currentFault() == "fail" { throw IOError("fdatasync", path: path, errno: EIO) }
        try base.syncData(handle, path: path)
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(unicodeScalars.filter { !$0.properties.isWhitespace })
    }
}
