#if canImport(Glibc)
import Glibc
#endif

// A count of this process's open descriptors, read from /proc/self/fd and sorted by what
// each one is (the target of its /proc link). Tests use it to check that something they
// start and stop gives back every descriptor it opened; `LIBELLULA_FD_CENSUS=1` makes
// `FDCensus.note(_:)` print one line per call, for finding which suite leaves some behind
// (`LIBELLULA_FD_CENSUS=paths` adds the directories holding the most path descriptors).

/// The open descriptors of this process, by kind.
public struct FDCensus: Sendable, Equatable, CustomStringConvertible {
    /// Descriptors counted (the one used to read the directory is left out).
    public var total: Int
    /// Count per kind: `eventpoll`, `eventfd`, `timerfd`, `inotify`, `signalfd`, `socket`,
    /// `pipe`, `memfd`, `tun`, `fuse`, `dev` (other devices), `proc`, `path` (files and
    /// directories), `other`.
    public var kinds: [String: Int]

    /// Reads /proc/self/fd now. An empty census (total 0) when /proc is not mounted.
    public static func take() -> FDCensus {
        var kinds: [String: Int] = [:]
        var total = 0
        forEachDescriptor { _, target in
            total += 1
            kinds[kind(of: target), default: 0] += 1
        }
        return FDCensus(total: total, kinds: kinds)
    }

    /// The number of open descriptors (cheaper than ``take()``: no link is read).
    public static func count() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        let own = dirfd(dir)
        var n = 0
        while let e = readdir(dir) {
            guard let fd = descriptorNumber(e) else { continue }
            if fd != own { n += 1 }
        }
        return n
    }

    /// The open descriptors with their link targets, lowest first (for failure messages).
    public static func list() -> [(fd: Int32, target: String)] {
        var out: [(fd: Int32, target: String)] = []
        forEachDescriptor { fd, target in out.append((fd, target)) }
        return out.sorted { $0.fd < $1.fd }
    }

    /// The kinds that grew since `baseline`, with how many more there are now.
    public func growth(since baseline: FDCensus) -> [String: Int] {
        var d: [String: Int] = [:]
        for (k, n) in kinds where n > baseline.kinds[k, default: 0] { d[k] = n - baseline.kinds[k, default: 0] }
        return d
    }

    public var description: String {
        let parts = kinds.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return "\(total) fds (\(parts.joined(separator: " ")))"
    }

    /// Whether `LIBELLULA_FD_CENSUS` is set in the environment.
    public static let reporting: Bool = getenv("LIBELLULA_FD_CENSUS") != nil

    /// Prints `label` and the census to standard error when `LIBELLULA_FD_CENSUS` is set;
    /// does nothing otherwise.
    public static func note(_ label: String) {
        guard reporting else { return }
        var line = "fd-census \(label): \(take())\n"
        if String(cString: getenv("LIBELLULA_FD_CENSUS")) == "paths" {
            // The directories holding the most open path descriptors.
            var dirs: [String: Int] = [:]
            for (_, t) in list() where t.hasPrefix("/") && !t.hasPrefix("/dev/") && !t.hasPrefix("/proc/") {
                let parent = t.split(separator: "/").dropLast().prefix(4).joined(separator: "/")
                dirs["/" + parent, default: 0] += 1
            }
            for (d, n) in dirs.sorted(by: { $0.value > $1.value }).prefix(5) { line += "  \(n) under \(d)\n" }
        }
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    /// The kind of a descriptor whose /proc link reads `target`.
    static func kind(of target: String) -> String {
        if target.hasPrefix("anon_inode:") {
            let name = target.dropFirst("anon_inode:".count).trimmingBrackets()
            switch name {
            case "eventpoll", "eventfd", "timerfd", "inotify", "signalfd", "pidfd", "io_uring": return String(name)
            default: return "anon:" + name
            }
        }
        if target.hasPrefix("socket:") { return "socket" }
        if target.hasPrefix("pipe:") { return "pipe" }
        if target.hasPrefix("/memfd:") { return "memfd" }
        if target == "/dev/net/tun" { return "tun" }
        if target == "/dev/fuse" { return "fuse" }
        if target.hasPrefix("/dev/") { return "dev" }
        if target.hasPrefix("/proc/") { return "proc" }
        if target.hasPrefix("/") { return "path" }
        return "other"
    }

    private static func forEachDescriptor(_ body: (Int32, String) -> Void) {
        guard let dir = opendir("/proc/self/fd") else { return }
        defer { closedir(dir) }
        let own = dirfd(dir)
        var buffer = [CChar](repeating: 0, count: 4097)
        while let e = readdir(dir) {
            guard let fd = descriptorNumber(e), fd != own else { continue }
            let n = buffer.withUnsafeMutableBufferPointer { b in
                readlinkat(own, "\(fd)", b.baseAddress!, 4096)
            }
            // A descriptor closed between readdir and readlink is simply not counted.
            guard n >= 0 else { continue }
            let target = buffer.withUnsafeBufferPointer { b in
                String(decoding: UnsafeRawBufferPointer(start: b.baseAddress, count: n), as: UTF8.self)
            }
            body(fd, target)
        }
    }

    private static func descriptorNumber(_ e: UnsafeMutablePointer<dirent>) -> Int32? {
        withUnsafeBytes(of: e.pointee.d_name) { raw -> Int32? in
            var v: Int32 = 0
            var digits = 0
            for byte in raw {
                if byte == 0 { break }
                guard byte >= 48 && byte <= 57 else { return nil }
                v = v &* 10 &+ Int32(byte - 48)
                digits += 1
            }
            return digits > 0 ? v : nil
        }
    }
}

private extension Substring {
    func trimmingBrackets() -> Substring {
        var s = self
        if s.first == "[" { s = s.dropFirst() }
        if s.last == "]" { s = s.dropLast() }
        return s
    }
}
