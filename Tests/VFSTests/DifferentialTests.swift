import Glibc
import Testing
@testable import VFS
import LibellulaTestSupport


/// Makes a fresh host temporary directory.
func makeTempDir(_ tag: String) -> String {
    var template = Array("/tmp/libellula-vfs-\(tag)-XXXXXX".utf8CString)
    let ok = template.withUnsafeMutableBufferPointer { b -> Bool in
        guard let base = b.baseAddress else { return false }
        return mkdtemp(base) != nil
    }
    precondition(ok, "mkdtemp failed")
    return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Removes a host directory tree.
func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if st.st_mode & S_IFMT == S_IFDIR {
        if let d = opendir(path) {
            var names: [String] = []
            while let e = readdir(d) {
                let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if n != "." && n != ".." { names.append(n) }
            }
            closedir(d)
            for n in names { removeTree(path + "/" + n) }
        }
        Glibc.rmdir(path)
    } else {
        Glibc.unlink(path)
    }
}

/// One operation of a random sequence. Paths are relative to the namespace root.
enum DiffOp: CustomStringConvertible {
    case mkdir(String)
    case rmdir(String)
    case unlink(String)
    case create(String, exclusive: Bool, truncate: Bool, data: String)
    case append(String, data: String)
    case rename(String, String)
    case link(String, String)
    case symlink(target: String, String)
    case stat(String)
    case lstat(String)
    case readlink(String)
    case truncate(String, Int64)
    case openDirectory(String)
    case openNoFollow(String)

    var description: String {
        switch self {
        case .mkdir(let p): "mkdir \(p)"
        case .rmdir(let p): "rmdir \(p)"
        case .unlink(let p): "unlink \(p)"
        case .create(let p, let e, let t, let d): "create \(p) excl=\(e) trunc=\(t) \(d.count)B"
        case .append(let p, let d): "append \(p) \(d.count)B"
        case .rename(let a, let b): "rename \(a) \(b)"
        case .link(let a, let b): "link \(a) \(b)"
        case .symlink(let t, let p): "symlink \(t) \(p)"
        case .stat(let p): "stat \(p)"
        case .lstat(let p): "lstat \(p)"
        case .readlink(let p): "readlink \(p)"
        case .truncate(let p, let n): "truncate \(p) \(n)"
        case .openDirectory(let p): "open-dir \(p)"
        case .openNoFollow(let p): "open-nofollow \(p)"
        }
    }
}

/// Generates random paths and operations over a small name pool, so that names collide often.
struct OpGenerator {
    var rng: SeededRandom
    let names = ["a", "b", "c", "d"]

    mutating func pick<T>(_ a: [T]) -> T { a[Int.random(in: 0..<a.count, using: &rng)] }

    var prefix = ""

    mutating func path() -> String {
        let depth = Int.random(in: 1...3, using: &rng)
        var parts: [String] = []
        for _ in 0..<depth {
            let r = Int.random(in: 0..<20, using: &rng)
            if r == 0 && !parts.isEmpty { parts.append(".") }
            if r == 1 && !parts.isEmpty { parts.append(pick(names)); parts.append("..") }
            parts.append(pick(names))
        }
        var p = prefix + "/" + parts.joined(separator: "/")
        if Int.random(in: 0..<12, using: &rng) == 0 { p += "/" }
        if Int.random(in: 0..<30, using: &rng) == 0 { p = p.split(separator: "/", omittingEmptySubsequences: false).joined(separator: "//") }
        return p
    }

    mutating func symlinkTarget() -> String {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return pick(names)
        case 1: return "../" + pick(names)
        case 2: return pick(names) + "/" + pick(names)
        default: return "."
        }
    }

    mutating func op(prefix: String) -> DiffOp {
        self.prefix = prefix
        let data = String(repeating: "x", count: Int.random(in: 0..<20, using: &rng))
        switch Int.random(in: 0..<15, using: &rng) {
        case 0, 1: return .mkdir(path())
        case 2: return .rmdir(path())
        case 3: return .unlink(path())
        case 4, 5: return .create(path(), exclusive: Bool.random(using: &rng), truncate: Bool.random(using: &rng), data: data)
        case 6: return .append(path(), data: data)
        case 7, 8: return .rename(path(), path())
        case 9: return .link(path(), path())
        case 10: return .symlink(target: symlinkTarget(), path())
        case 11: return .stat(path())
        case 12: return .lstat(path())
        case 13: return Bool.random(using: &rng) ? .readlink(path()) : .truncate(path(), Int64.random(in: 0..<10, using: &rng))
        default: return Bool.random(using: &rng) ? .openDirectory(path()) : .openNoFollow(path())
        }
    }
}

/// The observable result of one operation.
enum Outcome: Equatable, CustomStringConvertible {
    case ok(String)
    case failed(VFSError)
    var description: String {
        switch self {
        case .ok(let s): "ok(\(s))"
        case .failed(let e): "\(e)"
        }
    }
}

