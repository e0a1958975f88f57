import Testing
@testable import NetStack
import LibellulaTestSupport

/// The per-CPU TCP timer heap pops entries in deadline order, whatever the order of pushes.
@Suite struct TCPTimerHeapTests {
    @Test func popsInDeadlineOrder() {
        var rng = SeededRandom(seed: 99)
        var heap = TCPTimerHeap<Int>()
        var pushed: [UInt64] = []
        for round in 0..<4 {
            for i in 0..<500 {
                let d = UInt64.random(in: 1...10_000, using: &rng)
                heap.push(d, round * 1000 + i)
                pushed.append(d)
            }
            // Pop some between rounds: what comes out is always the smallest left.
            for _ in 0..<200 {
                guard let (d, _) = heap.pop() else { Issue.record("empty"); return }
                let smallest = pushed.min() ?? 0
                #expect(d == smallest)
                pushed.remove(at: pushed.firstIndex(of: smallest) ?? 0)
            }
        }
        #expect(heap.count == pushed.count)
        var last: UInt64 = 0
        while let (d, _) = heap.pop() { #expect(d >= last); last = d }
        #expect(heap.count == 0 && heap.earliest == nil)
    }
}
