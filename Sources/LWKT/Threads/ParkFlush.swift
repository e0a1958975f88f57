import CLibellula

// Park flushes: work a job leaves for the moment its thread gives up the CPU.
//
// Rules of this file:
// - A ``ParkFlush`` record belongs to a module (one record per CPU it uses). It is armed
//   only on a CPU thread and then sits on THAT CPU's list (`Globaldata.parkFlushes`) until
//   that CPU runs it; only that CPU's thread touches the list and the armed record
//   (checked by a debug assertion in `arm()`).
// - The CPU runs its armed records, in one pass, when the running job returns to the run
//   loop (the thread parked in tsleep, waited on anything, yielded, migrated or exited),
//   when it is about to go idle, and in `LWKT.yield()` (a preemption point even when
//   nothing else is ready). So armed work never waits for a timer or another thread: it
//   runs before any other job of the CPU.
// - Cost when nothing is armed: one load and a not-taken branch per job. Arming allocates
//   nothing: the record is linked into the list.
// - A module that stops takes its records off their lists on their CPUs (`disarm()`, or
//   runs them with `CPU.flushParkWork()`) and makes sure nothing arms them again before
//   `deallocate()` (which disarms too when called on the record's CPU).
//
// It is the user-space analogue of the block layer's plug that Linux flushes when a task
// sleeps: the first user is TCP, whose small socket writes wait here so that a close()
// or another write made before the thread parks leaves in the same segment.

/// What a CPU calls for an armed ``ParkFlush``: `(context, index of the CPU)`.
public typealias ParkFlushFunction = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

/// A park-flush record in raw memory (see the rules at the top of ParkFlush.swift).
@usableFromInline
struct ParkFlushRecord {
    /// The next armed record of the same CPU.
    @usableFromInline var next: UnsafeMutablePointer<ParkFlushRecord>?
    /// The globaldata of the CPU whose list holds the record; nil while not armed.
    @usableFromInline var armedOn: UnsafeMutableRawPointer?
    @usableFromInline let function: ParkFlushFunction
    @usableFromInline var context: UnsafeMutableRawPointer?
}

/// Work a module leaves for the moment the running job gives up its CPU (the thread
/// parks, waits, yields, migrates or exits) or the CPU goes idle — whichever comes first.
///
/// ``arm()`` links the record into the calling CPU's list; the CPU then calls `function`
/// once, on itself, before it runs any other job. Use it to hold output that more calls
/// of the same job may still add to, without ever letting it wait for a timer. A handle;
/// copies name the same record. Create one per CPU that may arm it.
public struct ParkFlush: @unchecked Sendable {
    @usableFromInline let record: UnsafeMutablePointer<ParkFlushRecord>

    /// Allocates a record that calls `function(context, cpu)` when it runs.
    public init(context: UnsafeMutableRawPointer? = nil, _ function: ParkFlushFunction) {
        record = .allocate(capacity: 1)
        record.initialize(to: ParkFlushRecord(next: nil, armedOn: nil, function: function, context: context))
    }

    /// The context passed to the function. Set it before the record can be armed.
    public var context: UnsafeMutableRawPointer? {
        get { record.pointee.context }
        nonmutating set { record.pointee.context = newValue }
    }

    /// Whether the record waits on a CPU's list (read it on that CPU).
    public var isArmed: Bool { record.pointee.armedOn != nil }

    /// Arms the record on the calling CPU (a no-op if it is armed already). Returns false
    /// off a CPU, where nothing would run it: the caller then does the work itself.
    @inlinable @inline(__always) @discardableResult
    public func arm() -> Bool {
        guard let l = CPU.currentLocal else { return false }
        if let on = record.pointee.armedOn {
            assert(on == UnsafeMutableRawPointer(l), "ParkFlush armed on two CPUs")
            return true
        }
        record.pointee.armedOn = UnsafeMutableRawPointer(l)
        record.pointee.next = l.pointee.parkFlushes
        l.pointee.parkFlushes = record
        return true
    }

    /// Takes the record off the calling CPU's list without running it. Returns false if
    /// it is armed on another CPU (or the caller is not a CPU); true if it is not armed now.
    @discardableResult
    public func disarm() -> Bool {
        guard let on = record.pointee.armedOn else { return true }
        guard let l = CPU.currentLocal, on == UnsafeMutableRawPointer(l) else { return false }
        if l.pointee.parkFlushes == record {
            l.pointee.parkFlushes = record.pointee.next
        } else {
            var prev = l.pointee.parkFlushes
            while let p = prev, p.pointee.next != record { prev = p.pointee.next }
            prev?.pointee.next = record.pointee.next
        }
        record.pointee.next = nil
        record.pointee.armedOn = nil
        return true
    }

    /// Frees the record, taking it off the calling CPU's list first. A record still armed
    /// on another CPU cannot be freed from here: it is left to that CPU with no context
    /// (its function must then do nothing), a leak of a few words.
    public func deallocate() {
        guard disarm() else {
            record.pointee.context = nil
            return
        }
        record.deinitialize(count: 1)
        record.deallocate()
    }
}

extension CPU {
    /// Runs the calling CPU's armed park flushes now (the run loop does it whenever a job
    /// returns; a module that stops calls it on each of its CPUs). A no-op off a CPU.
    public static func flushParkWork() {
        guard let l = currentLocal, l.pointee.parkFlushes != nil else { return }
        runParkFlushes(l)
    }

    /// Runs and disarms every armed record of this CPU. A function may arm records again
    /// (they run in a further pass, at most three more; beyond that they wait for the
    /// next job's end).
    @usableFromInline @inline(never)
    static func runParkFlushes(_ l: UnsafeMutablePointer<Globaldata>) {
        var passes = 0
        while passes < 4, let head = l.pointee.parkFlushes {
            passes += 1
            l.pointee.parkFlushes = nil
            var r: UnsafeMutablePointer<ParkFlushRecord>? = head
            while let rec = r {
                r = rec.pointee.next
                rec.pointee.next = nil
                rec.pointee.armedOn = nil
                rec.pointee.function(rec.pointee.context, l.pointee.cpuID)
            }
        }
    }
}
