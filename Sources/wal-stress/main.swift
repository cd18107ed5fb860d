// Crash-test child: appends durable records forever and prints one line per acknowledged
// append, so a parent can SIGKILL it at any moment and check that every acknowledged record
// survived with exactly the bytes it had. Payloads are a pure function of (seed, LSN, size).
//
//   wal-stress DIR --seed S [--batch N] [--size BYTES] [--segment-bytes B] [--exit-on-stdin-eof]
//       prints "ack <firstLSN> <count>" after each durable append (flushed at once)
//   wal-stress DIR --seed S [--size BYTES] --verify
//       checks every record; prints "ok <firstLSN> <lastLSN>", or an error and exits 1
import Foundation
import WALCore

/// SplitMix64: tiny, fast and fully determined by its seed.
struct StressRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The payload of record `lsn`: 0...maxSize bytes, all derived from seed and LSN.
/// Tests/WALCoreTests/CrashTests.swift has an identical copy; keep them in step.
func stressPayload(seed: UInt64, lsn: UInt64, maxSize: Int) -> [UInt8] {
    var random = StressRandom(state: seed ^ (lsn &* 0xD6E8_FEB8_6659_FD93))
    let size = Int(random.next() % UInt64(maxSize + 1))
    var bytes = [UInt8](repeating: 0, count: size)
    var index = 0
    while index < size {
        var word = random.next()
        for _ in 0..<min(8, size - index) {
            bytes[index] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            index += 1
        }
    }
    return bytes
}

struct StressArguments {
    var directory = ""
    var seed: UInt64 = 0
    var batch = 1
    var size = 200
    var segmentBytes: Int?
    var verify = false
    var exitOnStdinEOF = false

    static func parse(_ arguments: [String]) -> StressArguments {
        var result = StressArguments()
        var seedGiven = false
        var rest = arguments[...]
        func value(_ flag: String) -> String {
            guard let value = rest.popFirst() else { usage("\(flag) needs a value") }
            return value
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--seed": result.seed = number(value(argument), argument) { (_: UInt64) in true }; seedGiven = true
            case "--batch": result.batch = number(value(argument), argument) { $0 > 0 }
            case "--size": result.size = number(value(argument), argument) { $0 >= 0 }
            case "--segment-bytes": result.segmentBytes = number(value(argument), argument) { $0 > 0 }
            case "--verify": result.verify = true
            case "--exit-on-stdin-eof": result.exitOnStdinEOF = true
            case _ where argument.hasPrefix("-"): usage("unknown option \(argument)")
            default:
                guard result.directory.isEmpty else { usage("more than one directory") }
                result.directory = argument
            }
        }
        guard !result.directory.isEmpty, seedGiven else { usage("DIR and --seed are required") }
        return result
    }
}

func number<T: FixedWidthInteger>(_ text: String, _ flag: String, valid: (T) -> Bool) -> T {
    guard let value = T(text), valid(value) else { usage("bad value \(text) for \(flag)") }
    return value
}

func usage(_ problem: String) -> Never {
    FileHandle.standardError.write(Data("""
        wal-stress: \(problem)
        usage: wal-stress DIR --seed S [--batch N] [--size BYTES] [--segment-bytes B] [--exit-on-stdin-eof]
               wal-stress DIR --seed S [--size BYTES] --verify

        """.utf8))
    exit(2)
}

/// Writes one whole line to stdout with a single write(2): nothing sits in a buffer when killed.
func emit(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 {
            if errno == EINTR { continue }
            exit(1)
        }
        offset += n
    }
}

/// Exits as soon as stdin reaches EOF: a parent that dies (even by SIGKILL) closes the pipe,
/// so the child never outlives it.
func exitWhenStdinCloses() {
    Thread.detachNewThread {
        var byte: UInt8 = 0
        while true {
            let n = read(0, &byte, 1)
            if n == 0 || (n < 0 && errno != EINTR) { _exit(3) }
        }
    }
}

func options(_ arguments: StressArguments) -> WALOptions {
    var options = WALOptions(directory: arguments.directory)
    if let segmentBytes = arguments.segmentBytes { options.maxSegmentBytes = segmentBytes }
    options.maxRecordBytes = max(arguments.size, 1)
    options.logger.logLevel = .warning
    return options
}

func appendForever(_ arguments: StressArguments) async throws -> Never {
    if arguments.exitOnStdinEOF { exitWhenStdinCloses() }
    let wal = try await WAL.open(options(arguments))
    var next = wal.lastLSN + 1
    while true {
        let batch = (0..<arguments.batch).map {
            stressPayload(seed: arguments.seed, lsn: next + UInt64($0), maxSize: arguments.size)
        }
        let first = try await wal.append(contentsOf: batch, durability: .durable)
        guard first == next else {
            FileHandle.standardError.write(Data("wal-stress: expected LSN \(next), got \(first)\n".utf8))
            exit(1)
        }
        emit("ack \(first) \(batch.count)")
        next += UInt64(batch.count)
    }
}

func verify(_ arguments: StressArguments) async throws -> Int32 {
    let wal = try await WAL.open(options(arguments))
    let reader = try wal.reader(from: 0)
    var first: LSN?
    var last: LSN = 0
    var mismatch: LSN?
    try reader.read { lsn, payload in
        first = first ?? lsn
        last = lsn
        let expected = stressPayload(seed: arguments.seed, lsn: lsn, maxSize: arguments.size)
        guard expected.withUnsafeBytes({ $0.elementsEqual(payload) }) else {
            mismatch = lsn
            return false
        }
        return true
    }
    try await wal.close()
    if let mismatch {
        FileHandle.standardError.write(Data("wal-stress: record \(mismatch) does not hold the payload for seed \(arguments.seed)\n".utf8))
        return 1
    }
    emit("ok \(first ?? 0) \(last)")
    return 0
}

func main() async -> Int32 {
    let arguments = StressArguments.parse(Array(CommandLine.arguments.dropFirst()))
    do {
        if arguments.verify { return try await verify(arguments) }
        try await appendForever(arguments)
    } catch {
        FileHandle.standardError.write(Data("wal-stress: \(error)\n".utf8))
        return 1
    }
}

exit(await main())
