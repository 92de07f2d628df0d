#!/usr/bin/env bash
# The hook backends on a Debian 12 kernel booted in qemu, where fentry and
# kprobes exist: tests/qemu/backends-guest.sh runs the agent once per
# backend (--hook-backend), performs one behaviour of every syscall-hooked
# event kind under each, and prints the events and what was attached;
# then, with BENCH=1, times getppid and an open of an existing file with
# no agent and with each backend, interleaved (kestrel bench overhead).
#
# Usage: tests/qemu/backends.sh [6.1|6.12]   (as root; default 6.12)
# Environment:
#   BACKENDS="tracepoint fentry kprobe"   the rounds, in this order
#   BENCH=1 BENCH_RUNS=3   also time the backends after the rounds (off by
#                          default: figures for docs/performance.md, not a test)
#   KESTREL_BIN=PATH   use this kestrel binary instead of building one
#   CARGO_TARGET_DIR   where to build it (default /tmp/qemu-target)
#   BACKENDS_LOG=FILE  console log (default /tmp/kestrel-qemu-backends-SERIES.log)
# Exit status: 0 PASS; anything else FAIL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu_dir=$repo/scripts/qemu
die() { echo "backends: error: $*" >&2; exit 1; }
export KESTREL_QEMU_SERIES=${1:-6.12}

"$qemu_dir/prepare" >/dev/null || die "scripts/qemu/prepare failed"

# shellcheck source=tests/qemu/lib.sh
. "$repo/tests/qemu/lib.sh"
kestrel=$(kestrel_binary backends) || exit 1

work=/tmp/kestrel-qemu-modules/backends.$$
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
if ! "$qemu_dir/build-module" --out "$work/modules" "$repo/tests/qemu/modules" >/dev/null 2>"$work/kbuild.log"; then
  cat "$work/kbuild.log" >&2; die "building tests/qemu/modules failed"
fi
gcc -static -O2 -Wall -o "$work/kestrel-sys" "$repo/tests/qemu/sys/kestrel-sys.c" \
  || die "building tests/qemu/sys/kestrel-sys.c failed (gcc and the static glibc of libc6-dev)"
cat >"$work/kbk.env" <<ENV
BACKENDS="${BACKENDS:-tracepoint fentry kprobe}"
BENCH=${BENCH:-0}
BENCH_RUNS=${BENCH_RUNS:-3}
ENV

log=${BACKENDS_LOG:-/tmp/kestrel-qemu-backends-$KESTREL_QEMU_SERIES.log}
set +e
"$qemu_dir/run-guest" --kestrel "$kestrel" \
  --add "$work/modules/kestrel_test_mod.ko:/lib/modules/kestrel_test_mod.ko" \
  --add "$work/kestrel-sys:/usr/bin/kestrel-sys" \
  --add "$work/kbk.env:/etc/kbk.env" \
  --add "$repo/tests/qemu/backends-behaviours.sh:/usr/share/kestrel/backends-behaviours.sh" \
  --script "$repo/tests/qemu/backends-guest.sh" \
  --timeout "${BACKENDS_TIMEOUT:-1500}" --log "$log" --quiet
rc=$?
set -e

echo "backends: guest output (from $log):"
tr -d '\r' < "$log" | grep -E '^BACKENDS ' || echo "backends: (no BACKENDS lines: the guest did not get that far)"
if [ "$rc" = 0 ]; then echo "backends: PASS"; else echo "backends: FAIL (status $rc)"; fi
exit "$rc"
