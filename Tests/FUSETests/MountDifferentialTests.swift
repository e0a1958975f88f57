import Foundation
import Glibc
import Testing

/// Seeded random operation sequences applied through the mount and to a host directory,
/// compared result by result (errno included), then the two trees compared whole.
@Suite(.serialized) struct MountDifferentialTests {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            var z = state
            z = (z ^ (z >> 33)) &* 0xff51afd7ed558ccd
            return z ^ (z >> 29)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let names = ["a", "b", "c", "dd"]

    static func randomPath(_ g: inout Generator) -> String {
        (0...g.below(2)).map { _ in names[g.below(names.count)] }.joined(separator: "/")
    }

    /// Applies one operation under the directory `root` (a descriptor) and describes its result.
    static func apply(_ op: Int, _ p1: String, _ p2: String, _ data: [UInt8], _ mode: UInt32, _ size: Int, root: Int32) -> String {
        func res(_ rc: Int) -> String { rc < 0 ? "errno \(errno)" : "ok" }
        switch op {
        case 0: return "mkdir " + res(Int(mkdirat(root, p1, mode_t(mode))))
        case 1, 2, 3:
            let flags: Int32 = op == 1 ? O_CREAT | O_EXCL | O_WRONLY : op == 2 ? O_CREAT | O_TRUNC | O_WRONLY : O_WRONLY | O_APPEND
            let fd = openat(root, p1, flags, mode_t(0o644))
            if fd < 0 { return "open errno \(errno)" }
            defer { close(fd) }
            return "write " + res(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) })
        case 4: return "unlink " + res(Int(unlinkat(root, p1, 0)))
        case 5: return "rmdir " + res(Int(unlinkat(root, p1, AT_REMOVEDIR)))
        case 6: return "rename " + res(Int(renameat(root, p1, root, p2)))
        case 7, 8:
            guard let r2 = renameat2Call else { return "skip" }
            return "rename2 " + res(Int(r2(root, p1, root, p2, op == 7 ? 1 : 2)))
        case 9: return "link " + res(Int(linkat(root, p1, root, p2, 0)))
        case 10: return "symlink " + res(Int(symlinkat(p2, root, p1)))
        case 11:
            var buf = [CChar](repeating: 0, count: 256)
            let n = readlinkat(root, p1, &buf, 255)
            return n < 0 ? "readlink errno \(errno)" : "readlink " + String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        case 12, 13:
            var st = stat()
            if fstatat(root, p1, &st, op == 12 ? AT_SYMLINK_NOFOLLOW : 0) != 0 { return "stat errno \(errno)" }
            let type = st.st_mode & S_IFMT
            var s = "stat type \(type) mode \(String(st.st_mode & 0o7777, radix: 8))"
            if type == S_IFREG { s += " size \(st.st_size) nlink \(st.st_nlink)" }
            if type == S_IFLNK { s += " size \(st.st_size)" }
            return s
        case 14:
            let fd = openat(root, p1, O_RDONLY)
            if fd < 0 { return "read-open errno \(errno)" }
            defer { close(fd) }
            var buf = [UInt8](repeating: 0, count: 1 << 16)
            let n = read(fd, &buf, buf.count)
            return n < 0 ? "read errno \(errno)" : "read \(n) \(buf[0..<n].reduce(UInt64(14695981039346656037)) { ($0 ^ UInt64($1)) &* 1099511628211 })"
        case 15: return "chmod " + res(Int(fchmodat(root, p1, mode_t(mode), 0)))
        case 16:
            let fd = openat(root, p1, O_WRONLY)
            if fd < 0 { return "trunc-open errno \(errno)" }
            defer { close(fd) }
            return "ftruncate " + res(Int(ftruncate(fd, off_t(size))))
        default:
            let fd = openat(root, p1, O_RDONLY | O_DIRECTORY)
            if fd < 0 { return "opendir errno \(errno)" }
            guard let dir = fdopendir(fd) else { close(fd); return "fdopendir errno \(errno)" }
            defer { closedir(dir) }
            var names: [String] = []
            while let e = readdir(dir) {
                let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                names.append(n)
            }
            return "list " + names.sorted().joined(separator: ",")
        }
    }

    /// Every object under `root` with its type, size and content checksum or link target.
    static func tree(_ root: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: root) else { return [] }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            let p = root + "/" + rel
            var st = stat()
            guard lstat(p, &st) == 0 else { out.append("\(rel) vanished"); continue }
            var line = "\(rel) \(st.st_mode & S_IFMT) \(String(st.st_mode & 0o7777, radix: 8))"
            if st.st_mode & S_IFMT == S_IFREG {
                let d = FileManager.default.contents(atPath: p) ?? Data()
                line += " \(d.count) \(d.reduce(UInt64(14695981039346656037)) { ($0 ^ UInt64($1)) &* 1099511628211 }) \(st.st_nlink)"
            } else if st.st_mode & S_IFMT == S_IFLNK {
                line += " -> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: p)) ?? "?")
            }
            out.append(line)
        }
        return out.sorted()
    }

    func run(_ rig: MountRig, seed: UInt64, steps: Int) {
        let mountFD = open(rig.path, O_RDONLY | O_DIRECTORY)
        let hostDir = rig.scratch + "/oracle-\(seed)"
        mkdir(hostDir, 0o755)
        let hostFD = open(hostDir, O_RDONLY | O_DIRECTORY)
        defer { close(mountFD); close(hostFD) }
        // Each seed works in its own directory of the mount.
        mkdirat(mountFD, "s\(seed)", 0o755)
        let m = openat(mountFD, "s\(seed)", O_RDONLY | O_DIRECTORY)
        defer { close(m) }
        var g = Generator(state: seed)
        var succeeded = 0
        for step in 0..<steps {
            let op = g.below(18)
            let p1 = Self.randomPath(&g), p2 = Self.randomPath(&g)
            let data = (0..<g.below(300)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            let mode = [0o755, 0o700, 0o644, 0o600, 0o750][g.below(5)] as UInt32
            let size = g.below(5000)
            let got = Self.apply(op, p1, p2, data, mode, size, root: m)
            let want = Self.apply(op, p1, p2, data, mode, size, root: hostFD)
            if got != want {
                Issue.record("seed \(seed) step \(step): op \(op) \(p1) \(p2): mount gave \"\(got)\", host gave \"\(want)\"")
                return
            }
            if !got.contains("errno") { succeeded += 1 }
        }
        // The sequence must exercise more than error paths.
        #expect(succeeded > steps / 6, "seed \(seed): only \(succeeded) of \(steps) operations succeeded")
        print("seed \(seed): \(succeeded) of \(steps) operations succeeded on both")
        let a = Self.tree(rig.path + "/s\(seed)"), b = Self.tree(hostDir)
        #expect(a == b, "seed \(seed): trees differ:\nmount \(a)\nhost  \(b)")
    }

    @Test(arguments: [1, 2, 3] as [UInt64]) func memFSAgainstHost(seed: UInt64) throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        run(rig, seed: seed, steps: 1500)
    }

    @Test(arguments: [4, 5] as [UInt64]) func hostFSAgainstHost(seed: UInt64) throws {
        guard let rig = try MountRig.make(hostBacked: true) else { return }
        defer { rig.close() }
        run(rig, seed: seed, steps: 1500)
    }

    @Test func zeroTimeoutsAgainstHost() throws {
        guard let rig = try MountRig.make(options: .init(entryTimeout: 0, attributeTimeout: 0)) else { return }
        defer { rig.close() }
        run(rig, seed: 9, steps: 1500)
    }
}
