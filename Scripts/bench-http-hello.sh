#!/usr/bin/env bash
# HTTP benchmark of one 6-byte file (latency, allocations, Hummingbird; the rows over file sizes
# and misses are Scripts/bench-http.sh): wrk against `libellula serve` and against nginx (Debian) serving the same
# small file with the same number of server CPUs, in the same run. The servers are pinned to
# cores 0..CPUS-1 and wrk to the remaining cores (taskset). Also counts malloc calls per
# request of libellula with an LD_PRELOAD shim (Scripts/malloc-count.c).
#
# Usage: [ROUNDS=2] [COMMON_RATE=20000] Scripts/bench-http-hello.sh [CPUS] [SECONDS] [CONNECTIONS]
# Needs: wrk, nginx (apt-get install wrk nginx), gcc for the malloc counter.
set -euo pipefail
cd "$(dirname "$0")/.."

CPUS=${1:-1}
SECS=${2:-10}
CONNS=${3:-64}
CORES=$(nproc)
if [ "$CPUS" -ge "$CORES" ]; then echo "need more cores than server CPUs (have $CORES)" >&2; exit 1; fi
SERVER_SET="0-$((CPUS - 1))"
LOAD_SET="$CPUS-$((CORES - 1))"
LOAD_THREADS=$((CORES - CPUS))
PORT_L=18480
PORT_N=18481
PORT_H=18482
HB=Benchmarks/HummingbirdBaseline/.build/release/HummingbirdBaseline
WORK=$(mktemp -d /tmp/libellula-bench-http.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "missing $tool (apt-get install $tool)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

swift build -c release --product libellula >/dev/null
BIN=.build/release/libellula

mkdir -p "$WORK/www"
printf 'hello\n' > "$WORK/www/hello.txt"

cat > "$WORK/nginx.conf" <<CONF
worker_processes $CPUS;
worker_cpu_affinity auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000000;
  keepalive_timeout 60;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 1s;
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  server { listen 127.0.0.1:$PORT_N reuseport; root $WORK/www; }
}
CONF
mkdir -p "$WORK/tmp"

wait_port() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/hello.txt" && return 0; sleep 0.1; done; return 1; }

# CPU ticks (user + system) used so far by a process and its children (nginx workers).
cpu_ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo $total
}

