#!/usr/bin/env bash
# TCP benchmarks (root for the TAP rows): the SimulatedLink rows (1448-byte segments, 64 KB
# TSO segments, 64-byte writes, 76-byte segments with software checksums and with checksum
# offload; data segments and pure ACKs counted apart; malloc calls per segment through
# Scripts/malloc-count.c), then over the TAP rig next to Linux over veth in the same run:
# one bulk flow, connections per second, and an echo the Linux client checks byte for byte.
# The Linux side of the TAP rows is Scripts/tcp-peer.c (C, threads), built here with cc.
#   Scripts/bench-tcp.sh [--quick]      (SHA_MB=100 sets the echo's size)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product libellula >/dev/null
gcc -O2 -shared -fPIC -o /tmp/libellula-malloc-count.so Scripts/malloc-count.c -ldl
cc -O2 -pthread -o /tmp/libellula-tcp-peer Scripts/tcp-peer.c
LIBELLULA_TCP_PEER=/tmp/libellula-tcp-peer LIBELLULA_BENCH_SHA_MB=${SHA_MB:-100} \
    LD_PRELOAD=/tmp/libellula-malloc-count.so .build/release/libellula bench tcp "$@"
