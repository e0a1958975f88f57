/// What a timer does when it expires.
enum TimerAction {
    /// Resume a task sleeping in `LWKT.sleep(for:)`.
    case resume(UnsafeContinuation<Void, any Error>)
    /// Time out a `tsleep`.
    case sleepTimeout(SleepWaiter)
    /// Call a function, like an IPI.
    case call(IPIFunction, UnsafeMutableRawPointer?, Int)
}

/// A pending timer. Owned by one CPU; cancelled timers stay in the heap until they reach
/// the top (lazy deletion).
final class TimerNode {
    let deadline: UInt64
    var action: TimerAction?
    init(deadline: UInt64, action: TimerAction) {
        self.deadline = deadline
        self.action = action
    }
}

/// A CPU's timers: a binary min-heap ordered by deadline, then by insertion order.
struct TimerQueue {
    private var heap: [(deadline: UInt64, seq: UInt64, node: TimerNode)] = []
    private var nextSeq: UInt64 = 0
    private(set) var live = 0

    var isEmpty: Bool { live == 0 }

    /// The earliest deadline of a timer that has not been cancelled.
    mutating func nextDeadline() -> UInt64? {
        while let top = heap.first, top.node.action == nil { _ = popTop() }
        return heap.first?.deadline
    }

    mutating func insert(_ node: TimerNode) {
        heap.append((node.deadline, nextSeq, node))
        nextSeq &+= 1
        live += 1
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(i, p) { heap.swapAt(i, p); i = p } else { break }
        }
    }

    /// Marks a timer cancelled; returns its action if it had not fired.
    mutating func cancel(_ node: TimerNode) -> TimerAction? {
        guard let a = node.action else { return nil }
        node.action = nil
        live -= 1
        return a
    }

    /// Removes and returns the actions of every timer due at `now`.
    mutating func popDue(now: UInt64, into out: inout [TimerAction]) {
        while let top = heap.first, top.deadline <= now || top.node.action == nil {
            let node = popTop()
            if let a = node.action {
                node.action = nil
                live -= 1
                out.append(a)
            }
        }
    }

    /// Removes every timer, returning the actions that had not fired.
    mutating func removeAll() -> [TimerAction] {
        var out: [TimerAction] = []
        for e in heap { if let a = e.node.action { e.node.action = nil; out.append(a) } }
        heap.removeAll()
        live = 0
        return out
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].deadline < heap[b].deadline || (heap[a].deadline == heap[b].deadline && heap[a].seq < heap[b].seq)
    }

    private mutating func popTop() -> TimerNode {
        let top = heap[0].node
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(l, m) { m = l }
                if r < heap.count && less(r, m) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