run_wrk() { # port label server-pid
  local t0 t1 rps p50 p99 reqs cpu_us
  t0=$(cpu_ticks "$3")
  taskset -c "$LOAD_SET" wrk -t "$LOAD_THREADS" -c "$CONNS" -d "${SECS}s" --latency "http://127.0.0.1:$1/hello.txt" > "$WORK/$2.wrk"
  t1=$(cpu_ticks "$3")
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$2.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$WORK/$2.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$2.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$2.wrk")
  cpu_us=$(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $reqs" | bc -l)
  printf '%-14s cpus=%s conns=%-4s %10s req/s %10.0f req/s/core  p50 %-9s p99 %-9s server CPU %5.2f us/req\n' \
    "$2" "$CPUS" "$CONNS" "$rps" "$(echo "$rps / $CPUS" | bc -l)" "$p50" "$p99" "$cpu_us"
  echo "$rps" >> "$WORK/${2%% *}.rps"
  echo "$cpu_us" >> "$WORK/${2%% *}.cpu"
}

echo "# $(date -u +%F) $(uname -r), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); server cores $SERVER_SET, wrk cores $LOAD_SET"

NGINX_VERSION=$($NGINX -v 2>&1 | sed 's/.*nginx\///')
ROUNDS=${ROUNDS:-2}
COMMON_RATE=${COMMON_RATE:-20000}
for round in $(seq 1 "$ROUNDS"); do
  # libellula (HostFS root, the same directory as nginx)
  taskset -c "$SERVER_SET" "$BIN" serve --cpus "$CPUS" --http "127.0.0.1:$PORT_L" --root "$WORK/www" --no-memcached --log-level warning &
  LPID=$!
  wait_port $PORT_L
  taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT_L/hello.txt" >/dev/null  # warm-up
  run_wrk $PORT_L libellula $LPID
  kill -TERM $LPID; wait $LPID || true

  # nginx, same file, same cores
  taskset -c "$SERVER_SET" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null &
  NPID=$!
  wait_port $PORT_N
  taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT_N/hello.txt" >/dev/null
  run_wrk $PORT_N "nginx $NGINX_VERSION" $NPID
  kill -QUIT $NPID; wait $NPID || true

  # Hummingbird 2 (SwiftNIO), if its package has been built:
  #   swift build -c release --package-path Benchmarks/HummingbirdBaseline
  if [ -x "$HB" ]; then
    taskset -c "$SERVER_SET" "$HB" "$WORK/www" $PORT_H "$CPUS" >/dev/null 2>&1 &
    HPID=$!
    wait_port $PORT_H
    taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT_H/hello.txt" >/dev/null
    run_wrk $PORT_H hummingbird $HPID
    kill -TERM $HPID; wait $HPID || true
  fi
done

best() { sort -g "$1" | tail -1; }
least() { sort -g "$1" | head -1; }
echo "best of $ROUNDS: libellula $(best "$WORK/libellula.rps") req/s, nginx $(best "$WORK/nginx.rps") req/s;" \
  "ratio $(echo "$(best "$WORK/libellula.rps") / $(best "$WORK/nginx.rps")" | bc -l | cut -c1-5);" \
  "server CPU per request: libellula $(least "$WORK/libellula.cpu" | cut -c1-5) us, nginx $(least "$WORK/nginx.cpu" | cut -c1-5) us"
if [ -f "$WORK/hummingbird.rps" ]; then
  echo "best of $ROUNDS: hummingbird $(best "$WORK/hummingbird.rps") req/s, $(least "$WORK/hummingbird.cpu" | cut -c1-5) us server CPU per request;" \
    "libellula / hummingbird $(echo "$(best "$WORK/libellula.rps") / $(best "$WORK/hummingbird.rps")" | bc -l | cut -c1-5)"
fi

# Latency at 80 % of each server's own peak, and at one common rate (COMMON_RATE, default
# 20000 req/s), open loop (Scripts/http-rate.c, measured from
# each request's planned send time).
if command -v gcc >/dev/null; then
  gcc -O2 -o "$WORK/http-rate" Scripts/http-rate.c
  rate_run() { # label port rate what
    local r
    r=$(echo "$3 / 1" | bc)
    printf '%-14s %-26s %s\n' "$1" "$4 ($r req/s):" \
      "$(taskset -c "$LOAD_SET" "$WORK/http-rate" "$2" /hello.txt "$CONNS" "$r" "$SECS" | sed 's/^requests [0-9]* //')"
  }
  taskset -c "$SERVER_SET" "$BIN" serve --cpus "$CPUS" --http "127.0.0.1:$PORT_L" --root "$WORK/www" --no-memcached --log-level warning &
  LPID=$!; wait_port $PORT_L
  rate_run libellula $PORT_L "$(echo "$(best "$WORK/libellula.rps") * 0.8" | bc -l)" "at 80% of its peak"
  rate_run libellula $PORT_L "$COMMON_RATE" "at the common rate"
  kill -TERM $LPID; wait $LPID || true
  taskset -c "$SERVER_SET" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null &
  NPID=$!; wait_port $PORT_N
  rate_run nginx $PORT_N "$(echo "$(best "$WORK/nginx.rps") * 0.8" | bc -l)" "at 80% of its peak"
  rate_run nginx $PORT_N "$COMMON_RATE" "at the common rate"
  kill -QUIT $NPID; wait $NPID || true
fi

# malloc calls per keep-alive request (libellula): a run with the load minus a run without.
if command -v gcc >/dev/null; then
  gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" Scripts/malloc-count.c -ldl
  count_run() { # requests? -> malloc total
    MALLOC_COUNT_FILE="$WORK/mc" LD_PRELOAD="$WORK/malloc-count.so" taskset -c "$SERVER_SET" \
      "$BIN" serve --cpus "$CPUS" --http "127.0.0.1:$PORT_L" --root "$WORK/www" --no-memcached --log-level warning &
    local pid=$!
    wait_port $PORT_L
    if [ "$1" = load ]; then
      taskset -c "$LOAD_SET" wrk -t1 -c"$CONNS" -d3s "http://127.0.0.1:$PORT_L/hello.txt" > "$WORK/mc.wrk"
    fi
    kill -TERM $pid; wait $pid || true
    cat "$WORK/mc"
  }
  idle=$(count_run idle)
  loaded=$(count_run load)
  reqs=$(awk '/requests in/ {print $1}' "$WORK/mc.wrk")
  echo "malloc calls per request (libellula, keep-alive): $(echo "($loaded - $idle) / $reqs" | bc -l | cut -c1-6) ($loaded - $idle over $reqs requests)"
fi
