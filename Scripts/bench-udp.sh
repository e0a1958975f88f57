#!/usr/bin/env bash
# UDP request/response rows for BENCHMARKS.md, all in one run: a C load generator
# (Scripts/udp-load.c) in the rig's peer namespace drives
#   1. a Linux UDP echo server on sockets (Scripts/udp-echo.c, one thread per core) in a
#      server namespace behind the router (peer -veth- router -veth- server), so its
#      requests take the same veth and forwarding hop as those to the TAP (the ratio
#      column is against this row), and the same server in the router namespace itself
#      (one veth, no forwarding), for reference;
#   2. Libellula's stack on the rig's TAP with a socket-application echo (`libellula net
#      --socket-echo-port`: one UDPSocket, a receive/send LWKT thread per CPU);
#   3. the same stack's in-stack echo (answered by the protocol thread, no socket
#      application), for reference.
# Same generator, same window and flows, same server CPUs (udp-echo pins thread i to core i,
# Libellula pins CPU i to core i).
#
#   sudo Scripts/bench-udp.sh [SECONDS [CPUS]]      (defaults: 5 s per row, 2 CPUs)
#   environment: WINDOW (outstanding requests per flow, 8), FLOWS (4), SIZE (payload bytes, 32),
#                LIBELLULA (the binary; default .build/release/libellula)
#
# Needs root, cc, iproute2 and a release build (swift build -c release). Bounded in time
# (every process runs under `timeout`); the rig is removed on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}; cpus=${2:-2}
window=${WINDOW:-8}; flows=${FLOWS:-4}; size=${SIZE:-32}
bin=${LIBELLULA:-.build/release/libellula}
case "$secs$cpus" in *[!0-9]*) echo "bench-udp: SECONDS and CPUS are whole numbers" >&2; exit 64 ;; esac
[ "$secs" -ge 1 ] && [ "$secs" -le 120 ] || { echo "bench-udp: SECONDS must be 1..120" >&2; exit 64; }
[ "$(id -u)" = 0 ] || { echo "bench-udp: needs root (network namespaces, TAP)" >&2; exit 77; }
[ -x "$bin" ] || { echo "bench-udp: no $bin; run swift build -c release first" >&2; exit 66; }

p=lbu$(( $$ % 100000 ))
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$p-srv" 2>/dev/null || true
    Scripts/netrig.sh down "$p" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -o "$work/udp-load" Scripts/udp-load.c
cc -O2 -Wall -pthread -o "$work/udp-echo" Scripts/udp-echo.c
Scripts/netrig.sh up "$p" >/dev/null
# One CPU opens one queue, which a multi-queue TAP refuses: make it single-queue then.
Scripts/netrig.sh tap "$p" "$p-tap" $([ "$cpus" = 1 ] && echo "single")
# The server namespace one forwarding hop behind the router, like the TAP.
ip netns add "$p-srv"
ip link add "$p-s" type veth peer name "$p-sr"
ip link set "$p-s" netns "$p-srv"
ip link set "$p-sr" netns "$p-rtr"
ip -n "$p-srv" addr add 10.200.3.1/24 dev "$p-s"
ip -n "$p-rtr" addr add 10.200.3.254/24 dev "$p-sr"
ip -n "$p-srv" link set lo up
ip -n "$p-srv" link set "$p-s" up
ip -n "$p-rtr" link set "$p-sr" up
ip -n "$p-srv" route add default via 10.200.3.254
ip -n "$p-peer" route add 10.200.3.0/24 via 10.200.1.254

load() { # HOST PORT -> the generator's result line
    timeout $((secs + 15)) ip netns exec "$p-peer" "$work/udp-load" "$1" "$2" "$secs" "$window" "$flows" "$size"
}
field() { # NAME LINE
    sed -n "s/.*\\b$1=\\([0-9.]*\\).*/\\1/p" <<<"$2"
}

# Rows 1 and 2: Linux sockets, one forwarding hop away and in the router.
timeout $((secs + 20)) ip netns exec "$p-srv" "$work/udp-echo" 9000 "$cpus" $((secs + 3)) >"$work/linux.out" &
pids+=($!)
sleep 0.5
linux=$(load 10.200.3.1 9000)
wait "${pids[-1]}" || true
timeout $((secs + 20)) ip netns exec "$p-rtr" "$work/udp-echo" 9000 "$cpus" $((secs + 3)) >"$work/local.out" &
pids+=($!)
sleep 0.5
local=$(load 10.200.1.254 9000)
wait "${pids[-1]}" || true

# Rows 3 and 4: Libellula, socket application and in-stack echo in one process.
: >"$work/libellula.out"
timeout $((2 * secs + 60)) ip netns exec "$p-rtr" "$bin" net --tap "$p-tap" --address 10.200.2.1/24 \
    --gateway 10.200.2.254 --cpus "$cpus" --echo-port 7 --socket-echo-port 9000 \
    --duration $((2 * secs + 30)) >"$work/libellula.out" 2>&1 &
lpid=$!; pids+=($lpid)
for _ in $(seq 100); do grep -q "Ctrl-C to stop" "$work/libellula.out" && break; sleep 0.1; done
grep -q "Ctrl-C to stop" "$work/libellula.out" || { cat "$work/libellula.out" >&2; echo "bench-udp: libellula net did not start" >&2; exit 69; }
sleep 0.3
socket=$(load 10.200.2.1 9000)
instack=$(load 10.200.2.1 7)
kill -INT "$lpid"; wait "$lpid" || true

echo "generator: $flows flows x $window outstanding, $size-byte payloads, $secs s per row; server CPUs: $cpus"
echo "linux socket echo, forwarded: $linux   ($(cat "$work/linux.out"))"
echo "linux socket echo, router:    $local   ($(cat "$work/local.out"))"
echo "libellula socket:             $socket"
echo "libellula in-stack:           $instack"
echo
lr=$(field replies_per_s "$linux")
row() { # LABEL LINE
    local r; r=$(field replies_per_s "$2")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$r" "$(field p50_us "$2")" "$(field p99_us "$2")" \
        "$(field lost "$2")" "$(awk -v a="$r" -v b="$lr" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
}
echo "| row | replies/s | p50 µs | p99 µs | lost | vs Linux sockets |"
echo "|---|---|---|---|---|---|"
row "Linux UDP echo on sockets (udp-echo.c), server namespace behind the router (veth, forwarding, veth)" "$linux"
row "same Linux echo in the router namespace (veth only, no forwarding)" "$local"
row "Libellula UDP echo as a socket application (UDPSocket, a thread per CPU) over the TAP" "$socket"
row "Libellula in-stack echo (no socket application) over the TAP" "$instack"
