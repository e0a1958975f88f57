import Testing
@testable import VFS

/// A fresh namespace over MemFS with a root process.
func makeMemVFS(negativeRatio: Int = 1, minimumNegatives: Int = 1024) -> (VirtualFileSystem, VFSProcess) {
    let vfs = VirtualFileSystem(rootFileSystem: MemFS(rootMode: 0o755),
                                namecache: Namecache(negativeRatio: negativeRatio, minimumNegatives: minimumNegatives))
    return (vfs, vfs.makeProcess())
}

/// The error a throwing call gives, or nil on success.
func errno<T>(_ body: () throws -> T) -> VFSError? {
    do { _ = try body(); return nil } catch let e as VFSError { return e } catch { return .other }
}

/// Writes a whole file.
func writeFile(_ p: VFSProcess, _ path: String, _ text: String) throws(VFSError) {
    let fd = try p.open(path, [.writeOnly, .create, .truncate])
    defer { try? p.close(fd) }
    try p.write(fd, Array(text.utf8))
}

/// Reads a whole file.
func readFile(_ p: VFSProcess, _ path: String) throws(VFSError) -> String {
    let fd = try p.open(path, .readOnly)
    defer { try? p.close(fd) }
    return String(decoding: try p.read(fd, count: 1 << 20), as: UTF8.self)
}
