#!/usr/bin/env bash
# USB device events (data_type 610) on real hot-plugs: boots Debian 12's 6.1
# kernel with an xHCI controller (qemu-xhci) and the USB and HID modules in
# the initramfs, runs tests/qemu/usb-guest.sh in it, and when the guest asks
# for it plugs a USB keyboard in through qemu's monitor (device_add) and
# pulls it out again (device_del). This host has no USB bus and no modules
# (no dummy_hcd), so this is where a real device comes and goes.
#
# Usage: tests/qemu/usb.sh               (as root; ~1-3 min under TCG)
# Environment: KESTREL_BIN, CARGO_TARGET_DIR as for smoke.sh;
#   USB_LOG=FILE  console log (default /tmp/kestrel-qemu-usb.log)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu_dir=$repo/scripts/qemu
die() { echo "usb: error: $*" >&2; exit 1; }

"$qemu_dir/prepare" >/dev/null || die "scripts/qemu/prepare failed"
# shellcheck disable=SC1091
. "${KESTREL_QEMU_CACHE:-/var/cache/kestrel-qemu}/env"
# shellcheck source=tests/qemu/lib.sh
. "$repo/tests/qemu/lib.sh"
kestrel=$(kestrel_binary usb) || exit 1

# In load order (no modules.dep in the guest: insmod, not modprobe).
mods=(usb/common/usb-common usb/core/usbcore usb/host/xhci-hcd usb/host/xhci-pci
      hid/hid hid/hid-generic hid/usbhid/usbhid)
adds=()
for m in "${mods[@]}"; do
  ko=$KESTREL_QEMU_MODULES/kernel/drivers/$m.ko
  [ -r "$ko" ] || die "module missing from the guest kernel's tree: $ko"
  adds+=(--add "$ko:/lib/modules/usb/$(basename "$ko")")
done

work=$(mktemp -d /tmp/kestrel-qemu-usb.XXXXXX)
mon=$work/monitor.sock
log=${USB_LOG:-/tmp/kestrel-qemu-usb.log}
: > "$log"
cleanup() { if [ -n "${driver:-}" ]; then kill "$driver" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# One human-monitor command; its answer goes to stderr.
monitor() {
  perl -MIO::Socket::UNIX -e '
    my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "monitor: $!\n";
    $s->print("$ARGV[1]\n"); select(undef, undef, undef, 0.5);
    $s->blocking(0); my $out = ""; while (defined(my $l = <$s>)) { $out .= $l }
    print STDERR $out;' "$mon" "$1"
}

# The guest prints "USB host: plug" / "USB host: unplug" when it is ready
# for each; this loop answers from the console log.
(
  state=plug
  for _ in $(seq 1 600); do
    if [ "$state" = plug ] && grep -q '^USB host: plug' <(tr -d '\r' < "$log"); then
      echo "usb: device_add usb-kbd" >&2
      monitor "device_add usb-kbd,bus=xhci.0,id=k1,serial=KESTREL-USB-42"
      state=unplug
    elif [ "$state" = unplug ] && grep -q '^USB host: unplug' <(tr -d '\r' < "$log"); then
      echo "usb: device_del k1" >&2
      monitor "device_del k1"
      exit 0
    fi
    sleep 0.5
  done
) &
driver=$!

set +e
"$qemu_dir/run-guest" --kestrel "$kestrel" "${adds[@]}" \
  --script "$repo/tests/qemu/usb-guest.sh" \
  --qemu -device --qemu qemu-xhci,id=xhci \
  --qemu -monitor --qemu "unix:$mon,server=on,wait=off" \
  --timeout 280 --log "$log"
rc=$?
set -e

echo
echo "usb: summary (from $log):"
tr -d '\r' < "$log" | grep -E '^USB ' || echo "usb: (no USB lines: the guest did not get that far)"
if [ "$rc" = 0 ]; then echo "usb: PASS"; else echo "usb: FAIL (status $rc)"; fi
exit "$rc"
