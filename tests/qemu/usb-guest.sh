# Guest half of tests/qemu/usb.sh (busybox sh, Debian 12's 6.1 kernel): loads
# the USB and HID modules, starts the agent, asks the host to plug a USB
# keyboard in and to pull it out, and checks the agent's 610 events field by
# field. Prints "USB <check>: ok|FAIL ..." lines.
set -u
failed=""
ok()   { echo "USB $1: ok${2:+ ($2)}"; }
fail() { echo "USB $1: FAIL${2:+ ($2)}"; failed="$failed $1"; }

for m in usb-common usbcore xhci-hcd xhci-pci hid hid-generic usbhid; do
  insmod /lib/modules/usb/$m.ko || fail modules "insmod $m"
done
if [ -d /sys/bus/usb/devices/usb1 ]; then ok controller "$(cat /sys/bus/usb/devices/usb1/product)"
else fail controller "no root hub: the xHCI controller did not come up"; fi

kestrel agent --no-logins --inventory-interval-hours 0 --rootkit-scan-interval-hours 0 \
  --output file:/tmp/ev.json >/tmp/agent.out 2>/tmp/agent.err &
apid=$!
started=0 i=0
while [ $i -lt 150 ]; do
  if grep -q 'kestrel agent started' /tmp/agent.err 2>/dev/null; then started=1; break; fi
  kill -0 $apid 2>/dev/null || break
  sleep 1; i=$((i + 1))
done
echo "USB agent: started=$started after ${i}s"

# Wait up to $2 seconds for the keyboard (serial KESTREL-USB-42) to be
# present (want=1) or gone (want=0).
wait_kbd() {
  want=$1 n=0
  while [ $n -lt "$2" ]; do
    if grep -qs KESTREL-USB-42 /sys/bus/usb/devices/*/serial; then have=1; else have=0; fi
    [ $have = "$want" ] && return 0
    sleep 1; n=$((n + 1))
  done
  return 1
}
if [ $started = 1 ]; then
  echo "USB host: plug"
  if wait_kbd 1 60; then
    d=$(grep -ls KESTREL-USB-42 /sys/bus/usb/devices/*/serial | head -n1)
    ok plugged "$(dirname "$d")"
    # The agent holds an add for 1 s to see the interfaces bound.
    sleep 3
    echo "USB host: unplug"
    if wait_kbd 0 60; then ok unplugged; else fail unplugged "still present after 60 s"; fi
    sleep 2
  else
    fail plugged "no device with serial KESTREL-USB-42 after 60 s"
  fi
fi
if kill -0 $apid 2>/dev/null; then
  kill -TERM $apid
  i=0
  while kill -0 $apid 2>/dev/null && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
  kill -0 $apid 2>/dev/null && kill -KILL $apid
fi
wait $apid
echo "USB agent: exit status $?"
echo "----- agent stderr -----"
grep -v '^$' /tmp/agent.err | tail -n 20
echo "----- end of agent stderr -----"

add=$(grep '"data_type":"610"' /tmp/ev.json 2>/dev/null | grep '"serial":"KESTREL-USB-42"' | grep '"action":"1"' | head -n1)
rem=$(grep '"data_type":"610"' /tmp/ev.json 2>/dev/null | grep '"serial":"KESTREL-USB-42"' | grep '"action":"2"' | head -n1)
# Elkeid's four fields in their order, then Kestrel's: qemu's usb-kbd is
# 0627:0001, "QEMU USB Keyboard" by "QEMU", one boot-keyboard interface
# (03/01/01) bound to usbhid.
check() {
  name=$1 line=$2 action=$3 verb=$4
  case "$line" in
    '{"data_type":"610","product_info":"QEMU USB Keyboard","manufacturer":"QEMU","serial":"KESTREL-USB-42","action":"'"$action"'","action_name":"'"$verb"'","vendor_id":"0627","product_id":"0001",'*'"device_class":"00/00/00",'*'"devpath":"/devices/'*'/usb'*'"interfaces":"03/01/01","drivers":"usbhid","identity":"uevent","synthetic":"false","seqnum":"'[0-9]*'","time":"'[0-9]*'","local_ip":"'*'","hostname":"kestrel-guest"'*)
      ok "$name" "$line" ;;
    *) fail "$name" "no 610 event with every field expected: ${line:-none}" ;;
  esac
}
check add-event "$add" 1 add
check remove-event "$rem" 2 remove
echo "USB events: $(grep -c '"data_type":"610"' /tmp/ev.json 2>/dev/null) of data_type 610"
grep '"data_type":"610"' /tmp/ev.json 2>/dev/null | sed 's/^/USB event: /'
grep 'counters when="final"' /tmp/agent.err | grep -o 'usb_[a-z]*=[0-9]*' | tr '\n' ' ' | sed 's/^/USB counters: /'; echo

if [ -n "$failed" ]; then
  echo "USB RESULT: FAIL:$failed"
  exit 1
fi
echo "USB RESULT: PASS"
