#!/usr/bin/env bash
# Overhead of the stall watchdog, measured in one run, A/B interleaved on the same binary:
#  - HTTP: wrk against `libellula serve --cpus 1` (pinned to core 0; wrk on the other
#    cores) with the watchdog on (--stall-ms 5) and off (--stall-ms 0), ROUNDS times each;
#  - IPI: `libellula bench ipi --quick` with LIBELLULA_STALL_MS=5 (a watchdog on every booted
#    system) and without.
# The run loop's per-job watch words are compiled in either way (two relaxed stores and a
# time-stamp read per job); "off" means no watchdog thread reads them.
#
# Usage: Scripts/bench-stall-overhead.sh [SECONDS (default 5)] [ROUNDS (default 3)]
# Env: LIBELLULA (default .build/release/libellula). Needs wrk.
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

echo "IPI bench (libellula bench ipi --json --quick), watchdog on vs off, interleaved:"
for r in $(seq "$ROUNDS"); do
  LIBELLULA_STALL_MS=5 "$BIN" bench ipi --json --quick > "/tmp/libellula-stall-on-$r.json"
  "$BIN" bench ipi --json --quick > "/tmp/libellula-stall-off-$r.json"
done
python3 - "$ROUNDS" <<'PY'
import json, sys, statistics
rounds = int(sys.argv[1])
def load(kind):
    rows = {}
    for r in range(1, rounds + 1):
        for line in open(f"/tmp/libellula-stall-{kind}-{r}.json"):
            line = line.strip()
            if not line.startswith("{"): continue
            d = json.loads(line)
            rows.setdefault((d["name"], d["unit"]), []).append(d["value"])
    return rows
on, off = load("on"), load("off")
for key in off:
    if key in on:
        a, b = statistics.median(on[key]), statistics.median(off[key])
        print(f"  {key[0]:<48} {a:>12.1f} vs {b:>12.1f} {key[1]:<10} on/off {a / b if b else float('nan'):.3f}")
PY
