#!/usr/bin/env bash
# Sets up, builds and runs the test suite (ctest). With --sanitize (default under CI) it also builds
# the CPU-only tests with AddressSanitizer + UndefinedBehaviorSanitizer and runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

SANITIZE=0
[ "${CI:-}" = "true" ] && SANITIZE=1
for a in "$@"; do
  case "$a" in
    --sanitize) SANITIZE=1 ;;
    --no-sanitize) SANITIZE=0 ;;
    *) echo "test.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

JOBS=$(nproc)
scripts/setup.sh --build-dir build
echo "== tests (build/) =="
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 600

if [ "$SANITIZE" = 1 ]; then
  scripts/setup.sh --build-dir build-asan --sanitize
  echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j "$JOBS" --timeout 1200
fi
