/// An intrusive FIFO of messages linked through their state blocks. The queue holds a
/// reference to each message it contains. Not synchronised: its owner (a CPU, or a port's
/// lock) serialises access.
@usableFromInline
struct MessageQueue: @unchecked Sendable {
    var head: Unmanaged<Message>? = nil
    var tail: Unmanaged<Message>? = nil
    var count = 0

    var isEmpty: Bool { head == nil }

    mutating func push(_ m: Message) {
        let u = Unmanaged.passRetained(m)
        m.state.pointee.next = nil
        if let t = tail {
            t._withUnsafeGuaranteedRef { $0.state.pointee.next = u }
        } else {
            head = u
        }
        tail = u
        count += 1
    }

    mutating func pop() -> Message? {
        guard let h = head else { return nil }
        let m = h.takeRetainedValue()
        head = m.state.pointee.next
        if head == nil { tail = nil }
        m.state.pointee.next = nil
        count -= 1
        return m
    }

    /// Unlinks `m` if it is on this queue; returns whether it was.
    mutating func remove(_ m: Message) -> Bool {
        var prev: Unmanaged<Message>? = nil
        var cur = head
        while let c = cur {
            let next = c._withUnsafeGuaranteedRef { $0.state.pointee.next }
            if c.toOpaque() == Unmanaged.passUnretained(m).toOpaque() {
                if let p = prev {
                    p._withUnsafeGuaranteedRef { $0.state.pointee.next = next }
                } else {
                    head = next
                }
                if tail?.toOpaque() == c.toOpaque() { tail = prev }
                m.state.pointee.next = nil
                count -= 1
                c.release()
                return true
            }
            prev = c
            cur = next
        }
        return false
    }

    mutating func removeAll() {
        while pop() != nil {}
    }
}
