import CLibellula

/// Readiness events of a file descriptor, as epoll reports them.
public struct IOEvents: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = IOEvents(rawValue: LB_EPOLLIN)
    public static let writable = IOEvents(rawValue: LB_EPOLLOUT)
    public static let error = IOEvents(rawValue: LB_EPOLLERR)
    public static let hangup = IOEvents(rawValue: LB_EPOLLHUP)
    public static let readHangup = IOEvents(rawValue: LB_EPOLLRDHUP)
}

/// A thread waiting for events on a descriptor registered with its CPU's epoll.
/// Records are pooled per CPU (a wait allocates nothing); `generation` tells a late
/// cancellation for an earlier use to do nothing.
final class IOWaiter: @unchecked Sendable {
    var fd: Int32
    var interest: IOEvents
    var continuation: UnsafeContinuation<IOEvents, any Error>?
    var cancelled = false
    var generation = 0
    /// The next waiter on the same descriptor.
    var next: IOWaiter?
    /// The waiting LWKT thread's stats words (its identity), for a wait that
    /// ``LWKTThread/cancel()`` ends by IPI; nil for waits with a runtime cancellation handler.
    var thread: UnsafeMutablePointer<Int64>?
    init(fd: Int32, interest: IOEvents) {
        self.fd = fd
        self.interest = interest
    }
}
