#!/usr/bin/env bash
# Overhead of the stall watchdog (issue 17 goal: <= 1 % on the HTTP and IPI benchmarks),
# watchdog on vs off, measured in ONE run on ONE binary, rounds interleaved and alternated
# (on,off / off,on / on,off ...) so that drift of the machine falls on both sides:
#  - HTTP: wrk against `libellula serve --cpus $SERVER_CPUS` (pinned to the first cores; wrk
#    on the others) with --stall-ms 5 (on) and --stall-ms 0 (off);
#  - IPI: `libellula bench ipi --json --quick` with LIBELLULA_STALL_MS=5 (a watchdog on every
#    booted system) and without.
# The run loop's per-job watch words are compiled in either way (two stores at a job's
# start, one at its end, no clock read); "off" means no watchdog thread reads them.
# For each benchmark it prints one line:
#   SUMMARY <bench> <row> on=<median> off=<median> <unit> on/off=<median of the per-round
#   ratios> spread=[<min>,<max> of those ratios] cost=<%, positive: the watchdog is worse>
# Last, the watchdog's own wakeups (looks/s) and CPU time per look, idle and under wrk,
# from /_stats.json of a `serve` with the watchdog on.
#
# Usage: Scripts/bench-stall-overhead.sh [SECONDS per HTTP round (default 5)] [ROUNDS (default 6)]
# Env: LIBELLULA_BIN (default .build/release/libellula; LIBELLULA is accepted too),
#      SERVER_CPUS (default 1, or 4 with 8+ cores), WRK_THREADS (default: the cores left, at
#      most 4), WRK_CONNECTIONS (default 32 per wrk thread), NO_HTTP=1 / NO_IPI=1 / NO_SELF=1
#      (skip a part), OUT (folder for the raw results, default a temporary one).
# Needs: wrk on PATH for the HTTP parts, python3, taskset. With Scripts/device-bundle.sh's
# folder on a machine without a toolchain: PATH=DEST/bin:$PATH LD_LIBRARY_PATH=DEST/lib
# LIBELLULA_BIN=<unpacked libellula> Scripts/bench-stall-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-6}
BIN=${LIBELLULA_BIN:-${LIBELLULA:-.build/release/libellula}}
PORT=${PORT:-18530}
[ -x "$BIN" ] || swift build -c release --product libellula
CORES=$(nproc)
[ "$CORES" -ge 2 ] || { echo "needs 2 or more cores" >&2; exit 1; }
if [ -z "${SERVER_CPUS:-}" ]; then if [ "$CORES" -ge 8 ]; then SERVER_CPUS=4; else SERVER_CPUS=1; fi; fi
LEFT=$((CORES - SERVER_CPUS))
[ "$LEFT" -ge 1 ] || { echo "SERVER_CPUS=$SERVER_CPUS leaves no core for wrk" >&2; exit 1; }
WRK_THREADS=${WRK_THREADS:-$((LEFT < 4 ? LEFT : 4))}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-$((32 * WRK_THREADS))}
SERVER_SET="0-$((SERVER_CPUS - 1))"
LOAD_SET="$SERVER_CPUS-$((CORES - 1))"
OUT=${OUT:-$(mktemp -d /tmp/libellula-stall-bench.XXXXXX)}
mkdir -p "$OUT"
# GET a URL to stdout (python3, so that curl is not needed); fails on an error status.
fetch() { python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=5).read())' "$1"; }
SRV=
cleanup() { if [ -n "$SRV" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi; }
trap cleanup EXIT
echo "machine: $CORES cores, load average $(cut -d' ' -f1-3 /proc/loadavg); binary $BIN; raw results in $OUT"

start_server() {   # $1: stall-ms, $2: cpus, $3: core set
  taskset -c "$3" "$BIN" serve --cpus "$2" --http "127.0.0.1:$PORT" --no-memcached --stall-ms "$1" --log-level error &
  SRV=$!
  for _ in $(seq 100); do fetch "http://127.0.0.1:$PORT/hello.txt" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server did not start" >&2; exit 1
}
stop_server() { kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=; }

# One side of one round: "on" or "off".
http_side() {
  local ms=0; [ "$1" = on ] && ms=5
  start_server "$ms" "$SERVER_CPUS" "$SERVER_SET"
  taskset -c "$LOAD_SET" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d1s "http://127.0.0.1:$PORT/hello.txt" >/dev/null  # warm-up
  taskset -c "$LOAD_SET" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${SECS}s" "http://127.0.0.1:$PORT/hello.txt" \
    | awk '/Requests\/sec/ {print $2}'
  stop_server
}
ipi_side() {
  if [ "$1" = on ]; then LIBELLULA_STALL_MS=5 "$BIN" bench ipi --json --quick; else "$BIN" bench ipi --json --quick; fi
}

# Runs `$1_side` ROUNDS times each way, alternating which side goes first.
interleave() {
  for r in $(seq "$ROUNDS"); do
    local order="on off"; [ $((r % 2)) -eq 0 ] && order="off on"
    for k in $order; do "$1_side" "$k" > "$OUT/$1-$k-$r.txt"; done
    echo "  $1 round $r/$ROUNDS done ($order)" >&2
  done
}

summarize() {   # $1: bench name (http or ipi)
python3 - "$OUT" "$1" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, bench, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rows(kind, r):
    path = f"{out}/{bench}-{kind}-{r}.txt"
    text = open(path).read() if os.path.exists(path) else ""
    if bench == "http":
        try: return {("requests", "req/s"): float(text.split()[0])}
        except (IndexError, ValueError): return {}
    got = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"): continue
        d = json.loads(line)
        got.setdefault((d["name"], d["unit"]), d["value"])  # one value per row (baselines repeat it)
    return got
per = [(rows("on", r), rows("off", r)) for r in range(1, rounds + 1)]
keys = [k for k in per[0][1] if all(k in a and k in b for a, b in per)]
for key in keys:
    on = [a[key] for a, _ in per]; off = [b[key] for _, b in per]
    ratios = [x / y for x, y in zip(on, off) if y]
    if not ratios: continue
    m = statistics.median(ratios)
    higher_better = "/s" in key[1]
    cost = (1 - m) * 100 if higher_better else (m - 1) * 100
    name = key[0].replace(" ", "_")[:48]
    fmt = lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    print(f"SUMMARY {bench} {name} on={fmt(statistics.median(on))} off={fmt(statistics.median(off))} {key[1]} "
          f"on/off={m:.3f} spread=[{min(ratios):.3f},{max(ratios):.3f}] cost={cost:+.1f}% rounds={len(ratios)}")
PY
}

if [ -z "${NO_HTTP:-}" ]; then
  echo "HTTP: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS ${SECS}s on cores $LOAD_SET, /hello.txt, serve --cpus $SERVER_CPUS on cores $SERVER_SET, --stall-ms 5 vs 0"
  interleave http
  summarize http
fi

if [ -z "${NO_IPI:-}" ]; then
  echo "IPI: libellula bench ipi --json --quick, LIBELLULA_STALL_MS=5 vs unset"
  interleave ipi
  summarize ipi
fi

if [ -z "${NO_SELF:-}" ]; then
  echo "The watchdog's own wakeups and CPU time (serve --cpus $SERVER_CPUS --stall-ms 5, ${SECS}s idle, then ${SECS}s under wrk):"
  start_server 5 "$SERVER_CPUS" "$SERVER_SET"
  sleep 1.2   # one accounting second
  fetch "http://127.0.0.1:$PORT/_stats.json" > "$OUT/self-0.json"
  sleep "$SECS"
  fetch "http://127.0.0.1:$PORT/_stats.json" > "$OUT/self-1.json"
  if command -v wrk >/dev/null; then
    taskset -c "$LOAD_SET" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${SECS}s" "http://127.0.0.1:$PORT/hello.txt" >/dev/null
    fetch "http://127.0.0.1:$PORT/_stats.json" > "$OUT/self-2.json"
  fi
  stop_server
  python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
docs = [json.load(open(f"{out}/self-{i}.json")) for i in range(3) if os.path.exists(f"{out}/self-{i}.json")]
for label, a, b in [("idle", 0, 1), ("under_wrk", 1, 2)][:len(docs) - 1]:
    sa, sb = docs[a]["stalls"], docs[b]["stalls"]
    looks = sb["polls"] - sa["polls"]; cpu = sb["watchdog_cpu_seconds"] - sa["watchdog_cpu_seconds"]
    secs = docs[b]["timestamp"] - docs[a]["timestamp"]
    parks = sb.get("parks", 0) - sa.get("parks", 0)
    if secs > 0:
        per_look = f"{cpu / looks * 1e6:.1f}" if looks > 0 else "-"
        print(f"SUMMARY watchdog {label} looks/s={looks / secs:.0f} parks/s={parks / secs:.1f} "
              f"cpu_per_look_us={per_look} cpu={cpu / secs * 100:.2f}%_of_one_core late_looks={sb.get('late_looks', 0)}")
PY
fi
