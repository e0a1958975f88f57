#!/usr/bin/env bash
# The project's one test command: installs what the tests need (nothing beyond the Swift
# toolchain yet; network and service tests will add their Debian packages here), then runs
# every test. Tests that need root skip with a message when it is missing.
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

exec swift test "$@"
