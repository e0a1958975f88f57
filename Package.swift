// swift-tools-version: 6.1
import PackageDescription

// Libellula: DragonFly BSD's LWKT SMP design as a Swift library OS.
// Library targets carry no unsafeFlags so that other packages can depend on them; hot
// state lives behind raw pointers, where no dynamic exclusivity check applies.
// Linux only (Glibc, epoll, eventfd, futex, TAP): no other platform is claimed, and the
// LWKT module stops the build elsewhere with an #error saying so.
let package = Package(
    name: "Libellula",
    products: [
        .library(name: "LWKT", targets: ["LWKT"]),
        .library(name: "Slab", targets: ["Slab"]),
        .library(name: "VFS", targets: ["VFS"]),
        .library(name: "Services", targets: ["Services"]),
        .library(name: "NetStack", targets: ["NetStack"]),
        .library(name: "FUSE", targets: ["FUSE"]),
        .executable(name: "libellula", targets: ["libellula"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(name: "CLibellula"),
        .target(name: "LWKT", dependencies: ["CLibellula"]),
        .target(name: "Slab", dependencies: ["LWKT", "CLibellula"]),
        .target(name: "VFS", dependencies: ["LWKT", "CLibellula"]),
        .target(name: "NetStack", dependencies: ["LWKT", "Slab", "CLibellula"]),
        // FUSE speaks the kernel protocol on /dev/fuse itself (no libfuse at build or run time).
        .target(name: "CFUSE"),
        .target(name: "FUSE", dependencies: ["CFUSE", "CLibellula", "LWKT", "VFS"]),
        .target(
            name: "Services",
            dependencies: ["LWKT", "Slab", "VFS", "NetStack", "CLibellula", "FUSE", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "libellula",
            dependencies: [
                "CLibellula", "LWKT", "Slab", "VFS", "Services", "NetStack", "FUSE",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        // Test helpers every test target shares: a descriptor census and posix_spawn-based
        // process spawning (no Foundation Process in the rigs).
        .target(name: "LibellulaTestSupport", path: "Tests/LibellulaTestSupport"),
        .testTarget(name: "LWKTTests", dependencies: ["LWKT", "CLibellula", "LibellulaTestSupport"]),
        .testTarget(name: "SlabTests", dependencies: ["Slab", "LWKT", "LibellulaTestSupport"]),
        .testTarget(name: "VFSTests", dependencies: ["VFS", "LWKT", "LibellulaTestSupport"]),
        .testTarget(name: "ServicesTests", dependencies: ["Services", "LWKT", "Slab", "VFS", "NetStack", "LibellulaTestSupport"], exclude: ["Scripts"]),
        .testTarget(name: "NetStackTests", dependencies: ["NetStack", "LWKT", "Slab", "CLibellula", "LibellulaTestSupport"]),
        .testTarget(name: "FUSETests", dependencies: ["FUSE", "VFS", "LWKT", "Services", "LibellulaTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
