import CLibellula

extension CPU {
    /// The CPU's scheduler loop (DragonFly's `lwkt_switch` plus its idle thread): drain the
    /// doorbell, run the highest-priority ready job, look at timers and descriptors every
    /// few jobs, and when nothing is ready spin for a while and then sleep in epoll with a
    /// protocol that cannot lose a wakeup.
    func runLoop() {
        lb_set_current_cpu(UnsafeMutableRawPointer(local))
        lb_set_thread_name("lwkt-\(name)")
        osThreadID = lb_gettid()
        if system.configuration.pin {
            let c = id % max(1, LWKT.onlineCores)
            if lb_pin_self(Int32(c)) == 0 { core = c }
        }
        system.cpuStarted()

        let l = local
        let s = signals
        let jobsPerPoll = system.configuration.jobsPerPoll
        let spinNanos = UInt64(max(0, system.spinNanos))
        let tickNanos = max(Int64(1_000), system.tickNanos)
        var jobsSincePoll = 0
        var burstStart = lb_now_ns()
        let timers = l.pointee.timers
        let events = l.pointee.events
        // Stall watchdog (Observability/StallWatch.swift): whether it was parked when this CPU
        // last left its idle sleep; if so it is woken before the next job.
        let dogParked = system.latencies.watchdogParked
        var wakeDog = false

        while true {
            if s.pointee.doorbell.load(ordering: .relaxed) != 0 {
                if _slowPath(wakeDog) { wakeDog = false; StallWatch.wakeWatchdog(dogParked) }
                l.pointee.critCount += 1
                StallWatch.begin(l.pointee.watch, nil)
                drainIPIs()
                StallWatch.end(l.pointee.watch)
                l.pointee.critCount -= 1
                // Frees done by IPI handlers may have started a remote-free batch too.
                if _slowPath(l.pointee.slab.pending != 0) { CPU.runSlabFlush(l) }
            }
            if let (job, band) = l.pointee.runq.pop() {
                if _slowPath(wakeDog) { wakeDog = false; StallWatch.wakeWatchdog(dogParked) }
                run(job, band: band)
                // The job returned (its thread parked, yielded or ended): work it left for
                // that moment runs before anything else (ParkFlush.swift).
                if _slowPath(l.pointee.parkFlushes != nil) { CPU.runParkFlushes(l) }
                if l.pointee.yielders.count > 0 { resumeYielders() }
                // The slab's batch of remote frees goes out when the job that built it ends.
                if _slowPath(l.pointee.slab.pending != 0) { CPU.runSlabFlush(l) }
                jobsSincePoll &+= 1
                if jobsSincePoll >= jobsPerPoll {
                    jobsSincePoll = 0
                    timers.fireDue(cpu: self, now: lb_now_ns())
                    if events.hasDescriptors { events.poll(cpu: self, timeout: 0) }
                }
                continue
            }
            jobsSincePoll = 0
            // Nothing ready: park flushes armed outside a job (an IPI handler), then timers
            // and descriptors.
            if _slowPath(l.pointee.parkFlushes != nil) { CPU.runParkFlushes(l); continue }
            var now = lb_now_ns()
            if timers.fireDue(cpu: self, now: now) > 0 { continue }
            if events.hasDescriptors && events.poll(cpu: self, timeout: 0) > 0 { continue }
            if s.pointee.stop.load(ordering: .acquiring) != 0 {
                timers.cancelEverything()
                sleepQueues.cancelEverything(cpu: self)
                events.cancelEverything(cpu: self)
                if l.pointee.runq.readyMask == 0 && s.pointee.doorbell.load(ordering: .sequentiallyConsistent) == 0 {
                    break
                }
                continue
            }
            counters.add(.busyNanos, Int64(now &- burstStart))
            // Spin, watching the doorbell, for the configured window.
            if spinNanos > 0 {
                let until = now &+ spinNanos
                let nextTimer = timers.nextDeadline() ?? UInt64.max
                // Descriptors are polled while spinning too (every 256 turns, a few µs), or a
                // CPU serving sockets would notice readiness only when its spin window ends.
                let watchFDs = events.hasDescriptors
                var spins = 0
                var gotIO = false
                while s.pointee.doorbell.load(ordering: .relaxed) == 0 {
                    lb_cpu_relax()
                    spins &+= 1
                    if spins & 63 == 0 {
                        now = lb_now_ns()
                        if now >= until || now >= nextTimer { break }
                        if watchFDs && spins & 255 == 0 && events.poll(cpu: self, timeout: 0) > 0 {
                            gotIO = true
                            break
                        }
                    }
                }
                counters.add(.idleSpins)
                if gotIO || s.pointee.doorbell.load(ordering: .relaxed) != 0 {
                    burstStart = lb_now_ns()
                    continue
                }
            }
            // Announce sleep, then look once more: a sender that missed the flag has
            // already rung the doorbell, one that sees it will wake us.
            s.pointee.sleeping.store(1, ordering: .sequentiallyConsistent)
            if s.pointee.doorbell.load(ordering: .sequentiallyConsistent) != 0
                || s.pointee.stop.load(ordering: .sequentiallyConsistent) != 0 {
                s.pointee.sleeping.store(0, ordering: .sequentiallyConsistent)
                wakeDog = StallWatch.watchdogParked(dogParked)
                burstStart = lb_now_ns()
                continue
            }
            now = lb_now_ns()
            var timeout = tickNanos
            if let next = timers.nextDeadline() {
                timeout = next <= now ? 0 : min(timeout, Int64(clamping: next &- now))
            }
            counters.add(.sleeps)
            events.poll(cpu: self, timeout: timeout)
            s.pointee.sleeping.store(0, ordering: .sequentiallyConsistent)
            wakeDog = StallWatch.watchdogParked(dogParked)
            burstStart = lb_now_ns()
            counters.add(.sleepNanos, Int64(burstStart &- now))
        }
        counters.add(.busyNanos, Int64(lb_now_ns() &- burstStart))
        lb_set_current_cpu(nil)
        system.cpuExited()
    }

