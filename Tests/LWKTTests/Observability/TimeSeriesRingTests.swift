@testable import LWKT
import Testing

@Suite struct TimeSeriesRingTests {
    @Test func keepsTheLastCapacitySamplesInOrder() {
        var r = TimeSeriesRing<Int>(capacity: 5)
        #expect(r.elements.isEmpty && r.last == nil && r.count == 0)
        for i in 1...3 { r.append(i) }
        #expect(r.elements == [1, 2, 3] && r.last == 3)
        for i in 4...12 { r.append(i) }
        #expect(r.elements == [8, 9, 10, 11, 12])
        #expect(r.count == 5 && r.last == 12)
        // Every fill level and wrap position.
        for n in 0..<23 {
            var q = TimeSeriesRing<Int>(capacity: 7)
            for i in 0..<n { q.append(i) }
            #expect(q.elements == Array(max(0, n - 7)..<n), "after \(n)")
            #expect(q.last == (n == 0 ? nil : n - 1))
        }
        var one = TimeSeriesRing<Int>(capacity: 0)
        one.append(1); one.append(2)
        #expect(one.elements == [2] && one.capacity == 1)
    }
}
