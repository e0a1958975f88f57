#!/usr/bin/env bash
# Through `libellula mount` vs the same operations on the host directory, in one run:
# stat of 10,000 cached files, a create/unlink storm, sequential write and read of SIZE_MB.
# Mounts: HostFS over the host directory (kernel entry/attr timeouts 1 s), the same with
# timeouts 0 (every lookup and stat goes to the namecache), and MemFS. Needs root and
# /dev/fuse. Usage: Scripts/bench-fuse.sh [SIZE_MB] [CPUS]   (defaults: 1024, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1024}
CPUS=${2:-2}
BIN=${BIN:-.build/release/libellula}  # BIN=... compares another build (A/B runs)
[ -x "$BIN" ] || swift build -c release --product libellula >/dev/null
WORK=$(mktemp -d /tmp/libellula-bench-fuse.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/host"
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  umount -l "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mount_it() {  # args for libellula mount
  "$BIN" mount "$MNT" --cpus "$CPUS" "$@" >/dev/null &
  PID=$!
  for _ in $(seq 1 200); do grep -q " $MNT " /proc/mounts && return 0; sleep 0.05; done
  echo "mount did not appear" >&2; exit 1
}
unmount_it() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

# One measurement: prints "stat_us create_unlink_us write_MBps read_MBps" for directory $1.
measure() {
  python3 - "$1" "$SIZE_MB" <<'PY'
import os, sys, time
d, size_mb = sys.argv[1], int(sys.argv[2])
t = os.path.join(d, "tree")
os.makedirs(t, exist_ok=True)
names = [os.path.join(t, f"f{i:05d}") for i in range(10000)]
for n in names:
    if not os.path.exists(n):
        open(n, "w").close()
for n in names:   # warm every cache on the way
    os.stat(n)
t0 = time.perf_counter()
for _ in range(3):
    for n in names:
        os.stat(n)
stat_us = (time.perf_counter() - t0) / 30000 * 1e6
s = os.path.join(d, "storm")
os.makedirs(s, exist_ok=True)
t0 = time.perf_counter()
for i in range(5000):
    p = os.path.join(s, f"x{i}")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    os.unlink(p)
cu_us = (time.perf_counter() - t0) / 5000 * 1e6
block = b"\xa5" * (1 << 20)
big = os.path.join(d, "big")
t0 = time.perf_counter()
fd = os.open(big, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
for _ in range(size_mb):
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
w = size_mb / (time.perf_counter() - t0)
t0 = time.perf_counter()
fd = os.open(big, os.O_RDONLY)
n = 0
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    n += len(b)
os.close(fd)
r = size_mb / (time.perf_counter() - t0)
assert n == size_mb << 20
os.unlink(big)
print(f"{stat_us:.2f} {cu_us:.1f} {w:.0f} {r:.0f}")
PY
}

row() { printf "| %-44s | %10s | %14s | %10s | %10s |\n" "$@"; }
echo "FUSE bench: $CPUS CPUs, $SIZE_MB MB sequential, $(nproc) cores, $(uname -r)"
row "target" "stat µs" "create+unlink µs" "write MB/s" "read MB/s"
row "---" "---" "---" "---" "---"
read -r a b c d < <(measure "$WORK/host"); row "host directory (ext4/tmpfs, no FUSE)" "$a" "$b" "$c" "$d"
mount_it --root "$WORK/host"
read -r a b c d < <(measure "$MNT"); row "mount, HostFS, timeouts 1 s" "$a" "$b" "$c" "$d"
unmount_it
mount_it --root "$WORK/host" --entry-timeout 0 --attr-timeout 0
read -r a b c d < <(measure "$MNT"); row "mount, HostFS, timeouts 0 (namecache answers)" "$a" "$b" "$c" "$d"
unmount_it
mount_it --memfs
read -r a b c d < <(measure "$MNT"); row "mount, MemFS, timeouts 1 s" "$a" "$b" "$c" "$d"
unmount_it
mount_it --memfs --entry-timeout 0 --attr-timeout 0
read -r a b c d < <(measure "$MNT"); row "mount, MemFS, timeouts 0 (namecache answers)" "$a" "$b" "$c" "$d"
unmount_it
