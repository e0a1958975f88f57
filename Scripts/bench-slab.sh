#!/bin/bash
# Runs `libellula bench slab` with every baseline present: installs the Debian packages in
# Scripts/slab-bench-deps.txt when missing (mimalloc, jemalloc), builds the release binary
# and runs the suite with LIBELLULA_REQUIRE_BASELINES=1, so a baseline that cannot be
# loaded fails the run instead of being skipped. Extra arguments go to `bench` (--quick).
# With LIBELLULA_BIN set, runs that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r pkg; do
    [ -z "$pkg" ] && continue
    case "$pkg" in \#*) continue ;; esac
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < Scripts/slab-bench-deps.txt
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench-slab: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

bin="${LIBELLULA_BIN:-}"
if [ -z "$bin" ]; then
    swift build -c release --product libellula
    bin=.build/release/libellula
fi
# Debian's jemalloc uses initial-exec TLS: dlopen needs spare static TLS space.
GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 LIBELLULA_REQUIRE_BASELINES=1 "$bin" bench slab "$@"
