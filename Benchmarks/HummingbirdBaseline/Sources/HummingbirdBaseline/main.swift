// Usage: HummingbirdBaseline ROOT PORT THREADS
// Serves ROOT on 127.0.0.1:PORT with THREADS NIO event loops and Hummingbird's FileMiddleware.
import Hummingbird
import NIOPosix

let args = CommandLine.arguments
guard args.count == 4, let port = Int(args[2]), let threads = Int(args[3]) else {
    print("usage: HummingbirdBaseline ROOT PORT THREADS")
    exit(2)
}
let router = Router()
router.middlewares.add(FileMiddleware(args[1], searchForIndexHtml: true))
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "hummingbird"),
    eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup(numberOfThreads: threads))
)
try await app.runService()
