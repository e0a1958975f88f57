// swift-tools-version: 6.1
import PackageDescription

// A path dependency's identity is its folder's name, which depends on where the repository
// was cloned: derive it from this manifest's location.
let libellulaPackage = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "main").lowercased()

// Benchmarks with allocation counts (ordo-one/benchmark with its malloc interposer), and
// the SwiftNIO baseline. Run: cd Benchmarks && swift package benchmark
let package = Package(
    name: "LibellulaBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "LWKTBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LWKT", package: libellulaPackage),
                .product(name: "Slab", package: libellulaPackage),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/LWKTBenchmarks",
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
