import Glibc
import LWKT

/// How a VFS thread waits for a namespace lock or for readers to drain, without ever making
/// an LWKT CPU deaf: on a CPU each step runs the CPU's pending IPIs and due timers (a
/// preemption point, as DragonFly's IPI senders drain their own queues while they wait), so
/// the CPU keeps answering its peers; off the CPUs (host-I/O pool, plain threads) it spins
/// briefly, then yields, then sleeps in short naps. No pthread mutex is involved.
enum VFSWait {
    @inline(__always)
    static func relax(_ spins: inout Int) {
        spins &+= 1
        if spins & 15 == 0, CPU.current != nil {
            CPU.processPending()
            return
        }
        if CPU.current != nil { return }
        if spins > 2_000 { usleep(20) } else if spins > 64 { sched_yield() }
    }

    /// The calling thread's identity as a lock owner (never 0).
    @inline(__always)
    static var owner: UInt { UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))) | 1 }
}
