@testable import LWKT
import Testing
import LibellulaTestSupport

/// The stall watchdog's schedule on a simulated clock: no thread, no real time, so the
/// detection bound (threshold + resolution from a job's start) is checked exactly.
@Suite struct StallDetectorTests {
    static let ms: UInt64 = 1_000_000
    static let us: UInt64 = 1_000

    /// A job first seen at a look is reported by a look asked for exactly threshold later,
    /// not at the next regular look after that.
    @Test func deadlineLookIsScheduledAtFirstSightPlusThreshold() {
        var d = StallDetector(cpus: 1, threshold: 5 * Self.ms, resolution: Self.ms, now: 0)
        #expect(d.period == 900 * Self.us)
        #expect(d.observe(cpu: 0, sequence: 0, now: 100) == .none)
        #expect(d.finish(now: 100, allAsleep: false) == .at(100 + 900 * Self.us))
        // Job 1 starts; seen first at t0.
        let t0: UInt64 = 1_000_000
        #expect(d.observe(cpu: 0, sequence: 1, now: t0) == .none)
        var next = d.finish(now: t0, allAsleep: false)
        #expect(next == .at(t0 + 900 * Self.us))
        // Regular looks while it runs, until the deadline is nearer than a period.
        var t = t0
        while case .at(let x) = next, x < t0 + 5 * Self.ms {
            t = x
            #expect(d.observe(cpu: 0, sequence: 1, now: t) == .none)
            next = d.finish(now: t, allAsleep: false)
        }
        #expect(next == .at(t0 + 5 * Self.ms))
        #expect(d.observe(cpu: 0, sequence: 1, now: t0 + 5 * Self.ms) == .stall(elapsed: 5 * Self.ms, firstSeen: t0, startedAfter: 100))
        // Reported: no more deadline for it, it is followed at the regular period.
        #expect(d.finish(now: t0 + 5 * Self.ms, allAsleep: false) == .at(t0 + 5 * Self.ms + 900 * Self.us))
        #expect(d.observe(cpu: 0, sequence: 1, now: t0 + 6 * Self.ms) == .ongoing(elapsed: 6 * Self.ms))
        // It ends and the next job is already running: the end is reported, the new one is
        // timed from this look.
        #expect(d.observe(cpu: 0, sequence: 3, now: t0 + 7 * Self.ms) == .ended)
        #expect(d.finish(now: t0 + 7 * Self.ms, allAsleep: false) == .at(t0 + 7 * Self.ms + 900 * Self.us))
    }

    /// Back-to-back short jobs never look like one long job: each has its own number.
    @Test func successiveShortJobsAreNotAStall() {
        var d = StallDetector(cpus: 1, threshold: 5 * Self.ms, resolution: Self.ms, now: 0)
        var t: UInt64 = 0
        for k in 0..<100 {
            t += 900 * Self.us
            #expect(d.observe(cpu: 0, sequence: Int64(2 * k + 1), now: t) == .none)
            _ = d.finish(now: t, allAsleep: false)
        }
    }

    /// The watchdog parks only after `parkAfter` looks that found every CPU asleep, and a
    /// timeout wakeup lets it park again after one quiet look.
    @Test func parksOnlyWhenEveryCPUSleeps() {
        var d = StallDetector(cpus: 2, threshold: 5 * Self.ms, resolution: Self.ms, parkAfter: 2, now: 0)
        #expect(d.finish(now: 1, allAsleep: true) == .at(1 + 900 * Self.us))
        #expect(d.finish(now: 2, allAsleep: false) == .at(2 + 900 * Self.us))
        #expect(d.finish(now: 3, allAsleep: true) == .at(3 + 900 * Self.us))
        #expect(d.finish(now: 4, allAsleep: true) == .park)
        d.unparked(woken: false)
        #expect(d.finish(now: 5, allAsleep: true) == .park)
        d.unparked(woken: true)
        #expect(d.finish(now: 6, allAsleep: true) == .at(6 + 900 * Self.us))
        #expect(d.finish(now: 7, allAsleep: true) == .park)
    }