func summary(_ a: FileAttributes) -> String {
    "\(a.type) size=\(a.type == .directory ? 0 : a.size) nlink=\(a.nlink)"
}

/// Runs an operation on the Libellula VFS.
func runVFS(_ p: VFSProcess, _ op: DiffOp) -> Outcome {
    do throws(VFSError) {
        switch op {
        case .mkdir(let path): try p.mkdir(path, mode: 0o755); return .ok("")
        case .rmdir(let path): try p.rmdir(path); return .ok("")
        case .unlink(let path): try p.unlink(path); return .ok("")
        case .create(let path, let excl, let trunc, let data):
            var f: OpenFlags = [.writeOnly, .create]
            if excl { f.insert(.exclusive) }
            if trunc { f.insert(.truncate) }
            let fd = try p.open(path, f, mode: 0o644)
            defer { try? p.close(fd) }
            try p.write(fd, Array(data.utf8))
            return .ok("")
        case .append(let path, let data):
            let fd = try p.open(path, [.writeOnly, .append])
            defer { try? p.close(fd) }
            try p.write(fd, Array(data.utf8))
            return .ok("")
        case .rename(let a, let b): try p.rename(a, b); return .ok("")
        case .link(let a, let b): try p.link(a, b); return .ok("")
        case .symlink(let t, let path): try p.symlink(t, path); return .ok("")
        case .stat(let path): return .ok(summary(try p.stat(path)))
        case .lstat(let path): return .ok(summary(try p.lstat(path)))
        case .readlink(let path): return .ok(try p.readlink(path))
        case .truncate(let path, let n): try p.truncate(path, length: n); return .ok("")
        case .openDirectory(let path):
            let fd = try p.open(path, [.directory])
            try p.close(fd)
            return .ok("")
        case .openNoFollow(let path):
            let fd = try p.open(path, [.noFollow])
            try p.close(fd)
            return .ok("")
        }
    } catch {
        return .failed(error)
    }
}

