#!/usr/bin/env bash
# Scaling benchmarks for a machine with many cores (written for 16): how Libellula's
# throughput grows with its CPU count, next to the baseline a user would pick, in one run.
#
#   a) in process, N = 1 2 4 8 16: `libellula bench SUITE --cpus N --quick --json` for the
#      suites ipi, ports, slab and tcp (the same work on every CPU at once; aggregate and
#      per-CPU rates; slab also against glibc, mimalloc and jemalloc on the same CPUs).
#   b) HTTP, N = 1 2 4 8: `libellula serve --cpus N --hot-cache off` against nginx with
#      N workers (sendfile, open_file_cache, no access log), both on cores 0..N-1, wrk on
#      the other cores; a 4 KiB file; plus one row with the hot cache on at the largest N.
#   c) memcached, N = 1 2 4 8: `libellula memcached --cpus N` against `memcached -t N`,
#      both on cores 0..N-1, one mcload process per remaining core (90% get, 32-byte values,
#      pipeline depth 1 and 8).
#
# Results go to $OUT/results.txt (one line per measurement, appended as they come) and
# everything the tools print to $OUT/raw.log. Every row is bounded by `timeout`; a failed
# row is logged and the script goes on; rows stop being started after $BUDGET seconds.
#
# Usage (from anywhere):
#   swift build -c release --static-swift-stdlib --product libellula
#   OUT=/tmp/scaling Scripts/device-scaling.sh
# Tools come from PATH, or from these variables: LIBELLULA (default
# .build/release/libellula), NGINX, MEMCACHED, WRK, MCLOAD (default: built from
# Scripts/memcached/mcload.c with cc). A bundle folder (the script copied as run.sh next to
# bin/, lib/ and optionally glibc/) is used as is: binaries from bin/, their libraries from
# lib/, and if a binary does not start with the host's C library, through glibc/'s loader.
#
# Knobs: QUICK=1 (N = 1 2 only, 2-second runs: a smoke test on a small machine),
# INPROC_CPUS, NET_CPUS (lists of N), HTTP_SECS (8), MC_SECS (5), BUDGET (360 s),
# SKIP="inproc http mc" (parts to leave out), FORCE_LOADER=1 (always use glibc/'s loader).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-/tmp/libellula-scaling}
mkdir -p "$OUT"
RES="$OUT/results.txt"
RAW="$OUT/raw.log"
START=$(date +%s)
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-360}
CORES=$(nproc)
SKIP=${SKIP:-}
if [ "$QUICK" = 1 ]; then
  INPROC_CPUS=${INPROC_CPUS:-"1 2"}; NET_CPUS=${NET_CPUS:-"1"}; HTTP_SECS=${HTTP_SECS:-2}; MC_SECS=${MC_SECS:-2}
else
  INPROC_CPUS=${INPROC_CPUS:-"1 2 4 8 16"}; NET_CPUS=${NET_CPUS:-"1 2 4 8"}; HTTP_SECS=${HTTP_SECS:-8}; MC_SECS=${MC_SECS:-5}
fi

elapsed() { echo $(( $(date +%s) - START )); }
res() { echo "$*" >> "$RES"; echo "RESULT $*" >> "$RAW"; echo "$*"; }
log() { echo "[+$(elapsed)s] $*" >> "$RAW"; echo "[+$(elapsed)s] $*" >&2; }
over_budget() { [ "$(elapsed)" -ge "$BUDGET" ]; }

WORK=$(mktemp -d /tmp/libellula-scaling.XXXXXX)
chmod 755 "$WORK"
PIDS=""
stop_servers() {
  local p
  for p in $PIDS; do kill "$p" 2>/dev/null; done
  for p in $PIDS; do
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  PIDS=""
}
trap 'stop_servers; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# ---------------------------------------------------------------- the machine
{
  echo "# Libellula scaling run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# uname: $(uname -a)"
  echo "# nproc: $CORES; cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  gv=no
  if [ "$(uname -r)" = 4.4.0 ] || dmesg 2>/dev/null | grep -qi gvisor; then gv="yes (uname -r $(uname -r))"; fi
  echo "# gVisor: $gv; first dmesg line: $(dmesg 2>/dev/null | head -1 || echo unavailable)"
  echo "# virtualization: $(systemd-detect-virt 2>/dev/null || echo unknown); cpufreq governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
  echo "# settings: QUICK=$QUICK in-process N: $INPROC_CPUS; network N: $NET_CPUS; HTTP ${HTTP_SECS}s, memcached ${MC_SECS}s per run"
} | tee -a "$RES" >> "$RAW"
cat "$RES"

