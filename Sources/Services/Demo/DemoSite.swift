import VFS

/// The small site `libellula serve` shows when no `--root` is given, written into a MemFS
/// so the server needs nothing from the host.
public enum DemoSite {
    /// The files, by path.
    public static let files: [(String, String)] = [
        ("/index.html", """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>Libellula</title><link rel="stylesheet" href="/style.css"></head>
        <body><h1>Libellula</h1>
        <p>DragonFly BSD's LWKT SMP design as a Swift library OS. This page came out of a MemFS through the
        namecache, into a slab buffer, and out of a socket owned by the CPU that accepted your connection.</p>
        <ul>
        <li><a href="/_stats">Live statistics</a> (<a href="/_stats.json">JSON</a>)</li>
        <li><a href="/docs/">A directory without an index page</a></li>
        <li><a href="/hello.txt">hello.txt</a></li>
        </ul></body></html>

        """),
        ("/style.css", "body{font-family:system-ui,sans-serif;max-width:48em;margin:2em auto;line-height:1.5}\n"),
        ("/hello.txt", "hello\n"),
        ("/docs/lwkt.txt", "Each CPU runs its own threads; work for another CPU travels as an IPI message.\n"),
        ("/docs/slab.txt", "Per-CPU zones: allocating and freeing on the owning CPU takes no lock.\n"),
        ("/docs/namecache.txt", "A connected tree of names; `..` never climbs above the jail root.\n"),
    ]

    /// Writes the demo files under `root` (created if missing) in `vfs`.
    public static func install(in vfs: VirtualFileSystem, at root: String = "/") throws(VFSError) {
        let p = vfs.makeProcess()
        let base = root == "/" ? "" : root
        if !base.isEmpty { try? p.mkdir(base) }
        for (path, text) in files {
            var dir = ""
            for part in path.split(separator: "/").dropLast() {
                dir += "/" + part
                if (try? p.lookup(base + dir)) == nil { try p.mkdir(base + dir) }
            }
            let fd = try p.open(base + path, [.writeOnly, .create, .truncate])
            _ = try p.write(fd, Array(text.utf8))
            try p.close(fd)
        }
    }
}
