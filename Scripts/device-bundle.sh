#!/usr/bin/env bash
# Packs Scripts/device-scaling.sh and everything it runs into one folder that can be
# copied to a machine without a Swift toolchain or the baseline packages (same
# architecture, Linux): DEST/run.sh (the script), DEST/bin (libellula, gzip-compressed;
# nginx, memcached, wrk; mcload built statically), DEST/lib (their non-C-library shared
# libraries, plus libmimalloc and libjemalloc for the slab rows) and DEST/glibc (this
# machine's loader and C library: run.sh falls back to them when a binary does not start
# with the target's own).
#
#   swift build -c release --static-swift-stdlib --product libellula
#   Scripts/device-bundle.sh DEST        # then on the target: OUT=DIR bash DEST/run.sh
#
# Needs here: nginx, memcached, wrk, libmimalloc2.0, libjemalloc2, cc, gzip, strip.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:?usage: Scripts/device-bundle.sh DEST}
BIN=${LIBELLULA:-.build/release/libellula}
[ -x "$BIN" ] || { echo "build first: swift build -c release --static-swift-stdlib --product libellula" >&2; exit 1; }
rm -rf "$DEST/bin" "$DEST/lib" "$DEST/glibc" "$DEST/unpacked"
mkdir -p "$DEST/bin" "$DEST/lib" "$DEST/glibc"
cp Scripts/device-scaling.sh "$DEST/run.sh"
chmod +x "$DEST/run.sh"
strip -o "$DEST/bin/libellula" "$BIN"
gzip -9 -f "$DEST/bin/libellula"
cc -O2 -static -o "$DEST/bin/mcload" Scripts/memcached/mcload.c
tools=("$(command -v nginx || echo /usr/sbin/nginx)" "$(command -v memcached)" "$(command -v wrk)")
for t in "${tools[@]}"; do cp "$t" "$DEST/bin/"; done
extra=(/lib/x86_64-linux-gnu/libmimalloc.so.2 /lib/x86_64-linux-gnu/libjemalloc.so.2)
# The C library's own files go to glibc/ (used only through its loader); the rest to lib/.
glibc_re='/(ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2)$'
for f in "${tools[@]}" "$BIN" "${extra[@]}"; do
  ldd "$f" | awk '/=>/ {print $3} /^\s*\/lib/ {print $1}'
done | sort -u | while read -r so; do
  [ -f "$so" ] || continue
  if [[ $so =~ $glibc_re ]]; then cp -L "$so" "$DEST/glibc/"; else cp -L "$so" "$DEST/lib/"; fi
done
for so in "${extra[@]}"; do cp -L "$so" "$DEST/lib/"; done
for so in libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2; do
  [ -f "/lib/x86_64-linux-gnu/$so" ] && cp -L "/lib/x86_64-linux-gnu/$so" "$DEST/glibc/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$DEST/glibc/"
du -sh "$DEST"
ls -la "$DEST"/bin "$DEST"/lib "$DEST"/glibc
