#!/usr/bin/env bash
# HTTP benchmark rows: wrk against nginx (sendfile, open_file_cache) and `libellula serve`
# with its hot-file cache on and off (its open-file cache, like nginx's, stays on), serving the same HostFS directory, with the same
# number of server CPUs, in the same run. Servers are pinned to cores 0..CPUS-1 and wrk to
# the remaining cores (taskset). For every row it prints requests per second, the ratio to
# nginx, and server CPU time per request (user + system, from /proc).
#
# Rows: a 6-byte file; 4 KiB; 64 KiB; 1 MiB; 10,000 distinct 4 KiB files requested at
# random (a wrk Lua script, so the namecache and VFS are on the path); random missing names
# (404s); If-None-Match revalidations of the 4 KiB file (304s). Libellula runs with an
# LD_PRELOAD malloc counter (Scripts/malloc-count.c), which also gives allocations per request
# for every row.
#
# Usage: Scripts/bench-http.sh [CPUS] [SECONDS] [CONNECTIONS]     (defaults: 1 5 64)
# BEFORE_BIN=path/to/older/libellula adds that binary, hot cache off, to the same run (a
# before/after comparison of the same rows). ROUNDS=N repeats every row N times (the servers
# stay up, so later rounds are warm) and reports medians. ROWS="304 4KiB" measures only the
# rows named (default: all of them). SERVE_ARGS="--stall-ms 0" adds arguments to every
# `libellula serve` started (here: without the stall watchdog's 1 kHz wakeups).
# Needs: wrk, nginx, bc, curl, gcc (Debian: apt-get install wrk nginx bc curl gcc).
set -euo pipefail
cd "$(dirname "$0")/.."

CPUS=${1:-1}
SECS=${2:-5}
CONNS=${3:-64}
ROUNDS=${ROUNDS:-1}
CORES=$(nproc)
if [ "$CPUS" -ge "$CORES" ]; then echo "need more cores than server CPUs (have $CORES)" >&2; exit 1; fi
SERVER_SET="0-$((CPUS - 1))"
LOAD_SET="$CPUS-$((CORES - 1))"
LOAD_THREADS=$((CORES - CPUS))
PORT=18490
WORK=$(mktemp -d /tmp/libellula-bench-http.XXXXXX)
chmod 755 "$WORK"  # nginx's workers run as an unprivileged user
SERVER_PIDS=
cleanup() {
  local pid
  for pid in $SERVER_PIDS; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [ -s "$WORK/nginx-error.log" ]; then echo "nginx error log:" >&2; tail -5 "$WORK/nginx-error.log" >&2; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ulimit -n 65536 2>/dev/null || true
for tool in wrk bc curl gcc; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "missing nginx" >&2; exit 1; }

swift build -c release --product libellula >/dev/null
BIN=.build/release/libellula
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" Scripts/malloc-count.c -ldl -lpthread

# The served tree.
WWW="$WORK/www"
mkdir -p "$WWW/many"
printf 'hello\n' > "$WWW/hello.txt"
head -c 4096 /dev/urandom > "$WWW/f4k.bin"
head -c 65536 /dev/urandom > "$WWW/f64k.bin"
head -c 1048576 /dev/urandom > "$WWW/f1m.bin"
for d in $(seq 0 99); do
  mkdir -p "$WWW/many/$d"
  for f in $(seq 0 99); do head -c 4096 "$WWW/f64k.bin" > "$WWW/many/$d/$f.bin"; done
done

cat > "$WORK/many.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/many/" .. math.random(0, 99) .. "/" .. math.random(0, 99) .. ".bin")
end
LUA
cat > "$WORK/missing.lua" <<'LUA'
math.randomseed(os.time() + 1)
request = function()
  return wrk.format("GET", "/missing/" .. math.random(0, 1000000000) .. ".txt")
end
LUA

mkdir -p "$WORK/tmp"
cat > "$WORK/nginx.conf" <<CONF
worker_processes $CPUS;
worker_cpu_affinity auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log crit;
events { worker_connections 4096; }
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
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  server { listen 127.0.0.1:$PORT reuseport; root $WWW; }
}
CONF

