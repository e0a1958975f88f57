import Glibc

extension VFSProcess {
    /// The host kernel's descriptor behind open file `fd` when it is a regular file of a
    /// `HostFS` opened for reading; nil for any other file. Lets a server hand the host file
    /// to the kernel (`sendfile`) instead of copying its bytes through user space. The
    /// descriptor stays owned by the VFS: use it only while `fd` is open, never close it.
    public func hostDescriptor(_ fd: Int32) -> Int32? {
        guard let f = try? file(fd), f.readable, !f.isDirectory, let host = f.file as? HostFSOpenFile else { return nil }
        return host.fd
    }
}
