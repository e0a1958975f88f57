#!/usr/bin/env bash
# Benchmarks Libellula's memcached service against memcached 1.6 (-t N = Libellula's N
# CPUs) in the same run, same client (Scripts/memcached/mcload.c), same cores: GET-heavy
# (90% get), meta-get-heavy (90% `mg KEY v`) and SET-heavy (10% get) with 32-byte values,
# at pipeline depth 1 and 8, for every N in CPU_LIST. Besides ops/s it reports each
# server's CPU time per operation (user + system, from /proc; steadier than ops/s on a
# shared machine), and for Libellula where cross-CPU time goes, from `stats`: messages per
# request (hops), operations per message (batch size), and per request the wakeups of a
# sleeping CPU (eventfd writes) and the CPUs' sleeps in epoll. A compact summary table
# (ratio and CPU per operation for every N and row) closes the run. Then the router
# measured in place (`libellula memcached --measure-hop`): a 10-key multi-get with all keys
# local against keys on two CPUs, and an 8-deep mixed-owner pipeline sent one message per
# remote command (before the router) against one message per owner CPU.
# Each row runs twice, alternating the servers, and keeps the better of each.
#
#   Scripts/bench-memcached.sh                         # CPU_LIST="1 2", 3 s per run
#   CPU_LIST="1 2 4 8 16" SECONDS_PER_RUN=10 Scripts/bench-memcached.sh   # a 16-core machine
#   CLIENT_CORES=1 SERVER_CORES=0 Scripts/bench-memcached.sh   # client and servers apart
#   LIB_ARGS="--no-pin --spin-microseconds 5" Scripts/bench-memcached.sh
#
# Binaries (nothing is built when they are given): LIBELLULA_BIN (or BIN) a release
# `libellula`; MEMCACHED_BIN (default: memcached on PATH); MCLOAD_BIN a built mcload
# (default: compiled from Scripts/memcached/mcload.c into .build/mcload).
# Load: CONNECTIONS (default: 50, or 25 per CPU from 4 CPUs on) spread over CLIENT_PROCS
# mcload processes run at once (default: 1 for N <= 2, else N/2, so one single-threaded
# client does not cap a wide server; their ops/s are added). PLACEMENT=split puts both
# servers on cores 0..N-1 and the clients on the other cores (when N < cores; default
# CLIENT_PROCS there: one per client core, at most N), overriding SERVER_CORES and
# CLIENT_CORES. ROWS picks rows by number (default "1 2 3 4 5 6": GET d1,
# GET d8, meta-get d1, meta-get d8, SET d1, SET d8). MEASURE_HOP=0 skips the in-place part.
# SYSCALLS=1 adds each server's system calls per operation (perf, root) to the summary.
# LIBELLULA_BASE_BIN (another build, e.g. before a change) runs as a third server in the
# same rounds; the summary then adds its ops/s and CPU µs per operation.
set -euo pipefail
cd "$(dirname "$0")/.."

CPU_LIST=${CPU_LIST:-"1 2"}
SECS=${SECONDS_PER_RUN:-3}
CORES=$(nproc)
LIB_PORT=${LIB_PORT:-22411}
MC_PORT=${MC_PORT:-22412}
BASE_PORT=${BASE_PORT:-22413}
LIB_ARGS=${LIB_ARGS:-}
BASE_CLIENT=(); [ -n "${CLIENT_CORES:-}" ] && BASE_CLIENT=(taskset -c "$CLIENT_CORES")
BASE_SERVER=(); [ -n "${SERVER_CORES:-}" ] && BASE_SERVER=(taskset -c "$SERVER_CORES")

MEMCACHED_BIN=${MEMCACHED_BIN:-memcached}
command -v "$MEMCACHED_BIN" >/dev/null || { echo "memcached not found ($MEMCACHED_BIN; apt-get install memcached or set MEMCACHED_BIN)" >&2; exit 1; }
BIN=${LIBELLULA_BIN:-${BIN:-}}
if [ -z "$BIN" ]; then
  swift build -c release --product libellula >/dev/null
  BIN=$(swift build -c release --show-bin-path)/libellula
