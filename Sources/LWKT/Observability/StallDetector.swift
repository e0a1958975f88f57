/// The stall watchdog's bookkeeping and wakeup schedule, without clocks or threads: fed the
/// CPUs' job sequence numbers at each look (see ``StallWatch``), it says which jobs are stalls
/// and when the next look must happen. ``StallWatchdog`` runs it on a real clock; the tests
/// run it on a simulated one.
///
/// # Why detection stays within the threshold plus `resolution`
///
/// Notation: `T` is the threshold, `R` the promised resolution (1 ms by default: the goal is
/// "detected within `T` + `R` of the job's start"), `p = R - 2m` the longest wait between two
/// looks while some CPU may start a job, `m` the wakeup margin (50 µs by default), and `L` how
/// late a look is against the time it asked for (its wakeup latency).
///
/// 1. *What the watchdog knows.* A CPU writes no time, only a sequence number (odd while a
///    job runs). A job that started at `s` is first seen at a look `f`, and the look before
///    (at `a`) saw another number, so `a < s <= f`. The only certain lower bound on its run
///    time at a later look `t` is `t - f`, so it is reported only once `t - f >= T`: there are
///    no false reports, and the reported duration never exceeds the real one.
///
/// 2. *Why polling cannot be replaced by "sleep until the next deadline" alone.* A job that
///    starts just after a look at `a` is certain to be a stall only at `f + T`, and it must
///    be reported by `s + T + R ~ a + T + R`; so `f - a <= R` for every gap in which some
///    CPU can start a job. With nothing but sequence numbers, no schedule with gaps longer
///    than `R` keeps the bound while a CPU is awake. (Sleeping until `now + T` with nothing
///    running, as a pure deadline scheme would, detects within `2T`, not `T + R`.)
///
/// 3. *The schedule.* After a look at `t` the next one is asked for at
///    `min(t + p, f_i + T for every CPU i running a job not yet reported)`. Then
///    `f <= a + p + L < s + p + L` (first sight), the deadline look happens at
///    `f + T + L`, and the job is reported by `s + T + p + 2L = s + T + R - 2(m - L)`:
///    within `T + R` whenever each wakeup is at most `m` late. (Looks later than that are
///    counted as ``StallStatistics/lateLooks``: the bound was not kept for them.)
///
/// 4. *Parking while every CPU sleeps.* A CPU in its idle sleep (its `sleeping` flag up)
///    cannot start a job until it leaves it, and every CPU clears the flag and then reads the
///    watchdog's parked word (both sequentially consistent) before it runs its next job. So
///    when, after `parkAfter` looks that found every CPU asleep, the watchdog raises the
///    parked word and then still finds every CPU asleep, it may sleep without a timer: the
///    first CPU to leave its sleep either was seen awake (and the watchdog does not park) or
///    sees the word raised and wakes the watchdog (a futex wake, once per parking) just
///    before it starts its first job. The first look after that is at most `L` after the
///    wake call, which precedes the job's start, so point 3 holds unchanged. Only CPUs lower
///    the word (and then wake every waiter), so two watchdogs of one system can share it. An idle system
///    costs the watchdog about one look per parking timeout (1 s) instead of one per `p`.
///
/// Costs on the CPUs: per job, the two stores of ``StallWatch`` (no clock read); per wakeup
/// from the idle sleep, one load of the parked word; per parking, at most one futex wake.
struct StallDetector {
    /// What a look concluded about one CPU.
    enum Verdict: Equatable {
        /// Nothing to report.
        case none
        /// A job became a stall at this look: it has run at least `elapsed` (counted from
        /// its first sight, `firstSeen`); its start was after `startedAfter`.
        case stall(elapsed: UInt64, firstSeen: UInt64, startedAfter: UInt64)
        /// The reported job is still running, for at least `elapsed`.
        case ongoing(elapsed: UInt64)
        /// The reported job has ended.
        case ended
    }

