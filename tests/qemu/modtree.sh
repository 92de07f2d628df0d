#!/usr/bin/env bash
# The hidden-module proof through the kernel's module address tree, on a
# Debian 12 kernel booted in qemu: tests/qemu/modtree-guest.sh with a
# visible test module and one that hides itself (tests/qemu/hide/).
#
# Usage: tests/qemu/modtree.sh [6.1|6.12]   (as root; default 6.12, whose
#        struct module keeps its memory areas as every kernel since 6.4)
# Environment:
#   KESTREL_BIN=PATH   use this kestrel binary instead of building one
#   CARGO_TARGET_DIR   where to build it (default /tmp/qemu-target)
#   MODTREE_LOG=FILE   console log (default /tmp/kestrel-qemu-modtree.log)
# Exit status: 0 PASS; anything else FAIL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu_dir=$repo/scripts/qemu
die() { echo "modtree: error: $*" >&2; exit 1; }
export KESTREL_QEMU_SERIES=${1:-6.12}

"$qemu_dir/prepare" >/dev/null || die "scripts/qemu/prepare failed"

# shellcheck source=tests/qemu/lib.sh
. "$repo/tests/qemu/lib.sh"
kestrel=$(kestrel_binary modtree) || exit 1

work=/tmp/kestrel-qemu-modules/modtree.$$
trap 'rm -rf "$work"' EXIT
blog=$work/kbuild.log
mkdir -p "$work"
for m in modules hide; do
  if ! "$qemu_dir/build-module" --out "$work/$m" "$repo/tests/qemu/$m" >/dev/null 2>"$blog"; then
    cat "$blog" >&2; die "building tests/qemu/$m failed"
  fi
done

log=${MODTREE_LOG:-/tmp/kestrel-qemu-modtree.log}
set +e
"$qemu_dir/run-guest" --kestrel "$kestrel" \
  --add "$work/modules/kestrel_test_mod.ko:/lib/modules/kestrel_test_mod.ko" \
  --add "$work/hide/kestrel_hide.ko:/lib/modules/kestrel_hide.ko" \
  --script "$repo/tests/qemu/modtree-guest.sh" \
  --timeout 280 --log "$log" --quiet
rc=$?
set -e

echo "modtree: guest output (from $log):"
tr -d '\r' < "$log" | grep -E '^MODTREE ' || echo "modtree: (no MODTREE lines: the guest did not get that far)"
if [ "$rc" = 0 ]; then echo "modtree: PASS"; else echo "modtree: FAIL (status $rc)"; fi
exit "$rc"