fi
if [ -z "${MCLOAD_BIN:-}" ]; then
  mkdir -p .build
  cc -O2 -o .build/mcload Scripts/memcached/mcload.c
  MCLOAD_BIN=.build/mcload
fi
ROWS=${ROWS:-"1 2 3 4 5 6"}
SUMMARY=()

# Runs CLIENT_PROCS mcload processes at once against port $1 (depth $2, get % $3, meta $4)
# and prints "ops ops_per_sec", summed over the processes.
load() {
  local procs=$CLIENT_PROCS_NOW per=$(( (CONNS + CLIENT_PROCS_NOW - 1) / CLIENT_PROCS_NOW )) i out
  out=$(for i in $(seq 1 "$procs"); do
          MCLOAD_META=$4 "${CLIENT[@]}" "$MCLOAD_BIN" 127.0.0.1 "$1" "$per" "$2" "$SECS" "$3" &
        done; wait)
  echo "$out" | awk '{for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "ops") o += kv[2]; if (kv[1] == "ops_per_sec") r += kv[2] } }
                     END { printf "%d %d\n", o, r }'
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# Prints "local remote_sent remote_ops wakeups sleeps" summed over CPUs, from `stats`.
route_stats() {
  exec 3<>/dev/tcp/127.0.0.1/"$1"
  printf 'stats\r\nquit\r\n' >&3
  awk '/STAT local_requests /{l=$3} /STAT remote_requests_sent /{s=$3} /STAT remote_ops_sent /{o=$3}
       /STAT lwkt_ipi_wakeups /{w=$3} /STAT lwkt_sleeps /{z=$3}
       END{printf "%d %d %d %d %d\n", l, s, o, w, z}' <&3 | tr -d '\r'
  exec 3<&-
}

# With SYSCALLS=1, the server's system calls during one load run (perf's raw_syscalls
# tracepoint; needs perf and root): count_syscalls PID starts counting, syscalls_counted
# waits for the run's end and leaves the count in $counted (0 when not counting).
SYSCALL_FILE=$(mktemp); perf_pid=
count_syscalls() {
  [ "${SYSCALLS:-0}" = 1 ] || return 0
  perf stat -e raw_syscalls:sys_enter -p "$1" -x, -o "$SYSCALL_FILE" -- sleep "$SECS" >/dev/null 2>&1 &
  perf_pid=$!
}
syscalls_counted() {   # call it in the main shell (it waits for perf), not in $(...)
  counted=0
  [ -n "$perf_pid" ] || return 0
  wait "$perf_pid" 2>/dev/null || true; perf_pid=
  counted=$(awk -F, '$1 ~ /^[0-9]+$/ {print $1; found = 1} END {if (!found) print 0}' "$SYSCALL_FILE")
}

# CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
TICK=$(getconf CLK_TCK)

echo "# memcached benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "# $SECS s per run, 32-byte values, 10k keys; client cores: ${CLIENT_CORES:-all}, server cores: ${SERVER_CORES:-all}; Libellula extra arguments: ${LIB_ARGS:-none}"
for CPUS in $CPU_LIST; do
  cleanup
  CONNS=${CONNECTIONS:-$(( CPUS >= 4 ? 25 * CPUS : 50 ))}
  CLIENT_PROCS_NOW=${CLIENT_PROCS:-$(( CPUS <= 2 ? 1 : CPUS / 2 ))}
  CLIENT=("${BASE_CLIENT[@]}"); SERVER=("${BASE_SERVER[@]}")
  if [ "${PLACEMENT:-}" = split ] && [ "$CPUS" -lt "$CORES" ]; then
    SERVER=(taskset -c "0-$((CPUS - 1))"); CLIENT=(taskset -c "$CPUS-$((CORES - 1))")
    free=$((CORES - CPUS)); [ -z "${CLIENT_PROCS:-}" ] && CLIENT_PROCS_NOW=$(( free < CPUS ? free : CPUS ))
  fi
  # shellcheck disable=SC2086
  "${SERVER[@]}" "$BIN" memcached --cpus "$CPUS" --listen 127.0.0.1:$LIB_PORT --memory 256 $LIB_ARGS >/dev/null 2>&1 &
  lib_pid=$!; pids+=($lib_pid)
  "${SERVER[@]}" "$MEMCACHED_BIN" -l 127.0.0.1 -p $MC_PORT -U 0 -t "$CPUS" -m 256 $( [ "$(id -u)" = 0 ] && echo "-u root" ) &
  mc_pid=$!; pids+=($mc_pid)
  wait_port $LIB_PORT && wait_port $MC_PORT || { echo "servers did not start" >&2; exit 1; }
  if [ -n "${LIBELLULA_BASE_BIN:-}" ]; then
    # shellcheck disable=SC2086
    "${SERVER[@]}" "$LIBELLULA_BASE_BIN" memcached --cpus "$CPUS" --listen 127.0.0.1:$BASE_PORT --memory 256 $LIB_ARGS >/dev/null 2>&1 &
    base_pid=$!; pids+=($base_pid)
    wait_port $BASE_PORT || { echo "the base server did not start" >&2; exit 1; }
  fi
  echo
  echo "## $CPUS CPU(s): Libellula --cpus $CPUS vs memcached -t $CPUS ($CONNS connections from $CLIENT_PROCS_NOW client process(es); server cores: ${SERVER[*]:-all}; client cores: ${CLIENT[*]:-all})"
  echo
  echo "| workload (mcload) | Libellula ops/s | memcached ops/s | ratio | CPU µs/op Libellula / memcached | hops/request | ops/message | wakeups/request | sleeps/request |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  rowno=0
  for row in "GET 90%, depth 1:1 90 0" "GET 90%, depth 8:8 90 0" "meta-get 90%, depth 1:1 90 1" "meta-get 90%, depth 8:8 90 1" \
             "SET 90%, depth 1:1 10 0" "SET 90%, depth 8:8 10 0"; do
    rowno=$((rowno + 1))
    case " $ROWS " in *" $rowno "*) ;; *) continue ;; esac
    name=${row%%:*}; set -- ${row#*:}
    # Two rounds, alternating servers (the machine may be shared); the better of each.
    read -r l0 s0 o0 w0 z0 < <(route_stats $LIB_PORT)
    lib=0; mc=0; lib_ops=0; mc_ops=0; lib_ticks=0; mc_ticks=0
    lib_sys=0; mc_sys=0; base=0; base_ops=0; base_ticks=0
    for _ in 1 2; do
      if [ -n "${LIBELLULA_BASE_BIN:-}" ]; then
        x0=$(cpu_ticks $base_pid)
        read -r c_ops c < <(load $BASE_PORT "$1" "$2" "$3")
        x1=$(cpu_ticks $base_pid)
        base_ticks=$((base_ticks + x1 - x0)); base_ops=$((base_ops + c_ops))
        [ "$c" -gt "$base" ] && base=$c
      fi
      t0=$(cpu_ticks $lib_pid)
      count_syscalls $lib_pid
      read -r a_ops a < <(load $LIB_PORT "$1" "$2" "$3")
      syscalls_counted; lib_sys=$((lib_sys + counted))
      t1=$(cpu_ticks $lib_pid); m0=$(cpu_ticks $mc_pid)
      count_syscalls $mc_pid
      read -r b_ops b < <(load $MC_PORT "$1" "$2" "$3")
      syscalls_counted; mc_sys=$((mc_sys + counted))
      m1=$(cpu_ticks $mc_pid)
      lib_ticks=$((lib_ticks + t1 - t0)); mc_ticks=$((mc_ticks + m1 - m0))
      lib_ops=$((lib_ops + a_ops)); mc_ops=$((mc_ops + b_ops))
      [ "$a" -gt "$lib" ] && lib=$a
      [ "$b" -gt "$mc" ] && mc=$b
    done
    read -r l1 s1 o1 w1 z1 < <(route_stats $LIB_PORT)
    ratio=$(awk -v a="$lib" -v b="$mc" 'BEGIN{printf "%.2f", b ? a/b : 0}')
    lib_us=$(awk -v a=$lib_ticks -v n=$lib_ops -v t=$TICK 'BEGIN{printf "%.2f", n ? a * 1e6 / t / n : 0}')
    mc_us=$(awk -v a=$mc_ticks -v n=$mc_ops -v t=$TICK 'BEGIN{printf "%.2f", n ? a * 1e6 / t / n : 0}')
    sys_col=""
    if [ "${SYSCALLS:-0}" = 1 ]; then
      sys_col=$(awk -v a=$lib_sys -v n=$lib_ops -v b=$mc_sys -v m=$mc_ops 'BEGIN{printf "%.2f / %.2f", n ? a/n : 0, m ? b/m : 0}')
    fi
    base_col=""
    if [ -n "${LIBELLULA_BASE_BIN:-}" ]; then
      base_col=$(awk -v c=$base -v a=$lib -v t=$base_ticks -v n=$base_ops -v k=$TICK 'BEGIN{printf "%d / %.2f / %.2f", c, n ? t * 1e6 / k / n : 0, c ? a/c : 0}')
    fi
    SUMMARY+=("$CPUS|$name|$lib|$mc|$ratio|$lib_us|$mc_us|$sys_col|$base_col")
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$name" "$lib" "$mc" "$ratio" "$lib_us / $mc_us" \
      "$(awk -v l=$((l1 - l0)) -v s=$((s1 - s0)) -v o=$((o1 - o0)) 'BEGIN{t=l+o; printf "%.2f", t ? s/t : 0}')" \
      "$(awk -v s=$((s1 - s0)) -v o=$((o1 - o0)) 'BEGIN{printf "%.1f", s ? o/s : 0}')" \
      "$(awk -v l=$((l1 - l0)) -v o=$((o1 - o0)) -v w=$((w1 - w0)) 'BEGIN{t=l+o; printf "%.3f", t ? w/t : 0}')" \
      "$(awk -v l=$((l1 - l0)) -v o=$((o1 - o0)) -v z=$((z1 - z0)) 'BEGIN{t=l+o; printf "%.3f", t ? z/t : 0}')"
  done
done
cleanup
echo
echo "## Summary (ops/s: the better of two runs; CPU µs per operation: server user + system over both runs)"
echo
echo "| N | workload | Libellula ops/s | memcached ops/s | ratio | CPU µs/op Libellula | CPU µs/op memcached | syscalls/op Libellula / memcached (SYSCALLS=1) | base build: ops/s / CPU µs/op / Libellula÷base (LIBELLULA_BASE_BIN) |"
echo "|---:|---|---:|---:|---:|---:|---:|---|---|"
for r in "${SUMMARY[@]}"; do IFS='|' read -r n w a b q x y z v <<<"$r"; echo "| $n | $w | $a | $b | **$q** | $x | $y | ${z:-–} | ${v:-–} |"; done
rm -f "$SYSCALL_FILE"
if [ "${MEASURE_HOP:-1}" != 0 ]; then
  echo
  echo "## The router in place (2 CPUs, no sockets; \`libellula memcached --cpus 2 --measure-hop\`)"
  echo
  "$BIN" memcached --cpus 2 --listen 127.0.0.1:0 --measure-hop | sed 's/^/    /'
fi
