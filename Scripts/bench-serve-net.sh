#!/usr/bin/env bash
# `serve` on Libellula's own TCP/IP stack against `serve` on host sockets, nginx and
# memcached, all in one run of the Scripts/netrig.sh rig, all reached the same way: wrk and
# mcload run in the peer namespace; every server runs in the router namespace on the same
# core (taskset, and --cpus 1). The host-socket servers (serve --net host, nginx,
# memcached) listen on the router's veth address, 10.200.1.254; serve --net tap answers on
# 10.200.2.1 behind the router's TAP (one more hop: forwarding and the TAP itself).
#
# Rows: HTTP keep-alive of a 6-byte and a 4 KiB file; a 6-byte file with a new connection
# per request (Connection: close); memcached GETs (90 % get, 32-byte values, depth 1, from
# Scripts/memcached/mcload.c, and from memaslap when libmemcached-tools is installed). For
# each: requests per second, the ratio to serve --net host, and server CPU per request
# (user + system of the server process, from /proc; softirq work done on behalf of the
# server outside its syscalls is not included). Then malloc calls per keep-alive request
# for both serve backends (Scripts/malloc-count.c preloaded; a loaded run minus an idle
# one), and with PERF=1 a perf profile of serve --net tap under the 6-byte load.
#
# Every server runs ROUNDS times (default 2), in turn, and each row keeps its best round (on a
# loaded machine a sleeping server loses more to neighbours than a spinning one); the rounds'
# figures are printed too.
#
# With TAP_AB=1 each round also runs serve --net tap with LIBELLULA_TCP_HOLD_SMALL_WRITES=0
# (every small socket write transmits at once: the stack before the `tapflush` change), and a
# last table compares the two own-stack servers row by row, mallocs per request included.
#
# Usage: [ROUNDS=2] [PERF=1] [TAP_AB=1] Scripts/bench-serve-net.sh [SECONDS] [CONNECTIONS]   (defaults: 5 64)
# Needs root, wrk, nginx, memcached, curl, bc, gcc (and perf for PERF=1).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-5}
CONNS=${2:-64}
ROUNDS=${ROUNDS:-2}
CORES=$(nproc)
[ "$CORES" -ge 2 ] || { echo "needs 2 or more cores (server on core 0, load on the rest)" >&2; exit 1; }
LOAD_SET="1-$((CORES - 1))"
LOAD_THREADS=$((CORES - 1))
P=${RIG_PREFIX:-lbbench}   # RIG_PREFIX: another name, when two runs share the machine
RTR=(ip netns exec "$P-rtr")
PEER=(ip netns exec "$P-peer")
HOST_IP=10.200.1.254
OWN_IP=10.200.2.1
WORK=$(mktemp -d /tmp/libellula-bench-net.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=

cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  Scripts/netrig.sh down "$P"
  rm -rf "$WORK"
}
trap cleanup EXIT

MEMASLAP=$(command -v memaslap || command -v memcaslap || true)   # Debian: libmemcached-tools (optional)
for tool in wrk nginx memcached curl bc gcc; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
if [ -z "${BIN:-}" ]; then
  swift build -c release --product libellula >/dev/null
  BIN=$(swift build -c release --show-bin-path)/libellula
fi
gcc -O2 -o "$WORK/mcload" Scripts/memcached/mcload.c
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" Scripts/malloc-count.c -ldl

Scripts/netrig.sh up "$P" >/dev/null
Scripts/netrig.sh tap "$P" "$P-tap" single    # one queue: the server has one CPU

mkdir -p "$WORK/www" "$WORK/tmp"
printf 'hello\n' > "$WORK/www/hello.txt"
head -c 4096 /dev/urandom > "$WORK/www/f4k.bin"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 60;
  open_file_cache max=1024 inactive=60s;
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  server { listen $HOST_IP:8080; root $WORK/www; }
}
CONF

