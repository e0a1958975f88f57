#!/usr/bin/env bash
# The project's one test command: installs what the tests need (the Debian packages in
# Scripts/test-deps.txt, the Python packages in Scripts/test-pip-deps.txt), then runs every
# test. Tests that need root (TAP devices, network namespaces) skip with a message without it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if [ -f Scripts/test-deps.txt ]; then
  while read -r pkg; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done < Scripts/test-deps.txt
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "test.sh: missing packages (${need[*]}); tests that need them will skip" >&2
  fi
fi

# Python packages the tests need (pymemcache from PyPI), installed when missing.
if [ -f Scripts/test-pip-deps.txt ] && command -v python3 >/dev/null; then
  missing=0
  while read -r mod; do
    [ -z "$mod" ] || [ "${mod#\#}" != "$mod" ] && continue
    python3 -c "import $mod" 2>/dev/null || missing=1
  done < Scripts/test-pip-deps.txt
  if [ "$missing" = 1 ]; then
    python3 -m pip install -q -r Scripts/test-pip-deps.txt 2>/dev/null \
      || python3 -m pip install -q --break-system-packages -r Scripts/test-pip-deps.txt \
      || echo "test.sh: could not install Scripts/test-pip-deps.txt; tests that need it will skip" >&2
  fi
fi

# Serially: many suites boot their own LWKT systems, whose pinned CPU threads spin; run side
# by side on a 2-core machine they starve each other for tens of seconds. Serial takes about
# as long here (2.0 min vs 1.7 min after the build) and its waits stay short.
exec swift test --no-parallel "$@"
