// The value forms shared by options: byte sizes, durations, HOST:PORT addresses, log levels.
import Logging
import Testing
import WALSystem

@testable import WALConfig

@Suite struct ByteSizeTests {
    @Test(arguments: [
        ("0", 0), ("1048576", 1_048_576), ("64KiB", 64 << 10), ("64K", 64 << 10), ("64k", 64 << 10),
        ("64MiB", 64 << 20), ("64M", 64 << 20), ("64 MiB", 64 << 20), ("1GiB", 1 << 30), ("2G", 2 << 30),
    ])
    func acceptsIntegersAndBinaryUnits(text: String, bytes: Int) throws {
        #expect(try ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "MiB", "-1", "1.5MiB", "64MB", "64 parsecs", "0x10", "99999999999999999999", "9999999999999GiB"])
    func rejectsOtherForms(text: String) {
        #expect(throws: ValueError.self) { try ByteSize.parse(text) }
    }
}

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("0", Duration.zero), ("500us", .microseconds(500)), ("500µs", .microseconds(500)), ("10ms", .milliseconds(10)),
        ("1s", .seconds(1)), ("2m", .seconds(120)), ("1h", .seconds(3600)), ("250ns", .nanoseconds(250)),
    ])
    func acceptsZeroAndUnits(text: String, duration: Duration) throws {
        #expect(try DurationText.parse(text) == duration)
    }

    @Test(arguments: ["", "10", "10 parsecs", "-1s", "1.5s", "ms", "10 ms", "1d"])
    func rejectsOtherForms(text: String) {
        #expect(throws: ValueError("expected a duration like 10ms, 1s or 0")) { try DurationText.parse(text) }
    }

    @Test(arguments: ["8761h", "525601m", "31536001s", "31536000001ms", "9223372036854775807h", "106751991167h",
                      "9223372036854775807s", "153722867280912931m", "99999999999999999999s", "9223372036854775807ns"])
    func aDurationBeyondAYearOrAnIntegerIsTooLargeNotATrap(text: String) {
        #expect(throws: ValueError("expected a duration like 10ms, 1s or 0, at most 8760h (a year); this one is too large")) {
            try DurationText.parse(text)
        }
    }

    @Test(arguments: [("8760h", Duration.seconds(31_536_000)), ("525600m", .seconds(31_536_000)),
                      ("31536000s", .seconds(31_536_000)), ("31536000000000000ns", .seconds(31_536_000))])
    func aDurationUpToAYearIsAccepted(text: String, duration: Duration) throws {
        #expect(try DurationText.parse(text) == duration)
    }

    @Test(arguments: ["0", "500us", "10ms", "1s", "2m", "1h", "250ns", "1500ms"])
    func formatRoundTrips(text: String) throws {
        #expect(DurationText.format(try DurationText.parse(text)) == text)
    }
}

/// What `Endpoint.parseTCP` says before the part it names.
private let expectedAddressForm = "expected HOST:PORT like 127.0.0.1:7070, [::1]:7070 or localhost:7070"

@Suite struct AddressValueTests {
    @Test func parsesIPv4() throws {
        #expect(try AddressValue.parseRemote("127.0.0.1:7070") == Endpoint.tcp(host: "127.0.0.1", port: 7070))
    }

    @Test func parsesHostname() throws {
        #expect(try AddressValue.parseRemote("localhost:7070") == Endpoint.tcp(host: "localhost", port: 7070))
        #expect(try AddressValue.parseRemote("wal-1.example.com:1") == Endpoint.tcp(host: "wal-1.example.com", port: 1))
    }

    @Test func parsesIPv6WithoutBrackets() throws {
        let loopback = try AddressValue.parseRemote("[::1]:7070")
        #expect(loopback == Endpoint.tcp(host: "::1", port: 7070))
        #expect(loopback.description == "[::1]:7070")
        #expect(try AddressValue.parseRemote("[::]:65535") == Endpoint.tcp(host: "::", port: 65535))
        #expect(try AddressValue.parseRemote("[2001:db8::7]:80").host == "2001:db8::7")
        #expect(try AddressValue.parseRemote("[fe80::1%eth0]:7070").host == "fe80::1%eth0")
        #expect(try AddressValue.parseRemote("[::ffff:10.0.0.1]:7070").description == "[::ffff:10.0.0.1]:7070")
    }

    @Test(arguments: [
        "", "7070", ":7070", "localhost", "localhost:", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:70a", "::1:7070", "[::1]", "[::1]7070", "[::1:7070", "[zz::1]:7070", "[]:7070",
        "300.1.1.1:7070", "1.2.3:7070", "bad_host:7070", "-bad:7070", "a..b:7070", "[127.0.0.1]:7070",
    ])
    func rejectsMalformedAddresses(text: String) {
        #expect(throws: ValueError.self) { try AddressValue.parseRemote(text) }
    }

    @Test func portZeroMeansAnyFreePortOnlyWhereWaldBinds() throws {
        #expect(try AddressValue.parseBindable("127.0.0.1:0") == Endpoint.tcp(host: "127.0.0.1", port: 0))
        #expect(throws: ValueError.self) { try AddressValue.parseRemote("127.0.0.1:0") }
        #expect(throws: ValueError.self) { try AddressValue.parseBindable("127.0.0.1:65536") }
    }

    @Test func portErrorSaysTheRange() {
        #expect(throws: ValueError(expectedAddressForm + " with a port from 1 to 65535")) {
            try AddressValue.parseRemote("127.0.0.1:99999")
        }
    }
}

@Suite struct LogLevelTextTests {
    @Test func acceptsEveryLevelInAnyCase() throws {
        for level in Logger.Level.allCases {
            #expect(try LogLevelText.parse(level.rawValue) == level)
            #expect(try LogLevelText.parse(level.rawValue.uppercased()) == level)
        }
    }

    @Test func rejectsUnknownLevel() {
        #expect(throws: ValueError("expected one of trace, debug, info, notice, warning, error, critical")) {
            try LogLevelText.parse("verbose")
        }
    }
}
