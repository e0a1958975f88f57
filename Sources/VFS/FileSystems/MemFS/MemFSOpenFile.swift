/// An open file of `MemFS`: the node itself; data stays reachable after the last name is gone.
final class MemFSOpenFile: FSOpenFile, @unchecked Sendable {
    let fs: MemFS
    let node: MemFSNode

    init(fs: MemFS, node: MemFSNode) {
        self.fs = fs
        self.node = node
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(VFSError) -> Int {
        try fs.read(node, into: buffer, at: offset)
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64, append: Bool) throws(VFSError) -> (count: Int, end: Int64) {
        try fs.write(node, buffer, at: offset, append: append)
    }

    func attributes() throws(VFSError) -> FileAttributes { node.attributes(device: fs.deviceID) }

    func truncate(to length: Int64) throws(VFSError) {
        try fs.setAttributes(of: node, AttributeChange(size: length))
    }

    func readDirectory() throws(VFSError) -> [DirectoryEntry] { try fs.list(node) }

    func close() {}
}
