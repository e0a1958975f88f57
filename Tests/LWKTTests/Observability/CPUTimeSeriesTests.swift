import CLibellula
import Foundation
@testable import LWKT
import Synchronization
import Testing

/// Per-CPU counters a test drives by hand (the channels' sources).
final class FakeCounters: @unchecked Sendable {
    let words: UnsafeMutablePointer<Int64>
    let count: Int
    init(_ count: Int) {
        self.count = count
        words = .allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
    }
    deinit { words.deallocate() }
    func set(_ i: Int, _ v: Int64) { lb_counter_store(words + i, v) }
    func get(_ i: Int) -> Int64 { lb_counter_load(words + i) }
}

@Suite(.serialized) struct CPUTimeSeriesTests {
    /// Rates are per second over the time between two records, gauges are the reading,
    /// and the CPUs' rings merge by second.
    @Test func ratesGaugesAndMergeBySecond() throws {
        let system = try LWKT.boot(cpus: 2)
        defer { _ = try? system.shutdownBlocking() }
        let counter = FakeCounters(2), level = FakeCounters(2)
        let series = CPUTimeSeries(system: system, channels: [
            .init(name: "requests", kind: .rate) { counter.get($0) },
            .init(name: "busy_percent", kind: .rate, scale: 100 / 1e9) { counter.get($0) },
            .init(name: "depth", kind: .gauge) { level.get($0) },
        ], capacity: 4)
        let s: UInt64 = 1_000_000_000
        for cpu in 0..<2 { series.record(cpu: cpu, now: 10 * s, second: 100, first: true) }
        // CPU 0: +500 in 1 s, then +300 in 0.5 s; CPU 1: +40 in 2 s (it missed second 101).
        counter.set(0, 500); level.set(0, 7)
        series.record(cpu: 0, now: 11 * s, second: 101, first: false)
        counter.set(0, 800); level.set(0, 2)
        series.record(cpu: 0, now: 11 * s + s / 2, second: 102, first: false)
        counter.set(1, 40); level.set(1, 3)
        series.record(cpu: 1, now: 12 * s, second: 102, first: false)
        let m = series.merged()
        #expect(m.map(\.second) == [101, 102])
        #expect(m[0].values[0] == [500, 0] && m[0].present == [true, false])
        #expect(m[0].values[2] == [7, 0])
        #expect(m[1].values[0] == [600, 20] && m[1].present == [true, true])
        #expect(abs(m[1].values[1][1] - 20 * 100 / 1e9) < 1e-12)
        #expect(m[1].values[2] == [2, 3])
        #expect(m[0].seconds == [1, 0] && m[1].seconds == [0.5, 2])
        #expect(series.channelIndex("depth") == 2 && series.channelIndex("nope") == nil)
    }

    /// A recorder's wakeup counts as the nearest second, and it sleeps to the boundary after
    /// that one: a timer firing just before a boundary cannot record the same second twice.
    @Test func wakeupsRoundToTheNearestSecond() {
        let s: UInt64 = 1_000_000_000
        #expect(CPUTimeSeries.second(of: 100 * s) == 100)
        #expect(CPUTimeSeries.second(of: 100 * s - 1_000) == 100)      // 1 µs early
        #expect(CPUTimeSeries.second(of: 100 * s + 499_999_999) == 100)
        #expect(CPUTimeSeries.second(of: 100 * s + 500_000_000) == 101)
        // Woken 1 µs before second 100: that is second 100's sample; the next is at 101.
        #expect(CPUTimeSeries.sleepToNextSecond(from: 100 * s - 1_000) == s + 1_000)
        #expect(CPUTimeSeries.sleepToNextSecond(from: 100 * s + 2_000) == s - 2_000)
        // Started mid-second: the first window runs to the boundary after the nearest one.
        #expect(CPUTimeSeries.sleepToNextSecond(from: 100 * s + 600_000_000) == s + 400_000_000)
    }

    /// Sampled levels: the mean and the largest of the readings taken during the second
    /// (each `sample` and the one at `record`), and the readings start over each second.
    @Test func sampledLevelsGiveMeanAndLargest() throws {
        let system = try LWKT.boot(cpus: 1)
        defer { _ = try? system.shutdownBlocking() }
        let level = FakeCounters(1)
        let series = CPUTimeSeries(system: system, channels: [
            .init(name: "mean", kind: .mean) { level.get($0) },
            .init(name: "max", kind: .max) { level.get($0) },
            .init(name: "last", kind: .gauge) { level.get($0) },
        ])
        let s: UInt64 = 1_000_000_000
        series.record(cpu: 0, now: s, second: 1, first: true)
        for v: Int64 in [4, 0, 9, 3] { level.set(0, v); series.sample(cpu: 0) }
        level.set(0, 4)
        series.record(cpu: 0, now: 2 * s, second: 2, first: false)  // readings 4, 0, 9, 3, 4
        level.set(0, 1)
        series.record(cpu: 0, now: 3 * s, second: 3, first: false)  // only the closing reading
        let m = series.merged()
        #expect(m.map(\.second) == [2, 3])
        #expect(m[0].values[0] == [4] && m[0].values[1] == [9] && m[0].values[2] == [4])
        #expect(m[1].values[0] == [1] && m[1].values[1] == [1] && m[1].values[2] == [1])
    }

