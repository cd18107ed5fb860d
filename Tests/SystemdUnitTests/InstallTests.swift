// `make install` / `make uninstall` into a scratch DESTDIR: every file lands where the README's
// "Running under systemd" section says, an edited config survives a second install, and uninstall
// removes what install put down while keeping the config. The binaries come from this test run's
// own build directory (BINDIR_SRC), so the test builds nothing.
import Foundation
import Testing
import WALTestSupport

@Suite("make install")
struct InstallTests {
    let prefix = "/opt/wald"

    @Test func installPutsEveryFileInPlaceKeepsConfigAndUninstallRemovesIt() throws {
        let destdir = try makeTemporaryDirectory("install")
        defer { try? FileManager.default.removeItem(at: destdir) }
        let root = destdir.path
        let fm = FileManager.default

        try make("install", destdir: root)

        let binaries = ["wald", "walctl"].map { "\(root)\(prefix)/bin/\($0)" }
        let units = ["wald.service", "wald.socket"].map { "\(root)\(prefix)/lib/systemd/system/\($0)" }
        let config = "\(root)/etc/wald/wald.yaml"
        let docs = try documentationFiles().map { "\(root)\(prefix)/share/doc/wald/\($0)" }
        for path in binaries {
            #expect(fm.isExecutableFile(atPath: path), "\(path) missing or not executable")
            // Stripped: no symbol table (the build's copy keeps its own).
            let symbols = try shell("exec nm \"$1\"", [path])
            #expect(symbols.output.contains("no symbols"), "\(path) is not stripped")
            let version = try shell("exec \"$1\" --version", [path])
            #expect(version.status == 0 && version.output == "0.1.0\n", "a stripped \(path) does not run: \(version.output)")
        }
        for path in units + docs + [config] {
            #expect(fm.fileExists(atPath: path), "\(path) missing")
        }
        #expect(fm.contents(atPath: config) == fm.contents(atPath: repositoryRoot.appendingPathComponent("config/wald.yaml").path))

        // The unit files point at this PREFIX, and the config stays in /etc.
        let service = try String(contentsOfFile: units[0], encoding: .utf8)
        #expect(service.contains("ExecStart=\(prefix)/bin/wald --config /etc/wald/wald.yaml --data-dir /var/lib/wald"))
        #expect(!service.contains("/usr/local"), "wald.service still names /usr/local:\n\(service)")
        #expect(!(try String(contentsOfFile: units[1], encoding: .utf8)).contains("/usr/local"))

        // A second install must not overwrite a config the operator edited.
        let edited = "# edited by the operator\nlog_level: debug\n"
        try edited.write(toFile: config, atomically: false, encoding: .utf8)
        try make("install", destdir: root)
        #expect((try String(contentsOfFile: config, encoding: .utf8)) == edited, "install overwrote wald.yaml")
        #expect(fm.fileExists(atPath: config + ".new"), "the new sample config is not installed as wald.yaml.new")

        try make("uninstall", destdir: root)
        for path in binaries + units + docs {
            #expect(!fm.fileExists(atPath: path), "uninstall left \(path)")
        }
        #expect(!fm.fileExists(atPath: "\(root)\(prefix)/share/doc/wald"), "uninstall left the doc directory")
        #expect((try String(contentsOfFile: config, encoding: .utf8)) == edited, "uninstall removed or changed wald.yaml")
    }

    private func make(_ target: String, destdir: String) throws {
        let result = try shell(
            "exec make -s -C \"$1\" \"$2\" DESTDIR=\"$3\" PREFIX=\"$4\" BINDIR_SRC=\"$5\"",
            [repositoryRoot.path, target, destdir, prefix, buildProductsDirectory().path], timeout: 120)
        try #require(result.status == 0, "make \(target) failed (\(result.status)):\n\(result.output)")
    }

    /// README.md and docs/*.md, except the README draft that is not a document of its own.
    private func documentationFiles() throws -> [String] {
        let docs = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appendingPathComponent("docs").path)
            .filter { $0.hasSuffix(".md") && $0 != "systemd-readme-section.md" }
        let readme = FileManager.default.fileExists(atPath: repositoryRoot.appendingPathComponent("README.md").path)
        return docs + (readme ? ["README.md"] : [])
    }
}