# ---------------------------------------------------------------- the tools
# Each tool gets a wrapper in $WORK/bin that runs it directly (bundle libraries first) or,
# when that fails, through the bundle's own loader and C library.
mkdir -p "$WORK/bin"
if [ -d "$HERE/bin" ]; then
  BUNDLE=$HERE
  log "bundle mode: $BUNDLE"
  # Compressed binaries (bin/NAME.gz) are unpacked into $WORK, or next to the bundle
  # when /tmp does not allow running programs.
  for f in "$BUNDLE"/bin/*.gz; do
    [ -e "$f" ] || continue
    b=$(basename "$f" .gz)
    gzip -dc "$f" > "$WORK/$b" && chmod +x "$WORK/$b"
    "$WORK/$b" --version >/dev/null 2>&1
    if [ $? -eq 126 ]; then
      mkdir -p "$BUNDLE/unpacked"
      mv "$WORK/$b" "$BUNDLE/unpacked/$b"
      ln -s "$BUNDLE/unpacked/$b" "$WORK/$b"
      log "$b: /tmp does not allow running programs; unpacked into $BUNDLE/unpacked"
    fi
  done
fi
tool_path() { # name env-default -> the real binary
  local name=$1 given=$2
  if [ -n "${BUNDLE:-}" ]; then
    if [ -x "$WORK/$name" ]; then echo "$WORK/$name"; return; fi
    if [ -x "$BUNDLE/bin/$name" ]; then echo "$BUNDLE/bin/$name"; return; fi
  fi
  if [ -n "$given" ] && [ -x "$given" ]; then echo "$given"; return; fi
  command -v "$name" 2>/dev/null || { [ -x "/usr/sbin/$name" ] && echo "/usr/sbin/$name"; }
}
make_wrapper() { # name real-binary test-args...
  local name=$1 real=$2; shift 2
  local w="$WORK/bin/$name" libs="${BUNDLE:+$BUNDLE/lib}" out
  if [ -z "$real" ]; then log "tool $name: not found"; return 1; fi
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' "$libs" "$real" > "$w"
  chmod +x "$w"
  if [ "${FORCE_LOADER:-0}" != 1 ]; then
    out=$(timeout 10 "$w" "$@" 2>&1 </dev/null); local rc=$?
    if ! echo "$out" | grep -qE "GLIBC_|error while loading shared libraries|cannot execute|No such file" && [ $rc -ne 126 ] && [ $rc -ne 127 ]; then
      log "tool $name: $real (direct): $(echo "$out" | head -1)"; return 0
    fi
    log "tool $name: direct run failed (rc $rc): $(echo "$out" | head -2 | tr '\n' ' ')"
  fi
  if [ -n "${BUNDLE:-}" ] && [ -x "$BUNDLE/glibc/ld-linux-x86-64.so.2" ]; then
    printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' "$BUNDLE/glibc/ld-linux-x86-64.so.2" "$BUNDLE/lib:$BUNDLE/glibc" "$real" > "$w"
    out=$(timeout 10 "$w" "$@" 2>&1 </dev/null)
    log "tool $name: $real (through the bundle's loader, rc $?): $(echo "$out" | head -1)"
    return 0
  fi
  return 1
}
LIBELLULA_REAL=$(tool_path libellula "${LIBELLULA:-$HERE/../.build/release/libellula}")
make_wrapper libellula "$LIBELLULA_REAL" --version
make_wrapper nginx "$(tool_path nginx "${NGINX:-}")" -v
make_wrapper memcached "$(tool_path memcached "${MEMCACHED:-}")" -V
make_wrapper wrk "$(tool_path wrk "${WRK:-}")" -v
MCLOAD_REAL=$(tool_path mcload "${MCLOAD:-}")
if [ -z "$MCLOAD_REAL" ] && [ -f "$HERE/memcached/mcload.c" ] && command -v cc >/dev/null; then
  cc -O2 -o "$WORK/mcload" "$HERE/memcached/mcload.c" && MCLOAD_REAL="$WORK/mcload"
fi
FORCE_LOADER=0 make_wrapper mcload "$MCLOAD_REAL" 127.0.0.1 1 1 1 0 90   # (the bundle's is static)
B="$WORK/bin"
have() { [ -x "$B/$1" ]; }
# $B/pin CORES CMD...: CMD on those cores (taskset), or unpinned where taskset fails.
if taskset -c 0 true 2>/dev/null; then
  printf '#!/bin/sh\nc=$1; shift; exec taskset -c "$c" "$@"\n' > "$B/pin"
else
  log "taskset does not work here: servers and load generators run unpinned"
  printf '#!/bin/sh\nshift; exec "$@"\n' > "$B/pin"
fi
chmod +x "$B/pin"
# Static files for HTTP.
WWW="$WORK/www"
mkdir -p "$WWW" "$WORK/nginx-tmp"
chmod 755 "$WWW"
printf 'hello\n' > "$WWW/hello.txt"
head -c 4096 /dev/urandom > "$WWW/f4k.bin"
chmod 644 "$WWW"/*

wait_tcp() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# "0-(N-1)" and the client set "N-(CORES-1)".
server_set() { echo "0-$(( $1 - 1 ))"; }
client_set() { echo "$1-$(( CORES - 1 ))"; }

# ---------------------------------------------------------------- a) in process
if [[ " $SKIP " != *" inproc "* ]] && have libellula; then
  for N in $INPROC_CPUS; do
    if [ "$N" -gt "$CORES" ]; then log "in-process N=$N: only $CORES cores; skipped"; continue; fi
    for suite in ipi ports slab tcp; do
      if over_budget; then log "budget of $BUDGET s spent; in-process $suite N=$N skipped"; continue; fi
      log "in-process: bench $suite --cpus $N"
      GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 LIBELLULA_BENCH_NO_TAP=1 \
        timeout -k 5 60 "$B/libellula" bench "$suite" --cpus "$N" --quick --json > "$WORK/bench.out" 2>&1
      rc=$?
      cat "$WORK/bench.out" >> "$RAW"
      [ $rc -ne 0 ] && res "inproc $suite N=$N: FAILED (exit $rc; see raw.log)"
      # JSON rows (keys sorted: baseline, baseline_value, name, unit, value) -> one line each.
      grep '^{' "$WORK/bench.out" | sed -E 's/^\{//; s/\}$//' | awk -v s="$suite" -v n="$N" '
        function field(k,   r) { if (match($0, "\"" k "\":(\"[^\"]*\"|[-0-9.e+]+)")) { r = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); gsub(/"/, "", r); gsub(/\\\//, "/", r); return r } return "" }
        { line = sprintf("inproc %s N=%s | %s | %.4g %s", s, n, field("name"), field("value"), field("unit"))
          if (field("baseline") != "") line = line sprintf(" | %s %.4g (ratio %.2f)", field("baseline"), field("baseline_value"), field("baseline_value") > 0 ? field("value") / field("baseline_value") : 0)
          print line }' > "$WORK/bench.rows"
      while IFS= read -r l; do res "$l"; done < "$WORK/bench.rows"
      [ $rc -eq 0 ] && [ ! -s "$WORK/bench.rows" ] && res "inproc $suite N=$N: no rows ($(grep -v '^{' "$WORK/bench.out" | tail -1))"
    done
    log "in-process N=$N done"
  done
fi

# ---------------------------------------------------------------- b) HTTP
http_row() { # label N port server-pid path
  local label=$1 N=$2 port=$3 path=$5 threads conns out rps
  threads=$(( CORES - N )); conns=$(( 64 * N )); [ "$conns" -lt "$threads" ] && conns=$threads
  out="$WORK/wrk.$label.$N"
  timeout -k 5 $(( HTTP_SECS + 20 )) "$B/pin" "$(client_set "$N")" "$B/wrk" -t "$threads" -c "$conns" -d "${HTTP_SECS}s" \
    "http://127.0.0.1:$port$path" > "$out" 2>&1
  echo "--- wrk $label N=$N ($threads threads, $conns connections, ${HTTP_SECS}s, cores $(client_set "$N"))" >> "$RAW"
  cat "$out" >> "$RAW"
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out")
  grep -q "Non-2xx" "$out" && log "warning: $label N=$N had non-2xx answers"
  echo "${rps:-0}"
}
start_nginx() { # N port
  cat > "$WORK/nginx.conf" <<CONF
worker_processes $1;
worker_cpu_affinity auto;
user root root;
daemon off;
pid $WORK/nginx.pid;
error_log stderr error;
events { worker_connections 8192; }
http {
  access_log off;
  log_not_found off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 60;
  open_file_cache max=16384 inactive=60s;
  open_file_cache_valid 1s;
  open_file_cache_errors on;
  client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp; fastcgi_temp_path $WORK/nginx-tmp;
  uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  server { listen 127.0.0.1:$2 reuseport; root $WWW; }
}
CONF
  "$B/pin" "$(server_set "$1")" "$B/nginx" -p "$WORK" -e stderr -c "$WORK/nginx.conf" >> "$RAW" 2>&1 &
  PIDS="$PIDS $!"
}
start_lib_http() { # N port hot-cache
  "$B/pin" "$(server_set "$1")" "$B/libellula" serve --cpus "$1" --http "127.0.0.1:$2" --root "$WWW" --no-memcached \
    --hot-cache "$3" --log-level warning >> "$RAW" 2>&1 &
  PIDS="$PIDS $!"
}
if [[ " $SKIP " != *" http "* ]] && have libellula && have nginx && have wrk; then
  LAST_N=""
  for N in $NET_CPUS; do
    if [ "$N" -ge "$CORES" ]; then log "HTTP N=$N: needs more than $N cores; skipped"; continue; fi
    if over_budget; then log "budget spent; HTTP N=$N skipped"; continue; fi
    log "HTTP N=$N: libellula serve --hot-cache off vs nginx, 4 KiB"
    start_lib_http "$N" 18601 off
    wait_tcp 18601 || log "libellula serve N=$N did not start"
    lib=$(http_row lib-off "$N" 18601 "" /f4k.bin)
    stop_servers
    start_nginx "$N" 18602
    wait_tcp 18602 || log "nginx N=$N did not start"
    ngx=$(http_row nginx "$N" 18602 "" /f4k.bin)
    stop_servers
    res "http 4KiB N=$N | libellula (hot cache off) $lib req/s | nginx $ngx req/s | ratio $(ratio "$lib" "$ngx")"
    LAST_N=$N
  done
  if [ -n "$LAST_N" ] && ! over_budget; then
    N=$LAST_N
    log "HTTP N=$N: libellula serve --hot-cache on, 4 KiB"
    start_lib_http "$N" 18603 on
    wait_tcp 18603 || log "libellula serve (hot cache on) N=$N did not start"
    hot=$(http_row lib-on "$N" 18603 "" /f4k.bin)
    stop_servers
    res "http 4KiB N=$N HOT CACHE ON | libellula (hot cache on) $hot req/s | nginx (row above) $ngx req/s | ratio $(ratio "$hot" "$ngx")"
  fi
else
  [[ " $SKIP " == *" http "* ]] || res "http: skipped (libellula, nginx or wrk missing)"
fi

# ---------------------------------------------------------------- c) memcached
mc_load() { # label N port depth -> total ops/s of one mcload per client core
  local label=$1 N=$2 port=$3 depth=$4 k cores=() conns total=0 r
  for ((k = N; k < CORES; k++)); do cores+=("$k"); done
  conns=$(( (32 * N + ${#cores[@]} - 1) / ${#cores[@]} )); [ "$conns" -lt 2 ] && conns=2
  for k in "${cores[@]}"; do
    timeout -k 5 $(( MC_SECS + 30 )) "$B/pin" "$k" "$B/mcload" 127.0.0.1 "$port" "$conns" "$depth" "$MC_SECS" 90 > "$WORK/mc.$k" 2>&1 &
  done
  wait   # (in the $(...) subshell: only the mcload processes are its children)
  echo "--- mcload $label N=$N depth $depth: ${#cores[@]} processes x $conns connections, ${MC_SECS}s" >> "$RAW"
  for k in "${cores[@]}"; do
    cat "$WORK/mc.$k" >> "$RAW"
    r=$(sed -n 's/.*ops_per_sec=\([0-9]*\).*/\1/p' "$WORK/mc.$k")
    total=$(( total + ${r:-0} ))
  done
  echo "$total"
}
if [[ " $SKIP " != *" mc "* ]] && have libellula && have memcached && have mcload; then
  for N in $NET_CPUS; do
    if [ "$N" -ge "$CORES" ]; then log "memcached N=$N: needs more than $N cores; skipped"; continue; fi
    if over_budget; then log "budget spent; memcached N=$N skipped"; continue; fi
    log "memcached N=$N: libellula memcached vs memcached -t $N"
    "$B/pin" "$(server_set "$N")" "$B/libellula" memcached --cpus "$N" --listen 127.0.0.1:18611 --memory 256 >> "$RAW" 2>&1 &
    PIDS="$PIDS $!"
    wait_tcp 18611 || log "libellula memcached N=$N did not start"
    lib1=$(mc_load lib "$N" 18611 1); lib8=$(mc_load lib "$N" 18611 8)
    stop_servers
    "$B/pin" "$(server_set "$N")" "$B/memcached" -l 127.0.0.1 -p 18612 -U 0 -t "$N" -m 256 -c 8192 -u root >> "$RAW" 2>&1 &
    PIDS="$PIDS $!"
    wait_tcp 18612 || log "memcached N=$N did not start"
    mc1=$(mc_load memcached "$N" 18612 1); mc8=$(mc_load memcached "$N" 18612 8)
    stop_servers
    res "memcached get90 depth1 N=$N | libellula $lib1 ops/s | memcached $mc1 ops/s | ratio $(ratio "$lib1" "$mc1")"
    res "memcached get90 depth8 N=$N | libellula $lib8 ops/s | memcached $mc8 ops/s | ratio $(ratio "$lib8" "$mc8")"
  done
else
  [[ " $SKIP " == *" mc "* ]] || res "memcached: skipped (libellula, memcached or mcload missing)"
fi

res "# done in $(elapsed) s"
# Keep raw.log under the 16 MiB that some collectors accept (its end matters most).
if [ "$(wc -c < "$RAW")" -gt 15000000 ]; then tail -c 15000000 "$RAW" > "$WORK/raw.tail" && mv "$WORK/raw.tail" "$RAW"; fi