    /// A full ring keeps the last `capacity` seconds.
    @Test func ringKeepsTheLastCapacitySeconds() throws {
        let system = try LWKT.boot(cpus: 1)
        defer { _ = try? system.shutdownBlocking() }
        let counter = FakeCounters(1)
        let series = CPUTimeSeries(system: system, channels: [.init(name: "n", kind: .rate) { counter.get($0) }], capacity: 5)
        let s: UInt64 = 1_000_000_000
        series.record(cpu: 0, now: s, second: 0, first: true)
        for k in 1...12 {
            counter.set(0, Int64(k * k))
            series.record(cpu: 0, now: UInt64(k + 1) * s, second: Int64(k), first: false)
        }
        let m = series.merged()
        let seconds: [Int64] = [8, 9, 10, 11, 12]
        let rates: [Double] = [15, 17, 19, 21, 23]  // k² - (k-1)² per second
        #expect(m.map(\.second) == seconds)
        #expect(m.map { $0.values[0][0] } == rates)
    }

    /// A reader merging while the writer records never sees a torn slot: every channel of
    /// a slot is written with the slot's second, so a mix of two writes would show.
    /// (Bounded: 20,000 records against concurrent reads.)
    @Test func readersNeverSeeATornSlot() async throws {
        let system = try LWKT.boot(cpus: 1)
        defer { _ = try? system.shutdownBlocking() }
        let current = FakeCounters(1)
        let channels = (0..<6).map { k in CPUTimeSeries.Channel(name: "c\(k)", kind: .gauge) { current.get($0) } }
        let series = CPUTimeSeries(system: system, channels: channels, capacity: 3)
        series.record(cpu: 0, now: 1, second: 0, first: true)
        let done = Atomic<Bool>(false)
        let writer = Thread {
            for k in 1...20_000 {
                current.set(0, Int64(k))
                series.record(cpu: 0, now: UInt64(k + 1), second: Int64(k), first: false)
            }
            done.store(true, ordering: .releasing)
        }
        writer.start()
        var reads = 0, torn = 0
        while !done.load(ordering: .acquiring) && reads < 1_000_000 {
            for sample in series.merged() {
                for k in 0..<6 where sample.values[k][0] != Double(sample.second) { torn += 1 }
            }
            reads += 1
        }
        #expect(torn == 0, "\(torn) torn values in \(reads) reads")
        #expect(series.merged().map(\.second) == [19_998, 19_999, 20_000])
    }

    /// The live recorders: one thread per CPU records each second, with the scheduler's
    /// channels (the ready-queue depth among them).
    @Test func recordersRecordEverySecondOnEveryCPU() async throws {
        let system = try LWKT.boot(cpus: 2)
        let series = CPUTimeSeries(system: system, channels: CPUTimeSeries.schedulerChannels(system))
        series.start()
        let deadline = ContinuousClock.now + .seconds(10)
        while series.merged().filter({ $0.present == [true, true] }).count < 2 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        series.stop()
        try await system.shutdown()
        let both = series.merged().filter { $0.present == [true, true] }
        #expect(both.count >= 2)
        #expect(series.channels.map(\.name) == ["ipis", "busy_percent", "ready_depth", "ready_depth_max"])
        for s in both {
            #expect(s.values[1].allSatisfy { $0 >= 0 && $0 <= 100.5 })
            #expect(s.values[2].allSatisfy { $0 >= 0 })
            #expect(zip(s.values[2], s.values[3]).allSatisfy { $0 <= $1 })  // mean ≤ largest
        }
    }
}

@Suite struct StallWatchWordsTests {
    /// The run loop's words: the sequence is odd while a job runs, even between jobs; the
    /// thread's block is stored at begin and by a first-run attach; the words fill one
    /// cache line of their own.
    @Test func parityAndAttach() {
        let w = StallWatch.allocate()
        defer { w.deallocate() }
        #expect(Int(bitPattern: w) % 64 == 0)
        #expect(!StallWatch.isRunning(w[0]))
        StallWatch.begin(w, nil)
        #expect(StallWatch.isRunning(w[0]) && w[1] == 0)
        let block = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        defer { block.deallocate() }
        StallWatch.attach(w, block)
        #expect(w[1] == Int64(Int(bitPattern: block)))
        StallWatch.end(w)
        #expect(!StallWatch.isRunning(w[0]) && w[0] == 2)
        StallWatch.attach(w, block)  // no job: ignored
        StallWatch.begin(w, block)
        #expect(w[0] == 3 && w[1] == Int64(Int(bitPattern: block)))
        StallWatch.end(w)
    }
}
