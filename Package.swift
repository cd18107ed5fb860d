// swift-tools-version: 6.1
// wald: a write-ahead log served over TCP. See README.md for the module map.
import PackageDescription

let package = Package(
    name: "wald",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "WALCore", targets: ["WALCore"]),
        .executable(name: "walctl", targets: ["walctl"]),
        .executable(name: "wald", targets: ["wald"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // WALEtcd: HTTP/1.1 to etcd's JSON gateway (issue 15). swift-nio for the client's own event loop group.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // Hardware CRC32C (SSE4.2) with runtime detection; the portable fallback lives in WALCore.
        .target(name: "CCRC32C"),
        // The pthread-backed Mutex that `make test-tsan` swaps in, because TSan cannot see the stdlib one.
        .target(name: "WALSync"),
        // The one syscall layer: SystemError (errno and the C function's name), the EINTR rule,
        // sockets (server and client), descriptors and directories, and the one address type.
        .target(name: "WALSystem"),
        .target(
            name: "WALCore",
            dependencies: [
                "CCRC32C", "WALSync", "WALSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // OpenSSL (libssl, libcrypto), from Debian's libssl-dev: TLS and the token hashes.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // The one place OpenSSL is configured and called: TLS contexts and sessions driven on
        // their owner's non-blocking sockets, and salted token hashes. Server and client share it.
        .target(name: "WALTLS", dependencies: ["COpenSSL"]),
        // Wire codec shared by server, client and CLI: bytes in, messages out (no I/O).
        .target(name: "WALProtocol"),
        // Listeners and connections on Dispatch sources, and replication (Replication/: the role and write
        // lease, the follower's replicator and its stream in, follow streams out).
        .target(
            name: "WALServer",
            dependencies: [
                "WALCore", "WALProtocol", "WALSync", "WALSystem", "WALTLS", "WALClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // Async Swift client for the binary protocol (walctl and the end-to-end tests use it).
        .target(name: "WALClient", dependencies: ["WALProtocol", "WALSync", "WALSystem", "WALTLS"]),
        // libsystemd (notify, watchdog, socket activation), from Debian's libsystemd-dev.
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // The daemon.
        .executableTarget(
            name: "wald",
            dependencies: [
                "WALCore", "WALServer", "WALClient", "WALConfig", "CSystemd", "WALSync", "WALSystem", "WALEtcd", "WALTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "walctl",
            dependencies: [
                "WALCore", "WALClient", "WALEtcd", "WALSystem", "WALTLS",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "wal-example-basic", dependencies: ["WALCore"]),
        .executableTarget(name: "wal-example-kvstore", dependencies: ["WALCore"]),
        .executableTarget(name: "wal-bench", dependencies: ["WALCore", "WALSync"]),
        // `make bench-compare`: wald vs Redis AOF and a raw fdatasync loop, side by side.
        .executableTarget(name: "wal-bench-compare", dependencies: ["WALClient"]),
        // `make bench-failover`: leader kills under load against etcd and three walds.
        .executableTarget(name: "wal-bench-failover", dependencies: ["WALClient", "WALTestSupport"]),
        // Test helper: appends durable records and prints each acknowledged LSN (crash tests SIGKILL it).
        .executableTarget(name: "wal-stress", dependencies: ["WALCore"]),
        // `make fuzz`: the libFuzzer targets (binary, text, recovery, session) in one binary; in an
        // ordinary build it replays corpus files instead (see Sources/wald-fuzz/main.swift).
        .executableTarget(
            name: "wald-fuzz",
            dependencies: ["WALCore", "WALProtocol", "WALServer", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "WALCoreTests", dependencies: ["WALCore", "WALSync"]),
        // The wire codec on its own (pure: bytes in, messages out).
        .testTarget(name: "WALProtocolTests", dependencies: ["WALProtocol"]),
        // The server in process, over socketpairs, where a socket's buffers must be controlled.
        .testTarget(
            name: "WALServerTests",
            dependencies: ["WALServer", "WALCore", "WALProtocol", "WALSync", .product(name: "Logging", package: "swift-log")]
        ),
        // Start the real wald binary and speak the documented protocol to it.
        .testTarget(name: "WaldEndToEndTests", dependencies: ["WALClient", "WALSync", "WALTestSupport"]),
        // The daemon's configuration: flags > WALD_* environment > YAML file > defaults.
        .target(
            name: "WALConfig",
            dependencies: [
                "WALCore", "WALSync", "WALSystem", "WALTLS",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                // Only to list the config file's top-level keys (swift-configuration parses the values).
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(name: "WALConfigTests", dependencies: ["WALConfig", "WALSystem"]),
        // etcd v3 client over etcd's JSON gateway (/v3/...): leases, KV, transactions, watches. No consensus here.
        .target(
            name: "WALEtcd",
            dependencies: [
                "WALSync",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // What tests share: starting children (posix_spawn), a real one-member etcd, a wald cluster under
        // automatic failover and its ledger (any test target, and wal-bench-failover, may depend on it).
        .target(name: "WALTestSupport", dependencies: ["WALClient", "WALSync"], path: "Tests/WALTestSupport"),
        // WALEtcd against a real etcd started by WALTestSupport.
        .testTarget(
            name: "WALEtcdTests",
            dependencies: [
                "WALEtcd", "WALTestSupport", "WALSync",
                // Only to read etcd's /metrics (open watchers) through the client's own HTTPClient.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Automatic failover end to end: a real etcd and three real walds, SIGKILLed and SIGSTOPped.
        .testTarget(name: "FailoverTests", dependencies: ["WALClient", "WALEtcd", "WALTestSupport", "WALSync"]),
        // The systemd units offline (verify, security score), `make install`, and wald under `systemd --user`.
        .testTarget(name: "SystemdUnitTests", dependencies: ["WALTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