/// Runs an operation on the host kernel below `base`.
func runHost(_ base: String, _ op: DiffOp) -> Outcome {
    func fail() -> Outcome { .failed(VFSError(errno: Glibc.errno)) }
    func st(_ path: String, follow: Bool) -> Outcome {
        var s = stat()
        let r = fstatat(AT_FDCWD, base + path, &s, follow ? 0 : AT_SYMLINK_NOFOLLOW)
        if r != 0 { return fail() }
        return .ok(summary(HostFS.attributes(s, device: 0)))
    }
    switch op {
    case .mkdir(let path): return Glibc.mkdir(base + path, 0o755) == 0 ? .ok("") : fail()
    case .rmdir(let path): return Glibc.rmdir(base + path) == 0 ? .ok("") : fail()
    case .unlink(let path): return Glibc.unlink(base + path) == 0 ? .ok("") : fail()
    case .create(let path, let excl, let trunc, let data):
        var f = O_WRONLY | O_CREAT
        if excl { f |= O_EXCL }
        if trunc { f |= O_TRUNC }
        let fd = Glibc.open(base + path, f, 0o644)
        if fd < 0 { return fail() }
        let bytes = Array(data.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
        return .ok("")
    case .append(let path, let data):
        let fd = Glibc.open(base + path, O_WRONLY | O_APPEND)
        if fd < 0 { return fail() }
        let bytes = Array(data.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
        return .ok("")
    case .rename(let a, let b): return Glibc.rename(base + a, base + b) == 0 ? .ok("") : fail()
    case .link(let a, let b): return Glibc.link(base + a, base + b) == 0 ? .ok("") : fail()
    case .symlink(let t, let path): return Glibc.symlink(t, base + path) == 0 ? .ok("") : fail()
    case .stat(let path): return st(path, follow: true)
    case .lstat(let path): return st(path, follow: false)
    case .readlink(let path):
        var buf = [CChar](repeating: 0, count: 4096)
        let n = Glibc.readlink(base + path, &buf, 4095)
        if n < 0 { return fail() }
        return .ok(String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    case .truncate(let path, let n): return Glibc.truncate(base + path, off_t(n)) == 0 ? .ok("") : fail()
    case .openDirectory(let path):
        let fd = Glibc.open(base + path, O_RDONLY | O_DIRECTORY)
        if fd < 0 { return fail() }
        Glibc.close(fd)
        return .ok("")
    case .openNoFollow(let path):
        let fd = Glibc.open(base + path, O_RDONLY | O_NOFOLLOW)
        if fd < 0 { return fail() }
        Glibc.close(fd)
        return .ok("")
    }
}

/// A description of a whole tree: one line per object, sorted.
func treeOfVFS(_ p: VFSProcess, _ dir: String = "") throws -> [String] {
    var out: [String] = []
    for e in try p.listDirectory(dir.isEmpty ? "/" : dir) {
        let path = dir + "/" + e.name
        let a = try p.lstat(path)
        switch a.type {
        case .directory:
            out.append("\(path) dir nlink=\(a.nlink)")
            out += try treeOfVFS(p, path)
        case .symlink: out.append("\(path) -> \(try p.readlink(path))")
        default: out.append("\(path) file nlink=\(a.nlink) data=\(try readFile(p, path))")
        }
    }
    return out.sorted()
}

func treeOfHost(_ base: String, _ dir: String = "") -> [String] {
    var out: [String] = []
    guard let d = opendir(base + (dir.isEmpty ? "/" : dir)) else { return ["<unreadable \(dir)>"] }
    var names: [String] = []
    while let e = readdir(d) {
        let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if n != "." && n != ".." { names.append(n) }
    }
    closedir(d)
    for n in names {
        let path = dir + "/" + n
        var s = stat()
        guard lstat(base + path, &s) == 0 else { continue }
        switch s.st_mode & S_IFMT {
        case S_IFDIR:
            out.append("\(path) dir nlink=\(s.st_nlink)")
            out += treeOfHost(base, path)
        case S_IFLNK:
            var buf = [CChar](repeating: 0, count: 4096)
            let len = Glibc.readlink(base + path, &buf, 4095)
            out.append("\(path) -> \(String(decoding: buf[0..<max(len, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        default:
            let fd = Glibc.open(base + path, O_RDONLY)
            var data = [UInt8](repeating: 0, count: 1 << 16)
            let n = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            Glibc.close(fd)
            out.append("\(path) file nlink=\(s.st_nlink) data=\(String(decoding: data[0..<max(n, 0)], as: UTF8.self))")
        }
    }
    return out.sorted()
}

/// Applies one random sequence to the VFS and to the host, comparing every result and the
/// final trees. Returns the first mismatches (empty when everything matched).
func differentialRun(seed: UInt64, steps: Int, vfsProcess p: VFSProcess, hostBase: String) throws -> [String] {
    var gen = OpGenerator(rng: SeededRandom(seed: seed))
    var problems: [String] = []
    // Work three levels below the root on both sides, so that relative symlinks climbing with
    // `..` stay inside both trees (the VFS root stops `..`; the host directory would not).
    for d in ["/p", "/p/q", "/p/q/r"] {
        try p.mkdir(d)
        Glibc.mkdir(hostBase + d, 0o755)
    }
    for i in 0..<steps {
        let op = gen.op(prefix: "/p/q/r")
        let mine = runVFS(p, op)
        let theirs = runHost(hostBase, op)
        if mine != theirs {
            problems.append("seed \(seed) step \(i): \(op): vfs \(mine), host \(theirs)")
            if problems.count > 5 { break }
        }
    }
    let a = try treeOfVFS(p), b = treeOfHost(hostBase)
    if a != b {
        problems.append("seed \(seed): trees differ\nvfs:  \(a)\nhost: \(b)")
    }
    return problems
}

@Suite struct DifferentialTests {
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func memFSMatchesHostKernel(seed: UInt64) throws {
        let (vfs, p) = makeMemVFS()
        let host = makeTempDir("oracle")
        defer { removeTree(host) }
        let problems = try differentialRun(seed: seed, steps: 400, vfsProcess: p, hostBase: host)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    @Test(arguments: [11, 12, 13, 14] as [UInt64])
    func hostFSMatchesHostKernel(seed: UInt64) throws {
        let mine = makeTempDir("hostfs")
        let host = makeTempDir("oracle")
        defer { removeTree(mine); removeTree(host) }
        let vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: mine))
        let p = vfs.makeProcess()
        let problems = try differentialRun(seed: seed, steps: 400, vfsProcess: p, hostBase: host)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(vfs.namecache.checkTopology().isEmpty)
        // The HostFS directory itself must hold the same tree as the oracle.
        #expect(treeOfHost(mine) == treeOfHost(host))
    }
}

@Suite struct ExtendedDifferentialTests {
    /// Many more seeds when `LIBELLULA_VFS_DIFF_SEEDS=N` is set (a soak run; off by default).
    @Test func manySeeds() throws {
        let n = getenv("LIBELLULA_VFS_DIFF_SEEDS").flatMap { Int(String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self)) } ?? 0
        for seed in 0..<UInt64(n) {
            let (_, p) = makeMemVFS()
            let host = makeTempDir("oracle")
            let mine = makeTempDir("hostfs")
            defer { removeTree(host); removeTree(mine) }
            let problems = try differentialRun(seed: 1000 + seed, steps: 1000, vfsProcess: p, hostBase: host)
            #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
            let host2 = makeTempDir("oracle")
            defer { removeTree(host2) }
            let hp = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: mine)).makeProcess()
            let problems2 = try differentialRun(seed: 5000 + seed, steps: 1000, vfsProcess: hp, hostBase: host2)
            #expect(problems2.isEmpty, "\(problems2.joined(separator: "\n"))")
        }
    }
}
