// wald-fuzz: the libFuzzer targets of `make fuzz`, one binary with the target named first:
//
//   wald-fuzz <binary|text|resp|recovery|session> [libFuzzer flags] [corpus dirs]
//
// Built with `-sanitize=fuzzer,address` (see the Makefile) it runs libFuzzer's driver on the
// chosen target. In an ordinary build (no libFuzzer linked in) it runs each named file, or
// every file of each named directory, through the target once: a corpus replay.
//
// libFuzzer is started through `LLVMFuzzerRunDriver`, looked up with dlsym, because
// SwiftPM points `main` at this module's entry point and libFuzzer's own `main` never runs.
#if canImport(Glibc)
import Glibc
#endif

/// Every target takes the input bytes and traps (through `invariant`) when a property fails.
let targets: [String: ([UInt8]) -> Void] = [
    "binary": BinaryProtocolTarget.run,
    "text": TextProtocolTarget.run,
    "resp": RESPTarget.run,
    "recovery": RecoveryTarget.run,
    "session": SessionTarget.run,
]

nonisolated(unsafe) var selectedTarget: ([UInt8]) -> Void = { _ in }

/// libFuzzer's whole-archive runtime references this symbol, so it must exist in every build.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selectedTarget(bytes)
    return 0
}

typealias FuzzerCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
typealias FuzzerDriver = @convention(c) (
    UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, FuzzerCallback
) -> CInt

@MainActor func usage() -> Never {
    printError("usage: wald-fuzz <\(targets.keys.sorted().joined(separator: "|"))> [libFuzzer flags | inputs...]")
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 2, let target = targets[arguments[1]] else { usage() }
selectedTarget = target

if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "LLVMFuzzerRunDriver") {
    // Hand libFuzzer argv without the target name (it parses every other argument itself).
    let driver = unsafeBitCast(symbol, to: FuzzerDriver.self)
    var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) } + [nil]
    var argc = CInt(argv.count - 1)
    let status = argv.withUnsafeMutableBufferPointer { buffer -> CInt in
        var base: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
        return driver(&argc, &base, fuzzOneInput)
    }
    exit(status)
}

// Replay mode: no libFuzzer in this build.
var inputs: [String] = []
for path in arguments.dropFirst(2) {
    var info = stat()
    guard stat(path, &info) == 0 else { printError("wald-fuzz: cannot stat \(path)"); exit(1) }
    if info.st_mode & S_IFMT == S_IFDIR, let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { inputs.append(path + "/" + name) }
        }
        closedir(dir)
    } else {
        inputs.append(path)
    }
}
for path in inputs.sorted() {
    guard let file = fopen(path, "rb") else { printError("wald-fuzz: cannot open \(path)"); exit(1) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    fclose(file)
    target(bytes)
}
print("wald-fuzz \(arguments[1]): \(inputs.count) inputs replayed, no failures")
