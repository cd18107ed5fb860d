// The documents written from the option catalogue must be what is checked in: docs/config-table.md
// and config/wald.yaml are outputs of `make docs`, never edited by hand. With WALD_WRITE_DOCS=1 (what
// `make docs` sets) the tests write them instead, then check them like any other run.
import Foundation
import Testing

@testable import WALConfig

@Suite struct OptionDocsTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func check(_ relativePath: String, against generated: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let url = root.appendingPathComponent(relativePath)
        if ProcessInfo.processInfo.environment["WALD_WRITE_DOCS"] == "1" {
            try generated.write(to: url, atomically: true, encoding: .utf8)
        }
        let onDisk = try String(contentsOf: url, encoding: .utf8)
        let firstDifference = zip(onDisk.split(separator: "\n", omittingEmptySubsequences: false),
                                  generated.split(separator: "\n", omittingEmptySubsequences: false))
            .enumerated().first { $0.element.0 != $0.element.1 }
        let matches = onDisk == generated  // not inside #expect, which would print both files whole
        #expect(matches,
                "\(relativePath) differs from the option catalogue (run `make docs`): first at line \((firstDifference?.offset ?? 0) + 1): \(firstDifference.map { "\"\($0.element.0)\" vs \"\($0.element.1)\"" } ?? "length")",
                sourceLocation: sourceLocation)
    }

    @Test func theOptionTableIsTheCatalogues() throws {
        try Self.check("docs/config-table.md", against: OptionDocs.table())
    }

    @Test func theSampleFileIsTheCatalogues() throws {
        try Self.check("config/wald.yaml", against: OptionDocs.sample())
    }

    /// Every option has one row, with its three spellings and its default as `WaldConfig` holds it.
    @Test func everyOptionHasARowWithItsSpellingsAndDefault() {
        let table = OptionDocs.table()
        let rows = table.split(separator: "\n").filter { $0.hasPrefix("| `--") }
        #expect(rows.count == WaldOption.allCases.count)
        for option in WaldOption.allCases {
            let row = rows.first { $0.hasPrefix("| `\(option.flag)") }
            #expect(row?.contains("`\(option.environmentVariable)`") == true, "no row or no variable for \(option.flag)")
            #expect(row?.contains(option.isFileKey ? "`\(option.yamlKey)`" : "| — |") == true, "\(option.flag)")
        }
        #expect(rows.contains { $0.contains("`--max-segment-bytes SIZE`") && $0.contains("| `64MiB` |") })
        #expect(rows.contains { $0.contains("`--follow-tls`") && $0.contains("| `false` |") })
        #expect(rows.contains { $0.contains("`--unix PATH`") && $0.contains("| none |") })
    }

    /// A byte size is written in the largest exact binary unit and reads back to the same count.
    @Test(arguments: [0, 128, 1000, 1 << 10, 64 << 20, 1 << 30, 16_777_215, 3 << 30])
    func byteSizesWrittenForTheDocsReadBack(bytes: Int) throws {
        #expect(try ByteSize.parse(ByteSize.format(bytes)) == bytes)
    }
}
