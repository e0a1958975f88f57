import Glibc
import Synchronization

/// An open file of a process: the record it was opened through (held, so unmount reports
/// EBUSY), the file system's open file and the file offset.
public final class OpenFile: @unchecked Sendable {
    let record: NCRecord
    let file: any FSOpenFile
    let readable: Bool
    let writable: Bool
    let append: Bool
    let isDirectory: Bool
    private var offsetValue: Int64 = 0
    /// Serialises uses of the file offset (`read`, `write`, `seek`); `pread` takes no lock.
    /// A sleep lock: it is held across the file system's read or write, which may be a host
    /// call on the host-I/O pool.
    private let offsetLock = RecordLock()
    private let closed = Atomic<Bool>(false)

    init(record: NCRecord, file: any FSOpenFile, readable: Bool, writable: Bool, append: Bool, isDirectory: Bool) {
        self.record = record
        self.file = file
        self.readable = readable
        self.writable = writable
        self.append = append
        self.isDirectory = isDirectory
        record.hold()
    }

    func close() {
        if closed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            file.close()
            record.drop()
        }
    }

    /// Runs `body` with the file offset locked.
    func withOffset<R>(_ body: (inout Int64) throws(VFSError) -> R) throws(VFSError) -> R {
        try offsetLock.lockExclusive()
        defer { offsetLock.unlock(.exclusive) }
        return try body(&offsetValue)
    }

    deinit {
        close()
    }
}
