#!/usr/bin/env bash
# Where the CPU goes: `perf record -g` of `serve --net tap` and of `serve --net host` (the
# server process only: its threads, its system calls and the softirq work done inside
# them) under the same wrk load from the rig's peer namespace, then the self time summed
# into buckets (TAP I/O, own TCP, kernel TCP/IP, HTTP, LWKT scheduling, refcounting,
# malloc, copies, checksum) as a Markdown table, in percent and in µs per request (samples
# at 2999 Hz over the 4-second window, divided by the requests answered in it).
#
# Usage: [FILE=f4k.bin] Scripts/perf-serve-net.sh [keepalive|close]   (close: a new connection
# per request; FILE: hello.txt, 6 bytes, by default, or f4k.bin, 4 KiB)
# Needs root, perf, wrk, python3; BIN=path/to/libellula (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-keepalive}
P=lbperf
if [ -z "${BIN:-}" ]; then
  swift build -c release --product libellula >/dev/null
  BIN=$(swift build -c release --show-bin-path)/libellula
fi
WORK=$(mktemp -d /tmp/libellula-perf-net.XXXXXX)
SP=
cleanup() {
  if [ -n "$SP" ]; then kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; fi
  Scripts/netrig.sh down $P >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
EXTRA=()
[ "$MODE" = close ] && EXTRA=(-H "Connection: close")
Scripts/netrig.sh up $P >/dev/null
Scripts/netrig.sh tap $P $P-tap single >/dev/null
mkdir -p "$WORK/www"; printf 'hello\n' > "$WORK/www/hello.txt"; head -c 4096 /dev/urandom > "$WORK/www/f4k.bin"
FILE=${FILE:-hello.txt}
for label in tap host; do
  if [ $label = tap ]; then ip=10.200.2.1; args=(--net tap:$P-tap); else ip=10.200.1.254; args=(--http 10.200.1.254:8080); fi
  ip netns exec $P-rtr taskset -c 0 "$BIN" serve --cpus 1 "${args[@]}" --root "$WORK/www" --no-memcached --log-level warning > "$WORK/$label.log" 2>&1 &
  SP=$!
  for _ in $(seq 1 100); do ip netns exec $P-peer bash -c "exec 3<>/dev/tcp/$ip/8080" 2>/dev/null && break; sleep 0.1; done
  ip netns exec $P-peer taskset -c 1 wrk -t1 -c64 -d1s "${EXTRA[@]}" "http://$ip:8080/$FILE" > /dev/null
  ip netns exec $P-peer taskset -c 1 wrk -t1 -c64 -d6s "${EXTRA[@]}" "http://$ip:8080/$FILE" > "$WORK/$label.wrk" &
  W=$!
  sleep 1
  perf record -q -F 2999 -p "$SP" -g -o "$WORK/$label.data" -- sleep 4 >/dev/null 2>&1
  wait $W
  kill "$SP"; wait "$SP" 2>/dev/null || true; SP=
  perf report -i "$WORK/$label.data" --stdio --no-children --sort sym -g none 2>/dev/null > "$WORK/$label.txt"
  [ -n "${KEEP:-}" ] && cp "$WORK/$label.txt" "$KEEP.$label.txt"
done
python3 - "$WORK" "$MODE" <<'PY'
import re, sys
work, mode = sys.argv[1], sys.argv[2]
B = [
 ("TAP read/write (syscalls, tun driver)", r"tun_|tap_|readv|writev|do_iter_read|do_iter_write|lb_readv|lb_writev|ksys_read|ksys_write"),
 ("checksum (ours and the kernel's)", r"Checksum|csum"),
 ("own TCP (input, output, timers, PCB table)", r"NetStack.*(tcp|TCP)|TCPFlowKey|TCPControlBlock|TCPByteRing"),
 ("own IP/Ethernet/dispatch/mbufs", r"NetStack"),
 ("kernel TCP/IP (host sockets; for tap: forwarding and the peer's TCP run inside our TAP writes)", r"tcp_|ip_|inet_|__inet|veth|netif|skb|softirq|dev_queue|process_backlog|sock|sk_|__sys_|nf_|fib_|neigh|napi|__tcp|__ip|udp|dst_|accept|epoll|ep_"),
 ("HTTP service", r"Services|HTTP"),
 ("LWKT scheduling, Swift tasks, kernel context switches", r"LWKT|finish_task_switch|_raw_spin|schedule|futex|swift_task|swift_job|getPreferredTaskExecutor|withStatusRecordLock|AsyncTask|swift::runJob|Continuation|try_to_wake|pthread|do_syscall|entry_SYSCALL|syscall_exit|irqentry|__vdso|clock_gettime|ttwu|enqueue_task|dequeue_task|update_curr|pick_next|select_task"),
 ("reference counting", r"swift_retain|swift_release|swift_bridgeObject|unownedRetain|swift_unknown"),
 ("malloc/free", r"malloc|_int_free|free|unlink_chunk|kmem_cache|kfree|__kmalloc|slab"),
 ("copies", r"memmove|memcpy|copy_user|_copy_to|_copy_from|rep_movs"),
]
def load(label):
    txt = open(f"{work}/{label}.txt").read()
    m = re.search(r"Samples: (\d+)([KM]?) of event", txt)
    n = int(m.group(1)) * {"": 1, "K": 1000, "M": 1000000}[m.group(2)]
    sums = {b[0]: 0.0 for b in B}; sums["other"] = 0.0
    for line in txt.splitlines():
        mm = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(.*)$", line)
        if not mm: continue
        pct, sym = float(mm.group(1)), mm.group(3)
        for name, rx in B:
            if re.search(rx, sym): sums[name] += pct; break
        else: sums["other"] += pct
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/{label}.wrk").read()).group(1))
    return sums, n / 2999.0 / (rps * 4.0) * 1e6, rps
t, tu, trps = load("tap"); h, hu, hrps = load("host")
print(f"| {mode}: self time | tap % | tap µs/req | host % | host µs/req |")
print("|---|---|---|---|---|")
for name in [b[0] for b in B] + ["other"]:
    print(f"| {name} | {t[name]:.1f} | {t[name]*tu/100:.1f} | {h[name]:.1f} | {h[name]*hu/100:.1f} |")
print(f"| **total** (req/s: tap {trps:.0f}, host {hrps:.0f}) | 100 | {tu:.1f} | 100 | {hu:.1f} |")
PY
