// swift-tools-version: 6.1
import PackageDescription

// The Swift baseline for Scripts/bench-http.sh: Hummingbird 2 (SwiftNIO) serving a directory
// with its FileMiddleware. A package of its own so the main package and Benchmarks/ do not
// depend on it. Build: swift build -c release --package-path Benchmarks/HummingbirdBaseline
let package = Package(
    name: "HummingbirdBaseline",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        .executableTarget(
            name: "HummingbirdBaseline",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