    @inline(__always)
    func run(_ q: QueuedJob, band: Int) {
        let l = local
        l.pointee.currentBand = band
        counters.add(band)
        let stats = l.pointee.threads.lookup(UInt(bitPattern: q.job))
        // Tokens: a thread whose tokens were released when it suspended takes them all
        // back before it runs; if one is contended the thread waits at the tail of its
        // band and the CPU runs something else.
        if let st = stats, st[LWKTThread.tokensReleased] != 0, !Token.schedulerReacquire(st) {
            counters.add(.tokenContended)
            l.pointee.runq.push(q, band: band)
            return
        }
        l.pointee.runningThreadStats = stats
        let t0: UInt64 = stats == nil ? 0 : lb_cycles()
        let job = unsafeBitCast(q.job, to: UnownedJob.self)
        StallWatch.begin(l.pointee.watch, stats)
        defer { StallWatch.end(l.pointee.watch) }
        if q.tag & 1 != 0 {
            counters.add(.actorJobs)
            job.runSynchronously(isolatedTo: unownedSerial, taskExecutor: unownedTask)
        } else {
            job.runSynchronously(on: unownedTask)
        }
        // The thread may have exited inside the job; it clears this pointer when it does.
        if let st = l.pointee.runningThreadStats {
            lb_counter_add(st, 1)
            // (nil `stats`: the thread attached inside this job, which was not timed.)
            if stats != nil { lb_counter_add(st + 1, Int64(bitPattern: lb_cycles() &- t0)) }
            l.pointee.runningThreadStats = nil
            // The job returned and the thread is still alive: it suspended, so its tokens
            // are released until it runs again (DragonFly's switch does the same).
            if st[LWKTThread.physicalTokens] != 0 { Token.schedulerRelease(st) }
        }
    }

    func resumeYielders() {
        let l = local
        let n = l.pointee.yielders.count
        l.pointee.yielders.count = 0
        for i in 0..<n {
            (l.pointee.yielders.items + i).move().resume()
        }
    }
}