    /// Randomized timelines on 3 simulated CPUs (short jobs, back-to-back jobs, jobs near and
    /// far over the threshold, idle sleeps, wakeups up to the margin late, an adversary that
    /// starts long jobs right after a look): every job that runs at least threshold +
    /// resolution is reported no later than threshold + resolution after its start; nothing
    /// shorter than the threshold is ever reported; a reported duration never exceeds the
    /// real one.
    @Test(arguments: [1, 2, 3, 4, 5, 6]) func detectionBoundHoldsOnSimulatedTimelines(seed: UInt64) {
        for (threshold, resolution) in [(5 * Self.ms, Self.ms), (20 * Self.ms, Self.ms), (2 * Self.ms, 500 * Self.us)] {
            var sim = StallSimulation(seed: seed, cpus: 3, threshold: threshold, resolution: resolution, lateness: 50 * Self.us)
            let r = sim.run(horizon: 3_000 * Self.ms)
            #expect(r.falseReports.count == 0, "reported short jobs: \(Array(r.falseReports.prefix(3)))")
            #expect(r.overstated.count == 0, "durations over the real ones: \(Array(r.overstated.prefix(3)))")
            #expect(r.missed.count == 0, "stalls detected late or never: \(Array(r.missed.prefix(3)))")
            #expect(r.checkedStalls > 20, "only \(r.checkedStalls) long jobs in the timeline")
            #expect(r.parks > 0 && r.looks < Int(3_000 * Self.ms / (resolution - 100 * Self.us)), "\(r.parks) parks, \(r.looks) looks")
        }
    }

    /// With wakeups later than the margin the bound can break; the simulation sees that
    /// (the check above is not vacuous).
    @Test func lateWakeupsCanBreakTheBound() {
        var missed = 0
        for seed in 1...6 as ClosedRange<UInt64> {
            var sim = StallSimulation(seed: seed, cpus: 3, threshold: 5 * Self.ms, resolution: Self.ms, lateness: 400 * Self.us)
            missed += sim.run(horizon: 3_000 * Self.ms).missed.count
        }
        #expect(missed > 0)
    }
}

/// A simulated system for ``StallDetector``: CPUs with job timelines, and the watchdog's
/// loop (look, schedule, park, wake) driven on a simulated clock.
struct StallSimulation {
    struct Job { var start: UInt64; var end: UInt64 }
    struct Result {
        var looks = 0
        var parks = 0
        var checkedStalls = 0
        var falseReports: [String] = []
        var overstated: [String] = []
        var missed: [String] = []
    }

    var rng: SeededRandom
    let cpus: Int
    let threshold: UInt64
    let resolution: UInt64
    let lateness: UInt64
    /// How long an idle CPU spins before it sleeps, and how long before a job it wakes.
    let spin: UInt64 = 50_000, wakeLead: UInt64 = 2_000

    init(seed: UInt64, cpus: Int, threshold: UInt64, resolution: UInt64, lateness: UInt64) {
        rng = SeededRandom(seed: seed)
        self.cpus = cpus
        self.threshold = threshold
        self.resolution = resolution
        self.lateness = lateness
    }

    /// A random job length: mostly short, some just under or over the threshold, a few long.
    mutating func length() -> UInt64 {
        switch rng.below(10) {
        case 0..<6: return rng.below(300_000)
        case 6..<9: return threshold - resolution + rng.below(3 * resolution)
        default: return threshold + rng.below(2 * threshold)
        }
    }

    /// A random gap between jobs: often none (back to back), else up to 4 ms.
    mutating func gap() -> UInt64 { rng.below(3) == 0 ? 0 : rng.below(4_000_000) }

