import LWKT
import Logging
import Slab
import VFS

/// What every connection of an ``HTTPServer`` shares, whatever the socket stack: the
/// configuration, the per-CPU VFS processes (jailed at the served root) and counters, the
/// slab allocator that holds connection buffers and file data, and the statistics source.
final class HTTPServerCore: @unchecked Sendable {
    let configuration: HTTPServerConfiguration
    let system: LWKTSystem
    let slab: SlabAllocator
    let bufferType: MallocType
    let vfs: VirtualFileSystem
    /// One process per CPU, each jailed at the root, so descriptor tables are not shared.
    let processes: [VFSProcess]
    let counters: [HTTPCounters]
    /// One open-file cache per CPU (host descriptors and attributes, as nginx's open_file_cache).
    let openFiles: [OpenFileCache]
    /// One hot-file cache per CPU.
    let caches: [HotFileCache]
    /// One Date field value per CPU, rendered at most once a second.
    let dates: [HTTPDateCache]
    let logger: Logger
    /// The connection handlers' entry in Giant's coverage report (they run MP-safe).
    let giantEntry = Giant.register("http.connection", mpSafe: true)
    /// Renders statistics; set by the server.
    var statistics: (@Sendable () -> ServerStatistics)?
    /// Rendered statistics documents, reused per CPU for `statisticsInterval`.
    let statisticsPages: StatisticsPageCache
    /// Per-second rates for five minutes, sampled off the CPUs.
    let sampler = StatisticsSampler()

    /// Bytes of each connection's input and output buffer: the largest slab size class
    /// below the zone limit, so they come from per-CPU zones rather than `mmap`.
    let inputCapacity: Int
    let outputCapacity = 16320

    init(configuration: HTTPServerConfiguration, system: LWKTSystem, slab: SlabAllocator, vfs: VirtualFileSystem,
         root: String, logger: Logger) throws(VFSError) {
        self.configuration = configuration
        self.system = system
        self.slab = slab
        self.vfs = vfs
        self.logger = logger
        bufferType = slab.makeType(name: "http-buffers")
        let base = vfs.makeProcess()
        try base.jail(root)
        processes = system.cpus.map { _ in base.fork() }
        counters = system.cpus.map { _ in HTTPCounters() }
        let budget = OpenFileCache.budgetPerCPU(cpus: system.cpuCount)
        openFiles = system.cpus.map { _ in OpenFileCache(budget: budget, validity: configuration.cacheValidity) }
        caches = system.cpus.map { _ in HotFileCache(validity: configuration.cacheValidity) }
        dates = system.cpus.map { _ in HTTPDateCache() }
        statisticsPages = StatisticsPageCache(cpuCount: system.cpuCount, interval: configuration.statisticsInterval)
        inputCapacity = max(16320, configuration.limits.maxHeaderBytes + 256, configuration.limits.maxRequestLine + 256)
    }
}