    /// When to look next.
    enum Next: Equatable {
        /// At this time (the clock of the looks).
        case at(UInt64)
        /// Park until a CPU leaves its sleep (every CPU was asleep at `parkAfter` looks).
        case park
    }

    struct PerCPU {
        /// The sequence number at the last look.
        var sequence: Int64 = 0
        /// When a look first saw the running job (meaningful while `sequence` is odd).
        var firstSeen: UInt64 = 0
        /// The look before that one (the job started after it).
        var startedAfter: UInt64 = 0
        /// The job already reported as a stall (-1: none).
        var flagged: Int64 = -1
    }

    let threshold: UInt64
    let resolution: UInt64
    let margin: UInt64
    let parkAfter: Int
    private(set) var cpus: [PerCPU]
    /// The time of the last completed look.
    private(set) var lastLook: UInt64
    /// Consecutive looks that found every CPU asleep.
    private(set) var quietLooks = 0

    /// The longest wait between two looks while some CPU is awake.
    var period: UInt64 { resolution > 2 * margin ? resolution - 2 * margin : max(1, resolution / 2) }

    /// - Parameters:
    ///   - cpus: CPUs watched.
    ///   - threshold: nanoseconds a job may run before it is a stall.
    ///   - resolution: nanoseconds by which detection may follow `start + threshold`.
    ///   - margin: wakeup lateness the schedule absorbs (at most `resolution / 4` is used).
    ///   - parkAfter: looks finding every CPU asleep before the watchdog parks (0: never).
    ///   - now: the time the watching starts.
    init(cpus: Int, threshold: UInt64, resolution: UInt64, margin: UInt64 = 50_000, parkAfter: Int = 2, now: UInt64) {
        self.threshold = threshold
        self.resolution = max(1, resolution)
        self.margin = min(margin, self.resolution / 4)
        self.parkAfter = parkAfter
        self.cpus = [PerCPU](repeating: PerCPU(), count: cpus)
        self.lastLook = now
    }

    /// The part of a look for CPU `i`, which showed sequence number `sequence` at `now`.
    mutating func observe(cpu i: Int, sequence: Int64, now: UInt64) -> Verdict {
        var c = cpus[i]
        defer { cpus[i] = c }
        var verdict = Verdict.none
        if c.flagged >= 0 && sequence != c.flagged {
            c.flagged = -1
            verdict = .ended
        }
        guard StallWatch.isRunning(sequence) else {
            c.sequence = sequence
            return verdict
        }
        if sequence != c.sequence {
            // A job this look is the first to see: it started after the previous look.
            c.sequence = sequence
            c.firstSeen = now
            c.startedAfter = lastLook
            return verdict
        }
        let elapsed = now &- c.firstSeen
        if c.flagged == sequence { return .ongoing(elapsed: elapsed) }
        guard elapsed >= threshold else { return verdict }
        c.flagged = sequence
        return .stall(elapsed: elapsed, firstSeen: c.firstSeen, startedAfter: c.startedAfter)
    }

    /// Ends a look taken at `now`; `allAsleep`: every CPU was in its idle sleep. Returns when
    /// to look next.
    mutating func finish(now: UInt64, allAsleep: Bool) -> Next {
        lastLook = now
        quietLooks = allAsleep ? quietLooks + 1 : 0
        if parkAfter > 0 && quietLooks >= parkAfter { return .park }
        var next = now &+ period
        for c in cpus where StallWatch.isRunning(c.sequence) && c.flagged != c.sequence {
            next = min(next, c.firstSeen &+ threshold)
        }
        return .at(next)
    }

    /// The watchdog parked at `lastLook` and is awake again: `woken` by a CPU leaving its
    /// sleep (it parks again only after `parkAfter` more quiet looks, which bounds how often
    /// CPUs pay the futex wake), or by the parking timeout (one quiet look parks it again).
    /// Jobs seen from now on started after the parking.
    mutating func unparked(woken: Bool) {
        quietLooks = woken ? 0 : max(0, parkAfter - 1)
    }
}
