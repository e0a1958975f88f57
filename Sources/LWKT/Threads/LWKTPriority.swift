/// DragonFly's fixed LWKT priority bands, lowest first. A CPU always runs the highest
/// band that has a ready job, round robin within a band.
public enum LWKTPriority: Int, Sendable, Comparable, CaseIterable, Codable {
    case idle = 0
    case user = 1
    case kernel = 2
    case softInterrupt = 3
    case interrupt = 4

    public static func < (a: LWKTPriority, b: LWKTPriority) -> Bool { a.rawValue < b.rawValue }

    /// The Swift task priority that carries this band through the concurrency runtime.
    public var taskPriority: TaskPriority { TaskPriority(rawValue: Self.taskPriorityValues[rawValue]) }

    static let taskPriorityValues: [UInt8] = [9, 21, 25, 28, 31]

    /// The band a job's task priority falls in: background → idle, up to medium → user,
    /// high → kernel, then soft-interrupt and interrupt above it.
    @inlinable
    static func band(ofRaw raw: UInt8) -> Int {
        if raw < 17 { return raw == 0 ? 1 : 0 }   // 0 means "unspecified": treat as user
        if raw <= 21 { return 1 }
        if raw <= 25 { return 2 }
        if raw <= 28 { return 3 }
        return 4
    }

    /// The number of bands.
    public static let bandCount = 5
}
