#!/usr/bin/env bash
# End-to-end check of the qemu harness on Debian 12's 6.1 kernel: boots the
# guest with the kestrel release binary and tests/qemu/modules' test module,
# and runs tests/qemu/smoke-guest.sh in it (kernel version, BTF, insmod, and
# the agent loading its BPF programs and reporting an exec; with its
# built-in rules, the kernel_module alert on loads from /tmp and from memory,
# none on a modprobe from the module tree, none from a clean rootkit scan).
#
# Usage: tests/qemu/smoke.sh            (as root; takes ~1-3 min under TCG)
# Environment:
#   KESTREL_BIN=PATH   use this kestrel binary instead of building one
#   CARGO_TARGET_DIR   where to build it (default /tmp/qemu-target, so the
#                      workspace's own target/ is left alone)
#   SMOKE_LOG=FILE     console log (default /tmp/kestrel-qemu-smoke.log)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu_dir=$repo/scripts/qemu
die() { echo "smoke: error: $*" >&2; exit 1; }

"$qemu_dir/prepare" >/dev/null || die "scripts/qemu/prepare failed"

# shellcheck source=tests/qemu/lib.sh
. "$repo/tests/qemu/lib.sh"
kestrel=$(kestrel_binary smoke) || exit 1

echo "smoke: building the test module" >&2
blog=$(mktemp /tmp/kestrel-qemu-kbuild.XXXXXX)
if ! ko=$("$qemu_dir/build-module" --out /tmp/kestrel-qemu-modules/kestrel_test_mod \
      "$repo/tests/qemu/modules" 2>"$blog"); then
  cat "$blog" >&2; die "building the test module failed"
fi
rm -f "$blog"

log=${SMOKE_LOG:-/tmp/kestrel-qemu-smoke.log}
set +e
"$qemu_dir/run-guest" --kestrel "$kestrel" \
  --add "$ko:/lib/modules/kestrel_test_mod.ko" \
  --script "$repo/tests/qemu/smoke-guest.sh" \
  --timeout 360 --log "$log"
rc=$?
set -e

echo
echo "smoke: summary (from $log):"
tr -d '\r' < "$log" | grep -E '^SMOKE ' || echo "smoke: (no SMOKE lines: the guest did not get that far)"
if [ "$rc" = 0 ]; then echo "smoke: PASS"; else echo "smoke: FAIL (status $rc)"; fi
exit "$rc"