    /// CPU `c`'s sequence number at `t` and whether it is awake (not in its idle sleep):
    /// `cursor` is the first job that has not ended `spin` before `t` (times only grow).
    func look(_ jobs: [Job], _ cursor: inout Int, at t: UInt64) -> (sequence: Int64, awake: Bool) {
        while cursor < jobs.count && jobs[cursor].end + spin < t { cursor += 1 }
        var ended = Int64(cursor)
        var awake = false
        for j in jobs[cursor...] {
            if t + wakeLead >= j.start && t <= j.end + spin { awake = true }
            if t >= j.end {
                ended += 1
            } else {
                return (t >= j.start ? 2 * ended + 1 : 2 * ended, awake)
            }
        }
        return (2 * ended, awake)
    }

    mutating func run(horizon: UInt64) -> Result {
        var timelines = [[Job]](repeating: [], count: cpus)
        for c in 0..<cpus {
            var t = 1_000_000 + rng.below(3_000_000)
            while t < horizon {
                let len = length()
                timelines[c].append(Job(start: t, end: t + len))
                t += len + gap()
                // Now and then a long idle stretch (every CPU asleep: the watchdog parks).
                if rng.below(8) == 0 { t += 20_000_000 + rng.below(50_000_000) }
            }
        }
        var result = Result()
        var detector = StallDetector(cpus: cpus, threshold: threshold, resolution: resolution, now: 0)
        var detected: [Int: [Int: UInt64]] = [:]  // cpu -> job index -> detection time
        var t: UInt64 = 0
        var cursors = [Int](repeating: 0, count: cpus)
        var idle: [Int] = []
        while t < horizon {
            result.looks += 1
            var allAsleep = true
            idle.removeAll(keepingCapacity: true)
            for c in 0..<cpus {
                let (seq, awake) = look(timelines[c], &cursors[c], at: t)
                if awake { allAsleep = false }
                if seq & 1 == 0 { idle.append(c) }
                if case .stall(let elapsed, _, _) = detector.observe(cpu: c, sequence: seq, now: t) {
                    let k = Int((seq - 1) / 2)
                    let job = timelines[c][k]
                    detected[c, default: [:]][k] = t
                    if t - job.start < threshold { result.falseReports.append("cpu \(c) job \(k): ran \(t - job.start) ns") }
                    if elapsed > t - job.start { result.overstated.append("cpu \(c) job \(k): \(elapsed) > \(t - job.start)") }
                }
            }
            // The adversary: now and then, an idle CPU starts a long job right after this look.
            if rng.below(40) == 0, let c = idle.first {
                let start = t + 1
                if let k = timelines[c][cursors[c]...].firstIndex(where: { $0.end > t }) {
                    // Only if the CPU's next job starts later than the long job would end.
                    let len = threshold + resolution + rng.below(threshold)
                    if timelines[c][k].start > start + len + wakeLead { timelines[c].insert(Job(start: start, end: start + len), at: k) }
                }
            }
            switch detector.finish(now: t, allAsleep: allAsleep) {
            case .at(let x):
                t = max(x, t + 1) + rng.below(lateness + 1)
            case .park:
                result.parks += 1
                // Every CPU is asleep now; the first to start a job wakes the watchdog just
                // before it (the job's start minus 1 µs), or the timeout does.
                var wake = UInt64.max
                for c in 0..<cpus {
                    if let j = timelines[c].first(where: { $0.start > t }) { wake = min(wake, j.start - 1_000) }
                }
                let timeout = t + UInt64(StallWatchdog.parkingTimeout)
                let woken = wake < timeout
                t = min(max(wake, t + 1), timeout) + rng.below(lateness + 1)
                detector.unparked(woken: woken)
            }
        }
        for c in 0..<cpus {
            for (k, job) in timelines[c].enumerated() where job.end - job.start >= threshold + resolution && job.end < horizon {
                result.checkedStalls += 1
                guard let d = detected[c]?[k] else {
                    result.missed.append("cpu \(c) job \(k) (\(job.start)–\(job.end)): not detected")
                    continue
                }
                if d > job.start + threshold + resolution {
                    result.missed.append("cpu \(c) job \(k): detected \(d - job.start - threshold) ns after start + threshold")
                }
            }
        }
        return result
    }
}