# Until something answers on a port.
wait_port() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/hello.txt" && return 0; sleep 0.1; done; return 1; }

# CPU ticks (user + system) used so far by a process and its children (nginx workers).
cpu_ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo $total
}

ALL_ROWS="6B 4KiB 64KiB 1MiB many missing 304"
ROWS=${ROWS:-$ALL_ROWS}
for row in $ROWS; do
  case " $ALL_ROWS " in *" $row "*) ;; *) echo "unknown row '$row' (rows: $ALL_ROWS)" >&2; exit 1 ;; esac
done
row_args() { # row -> wrk arguments after the URL base
  case $1 in
    6B) echo "/hello.txt" ;;
    4KiB) echo "/f4k.bin" ;;
    64KiB) echo "/f64k.bin" ;;
    1MiB) echo "/f1m.bin" ;;
    many) echo "/ -s $WORK/many.lua" ;;
    missing) echo "/ -s $WORK/missing.lua" ;;
    304) echo "/f4k.bin" ;;
  esac
}

# malloc calls so far by the server under test (the shim rewrites the file every 20 ms).
mallocs() { if [ -f "$1" ]; then sleep 0.05; cat "$1" 2>/dev/null || echo 0; else echo 0; fi; }

measure() { # label port pid round row
  local label=$1 port=$2 pid=$3 round=$4 row=$5 t0 t1 m0 m1 rps reqs cpu_us etag live="$WORK/mallocs.$1"
  # shellcheck disable=SC2046
  set -- $(row_args "$row")
  local path=$1; shift
  local extra=("$@")
  if [ "$row" = 304 ]; then
    etag=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/f4k.bin" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
    extra=(-H "If-None-Match: $etag")
  fi
  m0=$(mallocs "$live")
  t0=$(cpu_ticks "$pid")
  if ! taskset -c "$LOAD_SET" wrk -t "$LOAD_THREADS" -c "$CONNS" -d "${SECS}s" "${extra[@]}" "http://127.0.0.1:$port$path" > "$WORK/$label.$row.wrk"; then
    echo "wrk failed for $label, row $row" >&2
    cat "$WORK"/libellula-*.log >&2 2>/dev/null || true
    exit 1
  fi
  t1=$(cpu_ticks "$pid")
  m1=$(mallocs "$live")
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$label.$row.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$WORK/$label.$row.wrk")
  cpu_us=$(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $reqs" | bc -l)
  if grep -q "Non-2xx" "$WORK/$label.$row.wrk" && [ "$row" != missing ] && [ "$row" != 304 ]; then
    echo "warning: $label $row had non-2xx responses ($(awk '/Non-2xx/ {print $NF}' "$WORK/$label.$row.wrk") of $reqs)" >&2
  fi
  echo "$rps" >> "$WORK/$label.$row.rps"
  printf '%.2f\n' "$cpu_us" >> "$WORK/$label.$row.cpu"
  if [ -f "$live" ]; then printf '%.3f\n' "$(echo "($m1 - $m0) / $reqs" | bc -l)"; else echo "—"; fi >> "$WORK/$label.$row.alloc"
}

# The median of a file's lines (numbers; "—" passes through).
median() { sort -g "$1" | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }

echo "# $(date -u +%F) $(uname -r), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# server cores $SERVER_SET, wrk -t$LOAD_THREADS -c$CONNS -d${SECS}s on cores $LOAD_SET, $ROUNDS round(s), medians"

# Every server runs at once on its own port (idle ones sleep in epoll_wait); each row is
# measured on all of them back to back, so load that drifts on a shared machine hits every
# server alike.
LABELS="nginx hot-on hot-off"
taskset -c "$SERVER_SET" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null &
SERVER_PIDS=$!
declare -A PORT_OF PID_OF
PORT_OF[nginx]=$PORT; PID_OF[nginx]=$!
start_libellula() { # label binary hot-cache port
  # shellcheck disable=SC2086  # SERVE_ARGS splits into words on purpose
  MALLOC_COUNT_LIVE="$WORK/mallocs.$1" LD_PRELOAD="$WORK/malloc-count.so" \
    taskset -c "$SERVER_SET" "$2" serve --cpus "$CPUS" --http "127.0.0.1:$4" --root "$WWW" --no-memcached \
    --hot-cache "$3" --log-level warning ${SERVE_ARGS:-} 2> "$WORK/libellula-$1.log" &
  PID_OF[$1]=$!
  PORT_OF[$1]=$4
  SERVER_PIDS="$SERVER_PIDS $!"
}
start_libellula hot-on "$BIN" on $((PORT + 1))
start_libellula hot-off "$BIN" off $((PORT + 2))
if [ -n "${BEFORE_BIN:-}" ]; then
  start_libellula before-off "$BEFORE_BIN" off $((PORT + 3))
  LABELS="$LABELS before-off"
fi
for label in $LABELS; do
  wait_port "${PORT_OF[$label]}" || { echo "$label did not start:" >&2; cat "$WORK/libellula-$label.log" >&2 2>/dev/null; exit 1; }
  taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORT_OF[$label]}/hello.txt" >/dev/null  # warm-up
