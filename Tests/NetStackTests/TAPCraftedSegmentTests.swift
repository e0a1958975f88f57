import Foundation
import Testing
import Synchronization
import LWKT
@testable import NetStack

extension Rig {
    /// Whether `/usr/bin/python3` can import scapy (package python3-scapy).
    static let scapy: Bool = available && run(python, ["-c", "import scapy.all"]).status == 0

    /// Makes the peer namespace's kernel keep quiet about connections scapy forges: its
    /// resets (for SYN-ACKs and data it knows nothing of) are dropped. Scapy sends on a
    /// packet socket, past netfilter, so the resets it forges still go out.
    static func silenceKernelResets(_ ns: String) -> (status: Int32, output: String) {
        run("/usr/sbin/ip", ["netns", "exec", ns, "nft", "add table inet quiet; add chain inet quiet out "
            + "{ type filter hook output priority 0; policy accept; }; add rule inet quiet out tcp flags rst drop"])
    }
}

/// Segments forged with scapy in the peer namespace against a Libellula server over the
/// TAP (root and python3-scapy only): RFC 5961 challenge ACKs, the ACK for out-of-window
/// data, zero-window probing, and a SYN flood answered with cookies while real Linux
/// connections still complete.
@Suite(.serialized, .enabled(if: Rig.scapy, "needs root, the TAP rig tools and python3-scapy (Scripts/test-deps.txt)"))
struct TAPCraftedSegmentTests {
    /// argv: server address, port. Opens a connection by hand (no timestamps, SACK or
    /// window scale), then checks the answers; prints one JSON object.
    static let craft = """
    import json, queue, random, sys, time
    from scapy.all import conf, AsyncSniffer, Ether, IP, TCP, Raw, getmacbyip, sendp
    conf.verb = 0
    dst, dport = sys.argv[1], int(sys.argv[2])
    iface, src, hop = conf.route.route(dst)
    mac = getmacbyip(hop if hop != '0.0.0.0' else dst)
    sport = random.randint(40000, 60000)
    q = queue.Queue()
    sn = AsyncSniffer(iface=iface, store=False,
        lfilter=lambda p: IP in p and TCP in p and p[IP].src == dst and p[TCP].sport == dport and p[TCP].dport == sport,
        prn=lambda p: q.put(p[TCP]))
    sn.start(); time.sleep(0.5)
    def send(seq, ack, flags, window=65535, data=b'', options=None):
        t = TCP(sport=sport, dport=dport, seq=seq & 0xffffffff, ack=ack & 0xffffffff, flags=flags, window=window,
                options=options or [])
        sendp(Ether(dst=mac) / IP(src=src, dst=dst) / t / Raw(data) if data else Ether(dst=mac) / IP(src=src, dst=dst) / t, iface=iface)
    def expect(pred, timeout=2.0):
        end = time.time() + timeout
        while time.time() < end:
            try: t = q.get(timeout=max(0.01, end - time.time()))
            except queue.Empty: break
            if pred(t): return t
        return None
    def drain():
        while not q.empty(): q.get()
    out = {}
    isn = random.randint(1, 1 << 30)
    send(isn, 0, 'S', options=[('MSS', 1460)])
    sa = expect(lambda t: t.flags & 0x12 == 0x12)
    if sa is None:
        print(json.dumps({'handshake': False})); sys.exit(1)
    nxt, rn = isn + 1, sa.seq + 1
    send(nxt, rn, 'A'); time.sleep(0.3)
    is_ack = lambda t: t.flags & 0x04 == 0 and t.flags & 0x10 and t.ack == nxt & 0xffffffff and t.flags & 0x02 == 0
    # RFC 5961 §3.2: a reset inside the window but not at RCV.NXT gets a challenge ACK.
    drain(); send(nxt + 100, 0, 'R')
    out['challenge_rst'] = expect(is_ack) is not None
    # RFC 5961 §4.2: a SYN on an established connection gets a challenge ACK.
    drain(); send(isn + 5000, 0, 'S', options=[('MSS', 1460)])
    out['challenge_syn'] = expect(is_ack) is not None
    # RFC 9293 §3.10.7.4: data far outside the window gets an ACK (and is dropped).
    drain(); send(nxt + 5000000, rn, 'PA', data=b'x' * 10)
    out['ack_out_of_window'] = expect(is_ack) is not None
    # Zero window: ask for 1000 bytes while offering no window; the server must probe.
    drain(); send(nxt, rn, 'PA', window=0, data=b'go'); nxt += 2
    probes, deadline = 0, time.time() + 8
    while probes < 2 and time.time() < deadline:
        t = expect(lambda t: t.flags & 0x04 == 0, timeout=max(0.05, deadline - time.time()))
        if t is None: break
        if t.seq == rn & 0xffffffff and len(bytes(t.payload)) <= 1 and (len(bytes(t.payload)) == 1 or t.flags & 0x10):
            if len(bytes(t.payload)) == 1: probes += 1
            send(nxt, rn, 'A', window=0)
    out['probes'] = probes
    # Open the window and take the data in order.
    got = b''; send(nxt, rn, 'A', window=65535); deadline = time.time() + 10
    while len(got) < 1000 and time.time() < deadline:
        t = expect(lambda t: len(bytes(t.payload)) > 0, timeout=max(0.05, deadline - time.time()))
        if t is None: send(nxt, rn + len(got), 'A', window=65535); continue
        data, off = bytes(t.payload), (t.seq - rn) & 0xffffffff
        if off <= len(got) < off + len(data): got += data[len(got) - off:]
        send(nxt, rn + len(got), 'A', window=65535)
    out['window_data_ok'] = got == bytes(i % 251 for i in range(1000))
    send(nxt, rn + len(got), 'R'); sn.stop()
    print(json.dumps(out))
    """

