#!/usr/bin/env bash
# The anti-rootkit proof on Debian 12's 6.1 kernel: boots the qemu guest
# with the kestrel binary and the test-only rootkit (tests/qemu/rootkit/),
# and runs tests/qemu/rootkit-guest.sh in it: a clean scan, insmod, a scan
# that must report 700, 701, 702 and 703 (and 704) naming the hidden module,
# then the agent with its built-in rules, whose scan at start must raise a
# kestrel.defense_evasion.rootkit_finding alert for each finding.
#
# Usage: tests/qemu/rootkit.sh          (as root; ~2-4 min under TCG)
# Environment:
#   KESTREL_BIN=PATH   use this kestrel binary instead of building one
#   CARGO_TARGET_DIR   where to build it (default /tmp/qemu-target)
#   ROOTKIT_LOG=FILE   console log (default /tmp/kestrel-qemu-rootkit.log)
# Exit status: 0 PASS; 77 when qemu cannot start (with a message; the Rust
# test fails on it like on any other status);
# anything else FAIL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu_dir=$repo/scripts/qemu
die() { echo "rootkit: error: $*" >&2; exit 1; }

if ! "$qemu_dir/prepare" >/dev/null; then
  echo "rootkit: SKIP: scripts/qemu/prepare failed, qemu cannot start" >&2
  exit 77
fi

# shellcheck source=tests/qemu/lib.sh
. "$repo/tests/qemu/lib.sh"
kestrel=$(kestrel_binary rootkit) || exit 1

echo "rootkit: building the test-only rootkit module" >&2
blog=$(mktemp /tmp/kestrel-qemu-kbuild.XXXXXX)
if ! ko=$("$qemu_dir/build-module" --out "/tmp/kestrel-qemu-modules/kestrel_rk.$$" \
      "$repo/tests/qemu/rootkit" 2>"$blog"); then
  cat "$blog" >&2; rm -f "$blog"; die "building the rootkit module failed"
fi
rm -f "$blog"

log=${ROOTKIT_LOG:-/tmp/kestrel-qemu-rootkit.log}
set +e
"$qemu_dir/run-guest" --kestrel "$kestrel" \
  --add "$ko:/lib/modules/kestrel_rk.ko" \
  --script "$repo/tests/qemu/rootkit-guest.sh" \
  --timeout 480 --log "$log" --quiet
rc=$?
set -e
rm -rf "/tmp/kestrel-qemu-modules/kestrel_rk.$$"

echo "rootkit: guest output (from $log):"
tr -d '\r' < "$log" | grep -E '^ROOTKIT ' || echo "rootkit: (no ROOTKIT lines: the guest did not get that far)"
if [ "$rc" = 0 ]; then echo "rootkit: PASS"; else echo "rootkit: FAIL (status $rc)"; fi
exit "$rc"