done
for round in $(seq 1 "$ROUNDS"); do
  for row in $ROWS; do
    for label in $LABELS; do measure "$label" "${PORT_OF[$label]}" "${PID_OF[$label]}" "$round" "$row"; done
  done
done
for label in $LABELS; do  # error answers, by class, from libellula's own counters
  [ "$label" = nginx ] || echo "# $label: $(curl -s "http://127.0.0.1:${PORT_OF[$label]}/_stats.json" | grep -o '"responses[45]xx" *: *[0-9]*' | tr -d ' "' | xargs)"
done

NGINX_VERSION=$($NGINX -v 2>&1 | sed 's/.*nginx\///')
echo
if [ -n "${BEFORE_BIN:-}" ]; then
  echo "| row | nginx $NGINX_VERSION req/s | hot cache on | ratio | hot cache off | ratio | before, hot cache off | ratio | server CPU µs/req: nginx / on / off / before | mallocs/req: on / off / before |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
else
  echo "| row | nginx $NGINX_VERSION req/s | hot cache on | ratio | hot cache off (open-file cache on) | ratio | server CPU µs/req: nginx / on / off | mallocs/req: on / off |"
  echo "|---|---|---|---|---|---|---|---|"
fi
for row in $ROWS; do
  n=$(median "$WORK/nginx.$row.rps"); on=$(median "$WORK/hot-on.$row.rps"); off=$(median "$WORK/hot-off.$row.rps")
  printf '| %s | %.0f | %.0f | %.2f× | %.0f | %.2f× ' "$row" "$n" "$on" "$(echo "$on / $n" | bc -l)" "$off" "$(echo "$off / $n" | bc -l)"
  if [ -n "${BEFORE_BIN:-}" ]; then
    b=$(median "$WORK/before-off.$row.rps")
    printf '| %.0f | %.2f× | %s / %s / %s / %s | %s / %s / %s |\n' "$b" "$(echo "$b / $n" | bc -l)" \
      "$(median "$WORK/nginx.$row.cpu")" "$(median "$WORK/hot-on.$row.cpu")" "$(median "$WORK/hot-off.$row.cpu")" "$(median "$WORK/before-off.$row.cpu")" \
      "$(median "$WORK/hot-on.$row.alloc")" "$(median "$WORK/hot-off.$row.alloc")" "$(median "$WORK/before-off.$row.alloc")"
  else
    printf '| %s / %s / %s | %s / %s |\n' "$(median "$WORK/nginx.$row.cpu")" "$(median "$WORK/hot-on.$row.cpu")" "$(median "$WORK/hot-off.$row.cpu")" \
      "$(median "$WORK/hot-on.$row.alloc")" "$(median "$WORK/hot-off.$row.alloc")"
  fi
done
