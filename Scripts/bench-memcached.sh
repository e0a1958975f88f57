#!/usr/bin/env bash
# Benchmarks Libellula's memcached service against memcached 1.6 (-t = Libellula's CPUs)
# in the same run, with the load generator pinned to other cores. Workloads: GET-heavy
# (90% get) and SET-heavy (10% get), 32-byte values, with and without pipelining; then
# memaslap (libmemcached-tools) with its default 9:1 get:set mix, if it is installed.
#
#   Scripts/bench-memcached.sh            # CPUS=1, 5 s per run
#   CPUS=2 SECONDS_PER_RUN=10 Scripts/bench-memcached.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CPUS=${CPUS:-1}
SECS=${SECONDS_PER_RUN:-5}
CORES=$(nproc)
LIB_PORT=${LIB_PORT:-22411}
MC_PORT=${MC_PORT:-22412}
SERVER_CORES="0-$((CPUS - 1))"
if [ "$CORES" -gt "$CPUS" ]; then GEN_CORES="$CPUS-$((CORES - 1))"; else GEN_CORES="0-$((CORES - 1))"; echo "warning: generator shares the server's cores" >&2; fi

command -v memcached >/dev/null || { echo "memcached is not installed (apt-get install memcached)" >&2; exit 1; }
swift build -c release --product libellula >/dev/null
BIN=$(swift build -c release --show-bin-path)/libellula
mkdir -p .build
cc -O2 -o .build/mcload Scripts/memcached/mcload.c

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

echo "# memcached benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "# server cores $SERVER_CORES, generator cores $GEN_CORES, $SECS s per run, 32-byte values, 10k keys"
taskset -c "$SERVER_CORES" "$BIN" memcached --cpus "$CPUS" --listen 127.0.0.1:$LIB_PORT --memory 256 >/dev/null 2>&1 &
pids+=($!)
taskset -c "$SERVER_CORES" memcached -l 127.0.0.1 -p $MC_PORT -U 0 -t "$CPUS" -m 256 $( [ "$(id -u)" = 0 ] && echo "-u root" ) &
pids+=($!)
wait_port $LIB_PORT && wait_port $MC_PORT || { echo "servers did not start" >&2; exit 1; }

run() { # name conns depth getpct
  local lib mc
  lib=$(taskset -c "$GEN_CORES" .build/mcload 127.0.0.1 $LIB_PORT "$2" "$3" "$SECS" "$4" | sed 's/.*ops_per_sec=//')
  mc=$(taskset -c "$GEN_CORES" .build/mcload 127.0.0.1 $MC_PORT "$2" "$3" "$SECS" "$4" | sed 's/.*ops_per_sec=//')
  printf "| %-34s | %12s | %12s | %5s |\n" "$1" "$lib" "$mc" "$(awk -v a="$lib" -v b="$mc" 'BEGIN{printf "%.2f", a/b}')"
}
echo
echo "| workload (mcload)                  | Libellula ops/s | memcached ops/s | ratio |"
echo "|---|---:|---:|---:|"
run "GET 90% 50 conns, depth 1" 50 1 90
run "SET 90% 50 conns, depth 1" 50 1 10
run "GET 90% 8 conns, depth 16" 8 16 90
run "SET 90% 8 conns, depth 16" 8 16 10

if command -v memcaslap >/dev/null || command -v memaslap >/dev/null; then
  MS=$(command -v memcaslap || command -v memaslap)
  echo
  echo "| memaslap 9:1 get:set, 32 B values  | Libellula ops/s | memcached ops/s | ratio |"
  echo "|---|---:|---:|---:|"
  ms() { taskset -c "$GEN_CORES" "$MS" -s 127.0.0.1:"$1" -T 1 -c 32 -X 32 -t "${SECS}s" 2>/dev/null | awk '/^Run time/ {for(i=1;i<=NF;i++) if($i=="Ops:") print $(i+1)}' | tail -1; }
  ml=$(ms $LIB_PORT); mm=$(ms $MC_PORT)
  printf "| %-34s | %12s | %12s | %5s |\n" "32 concurrency, 1 thread" "${ml:-?}" "${mm:-?}" "$(awk -v a="${ml:-0}" -v b="${mm:-1}" 'BEGIN{printf "%.2f", a/b}')"
fi
