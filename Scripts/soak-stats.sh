#!/usr/bin/env bash
# Soak for issue 11 item 4: floods /_stats.json (open loop, Scripts/http-rate.c) against a
# running `libellula serve` with memcached on, samples the server's RSS every 5 s, and
# meanwhile measures plain file GETs (/hello.txt at 200 req/s) to show the statistics pages
# do not starve file serving.
#
# Usage: Scripts/soak-stats.sh [TOTAL_REQUESTS (default 1000000)] [RATE (default 20000)]
# Env: LIBELLULA (default .build/release/libellula), CPUS (default 2), PORT (default 18480).
# Needs gcc. Prints the RSS samples and both latency summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-1000000}
RATE=${2:-20000}
BIN=${LIBELLULA:-.build/release/libellula}
CPUS=${CPUS:-2}
PORT=${PORT:-18480}
SECS=$(( (TOTAL + RATE - 1) / RATE ))
[ -x "$BIN" ] || swift build -c release --product libellula
WORK=$(mktemp -d)
trap 'kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; rm -rf "$WORK"' EXIT
gcc -O2 -o "$WORK/http-rate" Scripts/http-rate.c
"$BIN" serve --cpus "$CPUS" --http "127.0.0.1:$PORT" --memcached "127.0.0.1:$((PORT + 1))" --log-level warning &
SRV=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/hello.txt" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$SRV/status"; }
echo "server pid $SRV, $CPUS CPUs; flooding /_stats.json: $TOTAL requests at $RATE req/s over $SECS s"
echo "t=0s rss=$(rss) KiB"
"$WORK/http-rate" "$PORT" /_stats.json 8 "$RATE" "$SECS" > "$WORK/flood.txt" &
FLOOD=$!
"$WORK/http-rate" "$PORT" /hello.txt 2 200 "$SECS" > "$WORK/files.txt" &
FILES=$!
for (( t = 5; t <= SECS; t += 5 )); do sleep 5; echo "t=${t}s rss=$(rss) KiB"; done
wait "$FLOOD" "$FILES" || true
echo "end rss=$(rss) KiB"
echo "/_stats.json flood: $(cat "$WORK/flood.txt")"
echo "/hello.txt during the flood: $(cat "$WORK/files.txt")"