    /// argv: server address, port, SYN count, legitimate connections. Floods SYNs from
    /// random ports, then opens real Linux connections that each echo a line; prints the
    /// number that completed.
    static let flood = """
    import random, socket, sys, time
    from scapy.all import conf, Ether, IP, TCP, getmacbyip, sendp
    conf.verb = 0
    dst, dport, n, legit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    iface, src, hop = conf.route.route(dst)
    mac = getmacbyip(hop if hop != '0.0.0.0' else dst)
    ports = random.sample(range(20000, 32000), n)
    pkts = [Ether(dst=mac) / IP(src=src, dst=dst) / TCP(sport=p, dport=dport, flags='S', seq=random.randint(0, 1 << 31),
            window=64240, options=[('MSS', 1460)]) for p in ports]
    sendp(pkts, iface=iface)
    ok = 0
    for i in range(legit):
        try:
            s = socket.create_connection((dst, dport), timeout=5)
            s.sendall(b'hello %d\\n' % i)
            if s.recv(64) == b'hello %d\\n' % i: ok += 1
            s.close()
        except OSError as e:
            print('error', e, file=sys.stderr)
    print(ok)
    """

    @Test(.timeLimit(.minutes(2))) func forgedSegmentsGetTheRFCAnswers() async throws {
        try await withTAPRig { rig in
            let quiet = Rig.silenceKernelResets(rig.peerNS)
            #expect(quiet.status == 0, "\(quiet.output)")
            let stack = rig.stack
            let listeners = try stack.listen(port: 8090)
            var threads: [LWKTThread] = []
            for l in listeners {
                threads.append(LWKTThread.spawn(on: try rig.system.cpu(l.cpuID), name: "crafted") {
                    guard let c = try? await l.accept(timeout: .seconds(20)) else { return }
                    var got: [UInt8] = []
                    while got.count < 2, let b = try? await c.read(max: 16, timeout: .seconds(15)), !b.isEmpty { got += b }
                    if got == Array("go".utf8) {
                        try? await c.write((0..<1000).map { UInt8($0 % 251) }, timeout: .seconds(15))
                    }
                    _ = try? await c.read(max: 16, timeout: .seconds(15))
                    c.abort()
                })
            }
            let r = Rig.python(in: rig.peerNS, Self.craft, ["10.200.2.1", "8090"])
            let json = (try? JSONSerialization.jsonObject(with: Data(r.output.utf8.split(separator: UInt8(ascii: "\n")).last.map(Array.init) ?? []))) as? [String: Any] ?? [:]
            #expect(r.status == 0, "\(r.output)")
            #expect(json["challenge_rst"] as? Bool == true, "in-window RST: no challenge ACK (\(r.output))")
            #expect(json["challenge_syn"] as? Bool == true, "SYN in ESTABLISHED: no challenge ACK (\(r.output))")
            #expect(json["ack_out_of_window"] as? Bool == true, "out-of-window data: no ACK (\(r.output))")
            #expect((json["probes"] as? Int ?? 0) >= 2, "zero-window probes seen: \(r.output)")
            #expect(json["window_data_ok"] as? Bool == true, "data after the window opened (\(r.output))")
            #expect(stack.counters.total(.tcpChallengeACKs) >= 2)
            #expect(stack.counters.total(.dropTCPOutOfWindow) >= 1)
            #expect(stack.counters.total(.tcpWindowProbes) >= 2)
            for l in listeners { try await rig.system.run(on: l.cpuID) { l.close() } }
            for t in threads { t.cancel() }
            for t in threads { await t.join() }
        }
    }

    @Test(.timeLimit(.minutes(2))) func synFloodIsAnsweredWithCookies() async throws {
        try await withTAPRig { rig in
            let quiet = Rig.silenceKernelResets(rig.peerNS)
            #expect(quiet.status == 0, "\(quiet.output)")
            let stack = rig.stack
            let listeners = try stack.listen(port: 8091, backlog: 512)
            var threads: [LWKTThread] = []
            for l in listeners {
                threads.append(LWKTThread.spawn(on: try rig.system.cpu(l.cpuID), name: "flood-echo") {
                    while let c = try? await l.accept(timeout: nil) {
                        if let b = try? await c.read(max: 64, timeout: .seconds(5)), !b.isEmpty {
                            try? await c.write(b, timeout: .seconds(5))
                        }
                        await c.close(linger: .seconds(1))
                    }
                })
            }
            let legit = 20
            let r = Rig.python(in: rig.peerNS, Self.flood, ["10.200.2.1", "8091", "1500", "\(legit)"])
            #expect(r.status == 0 && r.output.split(separator: "\n").last.map(String.init) == "\(legit)",
                    "legitimate connections during the flood: \(r.output)")
            #expect(stack.counters.total(.tcpCookiesSent) > 0, "the full SYN queues sent no cookies")
            #expect(stack.counters.total(.tcpCookiesAccepted) > 0, "no connection completed with a cookie")
            for l in listeners { try await rig.system.run(on: l.cpuID) { l.close() } }
            for t in threads { await t.join() }
        }
    }
}