wait_port() { # host port
  for _ in $(seq 1 200); do "${PEER[@]}" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing answers on $1:$2" >&2; return 1
}
cpu_ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo $total
}
start() { # label command...
  local label=$1; shift
  "${RTR[@]}" taskset -c 0 "$@" > "$WORK/$label.log" 2>&1 &
  SERVER_PID=$!
}
stop() { kill -"${1:-TERM}" "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }
per_request_cpu() { echo "($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3" | bc -l; }

http_rows() { # label ip round
  local label=$1 ip=$2 n=$3 row t0 t1 reqs
  "${PEER[@]}" taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d1s "http://$ip:8080/hello.txt" >/dev/null   # warm-up
  for row in 6B 4KiB close; do
    local path=/hello.txt extra=()
    [ "$row" = 4KiB ] && path=/f4k.bin
    [ "$row" = close ] && extra=(-H "Connection: close")
    t0=$(cpu_ticks "$SERVER_PID")
    "${PEER[@]}" taskset -c "$LOAD_SET" wrk -t"$LOAD_THREADS" -c"$CONNS" -d"${SECS}s" "${extra[@]}" "http://$ip:8080$path" > "$WORK/$label.$row.wrk"
    t1=$(cpu_ticks "$SERVER_PID")
    reqs=$(awk '/requests in/ {print $1}' "$WORK/$label.$row.wrk")
    awk '/Requests\/sec/ {print $2}' "$WORK/$label.$row.wrk" > "$WORK/$label.$row.rps.$n"
    grep -q "Socket errors" "$WORK/$label.$row.wrk" && grep "Socket errors" "$WORK/$label.$row.wrk" | sed "s/^/# round $n, $label $row: /" >> "$WORK/notes"
    grep -q "Non-2xx" "$WORK/$label.$row.wrk" && echo "# round $n, $label $row: non-2xx responses" >> "$WORK/notes"
    printf '%.1f' "$(per_request_cpu "$t0" "$t1" "$reqs")" > "$WORK/$label.$row.cpu.$n"
  done
}
memcached_row() { # label ip round
  local label=$1 ip=$2 n=$3 t0 t1 out ops
  "${PEER[@]}" taskset -c "$LOAD_SET" "$WORK/mcload" "$ip" 11211 32 1 1 90 >/dev/null   # warm-up, preload
  t0=$(cpu_ticks "$SERVER_PID")
  out=$("${PEER[@]}" taskset -c "$LOAD_SET" "$WORK/mcload" "$ip" 11211 32 1 "$SECS" 90)
  t1=$(cpu_ticks "$SERVER_PID")
  ops=$(echo "$out" | sed -n 's/.*ops=\([0-9]*\).*/\1/p')
  echo "$out" | sed -n 's/.*ops_per_sec=\([0-9.]*\).*/\1/p' > "$WORK/$label.mc.rps.$n"
  printf '%.1f' "$(per_request_cpu "$t0" "$t1" "$ops")" > "$WORK/$label.mc.cpu.$n"
}

echo "# $(date -u +%F) $(uname -r), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# servers on core 0 in $P-rtr; wrk -t$LOAD_THREADS -c$CONNS -d${SECS}s and mcload (32 connections, depth 1, 90 % get) on cores $LOAD_SET in $P-peer"

memaslap_row() { # label ip round: memaslap (Debian's memcaslap), its default 90/10 get/set mix
  local label=$1 ip=$2 n=$3 t0 t1 out
  [ -n "$MEMASLAP" ] || return 0
  t0=$(cpu_ticks "$SERVER_PID")
  out=$("${PEER[@]}" taskset -c "$LOAD_SET" "$MEMASLAP" -s "$ip:11211" -t "${SECS}s" -c 32 -T "$LOAD_THREADS" -X 32 2>&1 | tail -1)
  t1=$(cpu_ticks "$SERVER_PID")
  echo "$out" | sed -n 's/.*TPS: \([0-9]*\).*/\1/p' > "$WORK/$label.ms.rps.$n"
  printf '%.1f' "$(per_request_cpu "$t0" "$t1" "$(echo "$out" | sed -n 's/.*Ops: \([0-9]*\).*/\1/p')")" > "$WORK/$label.ms.cpu.$n"
}

round() { # n: every server once, in turn; files get the suffix .n
  local n=$1
  start tap "$BIN" serve --cpus 1 --net "tap:$P-tap" --root "$WORK/www" --log-level warning
  wait_port $OWN_IP 8080; wait_port $OWN_IP 11211
  http_rows "tap" $OWN_IP $n; memcached_row "tap" $OWN_IP $n; memaslap_row "tap" $OWN_IP $n
  "${PEER[@]}" curl -s "http://$OWN_IP:8080/_stats.json" > "$WORK/tap.stats.json"
  stop

  if [ "${TAP_AB:-0}" = 1 ]; then
    start tapoff env LIBELLULA_TCP_HOLD_SMALL_WRITES=0 "$BIN" serve --cpus 1 --net "tap:$P-tap" --root "$WORK/www" --log-level warning
    wait_port $OWN_IP 8080; wait_port $OWN_IP 11211
    http_rows "tapoff" $OWN_IP $n; memcached_row "tapoff" $OWN_IP $n; memaslap_row "tapoff" $OWN_IP $n
    stop
  fi

  start host "$BIN" serve --cpus 1 --http "$HOST_IP:8080" --memcached "$HOST_IP:11211" --root "$WORK/www" --log-level warning
  wait_port $HOST_IP 8080; wait_port $HOST_IP 11211
  http_rows "host" $HOST_IP $n; memcached_row "host" $HOST_IP $n; memaslap_row "host" $HOST_IP $n
  stop

  start nginx nginx -c "$WORK/nginx.conf" -p "$WORK"
  wait_port $HOST_IP 8080
  http_rows "nginx" $HOST_IP $n
  stop QUIT
  sleep 0.5

  start memcached memcached -t 1 -l $HOST_IP -p 11211 -U 0 -u root
  wait_port $HOST_IP 11211
  memcached_row "memcached" $HOST_IP $n; memaslap_row "memcached" $HOST_IP $n
  stop
}
for n in $(seq 1 "$ROUNDS"); do round "$n"; done

# The better of the rounds, per server and row (with that round's CPU per request).
for label in tap tapoff host nginx memcached; do
  for row in 6B 4KiB close mc ms; do
    best=0
    for n in $(seq 1 "$ROUNDS"); do
      [ -f "$WORK/$label.$row.rps.$n" ] || continue
      r=$(cat "$WORK/$label.$row.rps.$n")
      if [ "$(echo "$r > $best" | bc -l)" = 1 ]; then best=$r; cp "$WORK/$label.$row.cpu.$n" "$WORK/$label.$row.cpu"; fi
      echo "$r" >> "$WORK/$label.$row.all"
    done
    echo "$best" > "$WORK/$label.$row.rps"
  done
done

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f×'; }
echo
echo "| row | serve --net tap req/s | serve --net host req/s | tap / host | nginx (memcached) req/s | tap / nginx | server CPU µs/req: tap / host / nginx |"
echo "|---|---|---|---|---|---|---|"
for row in 6B 4KiB close mc ms; do
  other=nginx; name="HTTP $row keep-alive"
  [ "$row" = close ] && name="HTTP 6B, new connection per request"
  [ "$row" = mc ] && { other=memcached; name="memcached get/set 90/10, depth 1 (mcload)"; }
  [ "$row" = ms ] && { [ -n "$MEMASLAP" ] || continue; other=memcached; name="memcached get/set 90/10 (memaslap, 32 conns)"; }
  t=$(cat "$WORK/tap.$row.rps"); h=$(cat "$WORK/host.$row.rps"); o=$(cat "$WORK/$other.$row.rps")
  printf '| %s | %.0f | %.0f | %s | %.0f | %s | %s / %s / %s |\n' "$name" "$t" "$h" "$(ratio "$t" "$h")" "$o" "$(ratio "$t" "$o")" \
    "$(cat "$WORK/tap.$row.cpu")" "$(cat "$WORK/host.$row.cpu")" "$(cat "$WORK/$other.$row.cpu")"
done
for label in tap tapoff host nginx memcached; do
  for row in 6B 4KiB close mc ms; do
    [ -f "$WORK/$label.$row.all" ] && echo "# rounds, $label $row: $(tr '\n' ' ' < "$WORK/$label.$row.all")"
  done
done
[ -f "$WORK/notes" ] && cat "$WORK/notes"
python3 - "$WORK/tap.stats.json" <<'PY' || true
import json, sys
n = json.load(open(sys.argv[1])).get("network") or {}
for i, c in enumerate(n.get("cpus", [])):
    print(f"# tap /_stats cpu{i}: listeners {c['listeners']}, accepted {c['accepted']}, forwarded {c['forwarded']}")
PY

# malloc calls per keep-alive request: a loaded run minus an idle run, per backend.
mallocs() { # label ip serve-args...
  local label=$1 ip=$2; shift 2
  local idle loaded reqs envs=()
  [ "$label" = tapoff ] && envs=(LIBELLULA_TCP_HOLD_SMALL_WRITES=0)
  for mode in idle load; do
    start "mc-$label" env "${envs[@]}" MALLOC_COUNT_FILE="$WORK/mc.$label.$mode" LD_PRELOAD="$WORK/malloc-count.so" "$BIN" serve --cpus 1 --no-memcached \
      --root "$WORK/www" --log-level warning "$@"
    wait_port "$ip" 8080
    # Both runs warm up (ARP, first connections, caches); only the loaded one then counts.
    "${PEER[@]}" taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d1s "http://$ip:8080/hello.txt" > /dev/null
    if [ "$mode" = load ]; then "${PEER[@]}" taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d3s "http://$ip:8080/hello.txt" > "$WORK/mc.$label.wrk"; fi
    stop
  done
  idle=$(cat "$WORK/mc.$label.idle"); loaded=$(cat "$WORK/mc.$label.load"); reqs=$(awk '/requests in/ {print $1}' "$WORK/mc.$label.wrk")
  echo "($loaded - $idle) / $reqs" | bc -l | xargs printf '%.3f' > "$WORK/mallocs.$label"
  echo "# malloc calls per keep-alive request, serve --net $label: $(cat "$WORK/mallocs.$label") (($loaded - $idle) over $reqs requests on $CONNS new connections)"
}
mallocs tap $OWN_IP --net "tap:$P-tap"
[ "${TAP_AB:-0}" = 1 ] && mallocs tapoff $OWN_IP --net "tap:$P-tap"
mallocs host $HOST_IP --http "$HOST_IP:8080"

# The compact summary: every ratio is own stack / baseline (req/s: above 1 is better for the
# own stack; CPU per request: below 1 is better).
cpu_ratio() { [ "$(echo "$2 > 0" | bc -l)" = 1 ] && ratio "$1" "$2" || echo "n/a"; }
echo
echo "## summary ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), best of $ROUNDS, ${SECS}s, $CONNS conns)"
echo "| row | req/s tap/host | CPU/req tap/host | req/s tap/other | CPU/req tap/other | other |"
echo "|---|---|---|---|---|---|"
for row in 6B 4KiB close mc ms; do
  other=nginx
  { [ "$row" = mc ] || [ "$row" = ms ]; } && other=memcached
  [ "$row" = ms ] && [ -z "$MEMASLAP" ] && continue
  t=$(cat "$WORK/tap.$row.rps"); h=$(cat "$WORK/host.$row.rps"); o=$(cat "$WORK/$other.$row.rps")
  tc=$(cat "$WORK/tap.$row.cpu"); hc=$(cat "$WORK/host.$row.cpu"); oc=$(cat "$WORK/$other.$row.cpu")
  printf '| %s | %s | %s | %s | %s | %s |\n' "$row" "$(ratio "$t" "$h")" "$(cpu_ratio "$tc" "$hc")" "$(ratio "$t" "$o")" "$(cpu_ratio "$tc" "$oc")" "$other"
done
echo "(rows: 6B and 4KiB keep-alive HTTP; close: 6B with a new connection per request; mc: mcload; ms: memaslap)"
echo "| mallocs/request (keep-alive) | tap $(cat "$WORK/mallocs.tap") | host $(cat "$WORK/mallocs.host") | | | |"

if [ "${TAP_AB:-0}" = 1 ]; then
  echo
  echo "## own stack, small writes held to the writer's park (tap) vs sent at once (tapoff), same run"
  paired_median() { # row kind(rps|cpu): median over the rounds of tap / tapoff
    for n in $(seq 1 "$ROUNDS"); do
      [ -f "$WORK/tap.$1.$2.$n" ] && [ -f "$WORK/tapoff.$1.$2.$n" ] || continue
      [ "$(echo "$(cat "$WORK/tapoff.$1.$2.$n") > 0" | bc -l)" = 1 ] || continue
      echo "$(cat "$WORK/tap.$1.$2.$n") / $(cat "$WORK/tapoff.$1.$2.$n")" | bc -l
    done | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) printf "%.2f×", v[(NR + 1) / 2]; else printf "%.2f×", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
  }
  echo "(best of $ROUNDS rounds; the median columns pair the two servers of each round, which ran back to back)"
  echo "| row | tap req/s | tapoff req/s | tap / tapoff | median per-round req/s tap / tapoff | median per-round CPU/req tap / tapoff | tap / host | tapoff / host |"
  echo "|---|---|---|---|---|---|---|---|"
  for row in 6B 4KiB close mc ms; do
    [ "$row" = ms ] && [ -z "$MEMASLAP" ] && continue
    t=$(cat "$WORK/tap.$row.rps"); f=$(cat "$WORK/tapoff.$row.rps"); h=$(cat "$WORK/host.$row.rps")
    printf '| %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' "$row" "$t" "$f" "$(ratio "$t" "$f")" "$(paired_median "$row" rps)" \
      "$(paired_median "$row" cpu)" "$(ratio "$t" "$h")" "$(ratio "$f" "$h")"
  done
  echo "| mallocs/request (keep-alive) | tap $(cat "$WORK/mallocs.tap") | tapoff $(cat "$WORK/mallocs.tapoff") | | | | |"
fi

if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  start perf "$BIN" serve --cpus 1 --net "tap:$P-tap" --root "$WORK/www" --no-memcached --log-level warning
  wait_port $OWN_IP 8080
  "${PEER[@]}" taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d6s "http://$OWN_IP:8080/hello.txt" > /dev/null &
  WRK=$!
  sleep 1
  perf record -q -F 1999 -g -o "$WORK/perf.data" -p "$SERVER_PID" -- sleep 4 2>/dev/null
  wait $WRK || true
  stop
  echo "# perf (serve --net tap, 6B keep-alive): self time by symbol"
  perf report -q -i "$WORK/perf.data" --no-children --sort dso,symbol -g none > "$WORK/perf.txt" 2>/dev/null || true
  grep '%' "$WORK/perf.txt" | sed -n '1,30p' | sed -E 's/ +$//; s/^ +/#   /' | cut -c1-160
fi
