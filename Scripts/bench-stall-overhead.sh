#!/usr/bin/env bash
# Overhead of the stall watchdog, measured in one run, A/B interleaved on the same binary:
#  - HTTP: wrk against `libellula serve --cpus 1` (pinned to core 0; wrk on the other
#    cores) with the watchdog on (--stall-ms 5) and off (--stall-ms 0), ROUNDS times each;
#  - IPI: `libellula bench ipi --quick` with LIBELLULA_STALL_MS=5 (a watchdog on every booted
#    system) and without.
# The run loop's per-job watch words are compiled in either way (two stores at a job's
# start, one at its end, no clock read); "off" means no watchdog thread reads them.
# With BASELINE=another-libellula-binary the IPI part also runs that binary, on and off,
# interleaved with this one in the same rounds (before/after a change to the watch words).
#
# Last, the watchdog thread's own CPU time per look and per second (from /_stats.json of a
# `serve --cpus 2 --stall-ms 5`, idle and under wrk): CPU time it takes from the cores.
#
# Usage: Scripts/bench-stall-overhead.sh [SECONDS (default 5)] [ROUNDS (default 3)]
# Env: LIBELLULA (default .build/release/libellula), BASELINE (optional), NO_HTTP=1 or
# NO_IPI=1 (skip that part). Needs wrk for the HTTP part.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
BIN=${LIBELLULA:-.build/release/libellula}
PORT=18530
[ -x "$BIN" ] || swift build -c release --product libellula
CORES=$(nproc)
LOAD_SET="1-$((CORES - 1))"
[ "$CORES" -ge 2 ] || { echo "needs 2 or more cores" >&2; exit 1; }
SRV=
trap '[ -n "$SRV" ] && kill "$SRV" 2>/dev/null; wait 2>/dev/null || true' EXIT

http_round() {   # $1: stall-ms
  taskset -c 0 "$BIN" serve --cpus 1 --http "127.0.0.1:$PORT" --no-memcached --stall-ms "$1" --log-level error &
  SRV=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/hello.txt" >/dev/null && break; sleep 0.1; done
  taskset -c "$LOAD_SET" wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$PORT/hello.txt" | awk '/Requests\/sec/ {print $2}'
  kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=
}

if [ -z "${NO_HTTP:-}" ]; then
echo "HTTP requests/s (wrk -t1 -c32, /hello.txt, 1 server CPU), watchdog on vs off:"
on=(); off=()
for r in $(seq "$ROUNDS"); do
  a=$(http_round 5); b=$(http_round 0)
  on+=("$a"); off+=("$b")
  echo "  round $r: on $a  off $b"
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import sys, statistics
on = [float(x) for x in sys.argv[1].split()]; off = [float(x) for x in sys.argv[2].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"  median on {m_on:.0f}  off {m_off:.0f}  on/off {m_on / m_off:.3f}")
PY
fi

if [ -z "${NO_IPI:-}" ]; then
echo "IPI bench (libellula bench ipi --json --quick), watchdog on vs off, interleaved:"
KINDS="on off"
[ -n "${BASELINE:-}" ] && KINDS="on off base-on base-off"
for r in $(seq "$ROUNDS"); do
  for k in $KINDS; do
    case $k in
      on) LIBELLULA_STALL_MS=5 "$BIN" bench ipi --json --quick ;;
      off) "$BIN" bench ipi --json --quick ;;
      base-on) LIBELLULA_STALL_MS=5 "$BASELINE" bench ipi --json --quick ;;
      base-off) "$BASELINE" bench ipi --json --quick ;;
    esac > "/tmp/libellula-stall-$k-$r.json"
  done
done
python3 - "$ROUNDS" $KINDS <<'PY'
import json, sys, statistics
rounds = int(sys.argv[1]); kinds = sys.argv[2:]
def load(kind):
    rows = {}
    for r in range(1, rounds + 1):
        seen = set()
        for line in open(f"/tmp/libellula-stall-{kind}-{r}.json"):
            line = line.strip()
            if not line.startswith("{"): continue
            d = json.loads(line)
            key = (d["name"], d["unit"])
            if key in seen: continue  # one row per baseline: the value repeats
            seen.add(key)
            rows.setdefault(key, []).append(d["value"])
    return rows
data = {k: load(k) for k in kinds}
def med(k, key): return statistics.median(data[k][key])
print(f"  {'row':<52} " + " ".join(f"{k:>12}" for k in kinds) + "   on/off" + ("  off/base-off  on/base-off" if "base-off" in kinds else ""))
for key in data["off"]:
    if not all(key in data[k] for k in kinds): continue
    vals = [med(k, key) for k in kinds]
    line = f"  {key[0][:44] + ' (' + key[1] + ')':<52} " + " ".join(f"{v:>12.1f}" for v in vals)
    line += f"   {med('on', key) / med('off', key):.3f}" if med('off', key) else ""
    if "base-off" in kinds and med('base-off', key):
        line += f"  {med('off', key) / med('base-off', key):.3f}        {med('on', key) / med('base-off', key):.3f}"
    print(line)
PY
fi

echo "The watchdog's own CPU use (serve --cpus 2 --stall-ms 5, $SECS s idle, then $SECS s under wrk -t1 -c32):"
"$BIN" serve --cpus 2 --http "127.0.0.1:$PORT" --no-memcached --stall-ms 5 --log-level error &
SRV=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/hello.txt" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/_stats.json" > /tmp/libellula-stall-self-0.json
sleep "$SECS"
curl -sf "http://127.0.0.1:$PORT/_stats.json" > /tmp/libellula-stall-self-1.json
if command -v wrk >/dev/null; then
  wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$PORT/hello.txt" >/dev/null
  curl -sf "http://127.0.0.1:$PORT/_stats.json" > /tmp/libellula-stall-self-2.json
fi
kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=
python3 - <<'PY'
import json, os
docs = [json.load(open(f"/tmp/libellula-stall-self-{i}.json")) for i in range(3) if os.path.exists(f"/tmp/libellula-stall-self-{i}.json")]
for label, a, b in [("idle", 0, 1), ("under wrk", 1, 2)][:len(docs) - 1]:
    sa, sb = docs[a]["stalls"], docs[b]["stalls"]
    polls = sb["polls"] - sa["polls"]; cpu = sb["watchdog_cpu_seconds"] - sa["watchdog_cpu_seconds"]
    secs = docs[b]["timestamp"] - docs[a]["timestamp"]
    if polls > 0 and secs > 0:
        print(f"  {label:<10} {polls / secs:7.0f} looks/s  {cpu / polls * 1e6:6.2f} µs CPU per look  {cpu / secs * 100:5.2f} % of one core")
PY
