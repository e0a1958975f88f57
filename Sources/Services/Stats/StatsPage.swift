/// Placeholder replaced below.
enum StatsPage {
    static func render(_ s: ServerStatistics) -> String { "" }
}
