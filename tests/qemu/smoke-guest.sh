# Guest half of tests/qemu/smoke.sh: run by the initramfs' /init with busybox
# sh on Debian 12's 6.1 kernel. Prints one "SMOKE <check>: ok|FAIL ..." line
# per check and exits non-zero if any check failed. Not meant for the host.
set -u
failed=""
ok()   { echo "SMOKE $1: ok${2:+ ($2)}"; }
fail() { echo "SMOKE $1: FAIL${2:+ ($2)}"; failed="$failed $1"; }

# (a) kernel version
echo "SMOKE kernel: $(uname -r)"

# (b) BTF: the agent needs /sys/kernel/btf/vmlinux (or --btf).
if [ -e /sys/kernel/btf/vmlinux ]; then
  ok btf "$(wc -c < /sys/kernel/btf/vmlinux) bytes"
else
  fail btf "/sys/kernel/btf/vmlinux missing"
fi

# (c) an out-of-tree module built against the 6.1 headers loads.
if out=$(insmod /lib/modules/kestrel_test_mod.ko 2>&1); then
  if dmesg | grep -q 'kestrel_test_mod loaded'; then ok module-dmesg "$(dmesg | grep 'kestrel_test_mod loaded' | tail -n1)"
  else fail module-dmesg "no 'kestrel_test_mod loaded' in dmesg"; fi
  if grep -q '^kestrel_test_mod ' /proc/modules; then ok module-proc "$(grep '^kestrel_test_mod ' /proc/modules)"
  else fail module-proc "not in /proc/modules"; fi
else
  fail module-insmod "$out"
fi

# The test module in the guest's installed module tree too, for modprobe
# (the kernel_module rule's benign case below).
rel=$(uname -r)
mkdir -p "/lib/modules/$rel/extra"
cp /lib/modules/kestrel_test_mod.ko "/lib/modules/$rel/extra/"
depmod || fail depmod "busybox depmod failed"

# (d) the agent, with its built-in rules: load the BPF programs, see an exec
# of a real binary; its rootkit scan at start sees a clean kernel.
echo "SMOKE agent: starting"
t0=$(date +%s)
kestrel agent --no-logins --inventory-interval-hours 0 --rootkit-scan-interval-hours 24 --output file:/tmp/ev.json \
  >/tmp/agent.out 2>/tmp/agent.err &
apid=$!
# Loading and verifying the programs is slow under TCG: wait for the agent's
# "started" log line (at most 150 s) rather than a fixed delay.
started=0 i=0
while [ $i -lt 150 ]; do
  if grep -q 'kestrel agent started' /tmp/agent.err 2>/dev/null; then started=1; break; fi
  kill -0 $apid 2>/dev/null || break
  sleep 1; i=$((i + 1))
done
echo "SMOKE agent: started=$started after $(( $(date +%s) - t0 ))s"
if [ $started = 1 ]; then
  # The start-up scan's summary first: a module loading while the scan
  # runs may be in one of its views only (a transient finding).
  i=0
  while [ $i -lt 120 ] && ! grep -q 'rootkit scan: .*; [0-9]* findings' /tmp/agent.err; do
    kill -0 $apid 2>/dev/null || break
    sleep 1; i=$((i + 1))
  done
  echo "SMOKE agent: rootkit scan done after $(( $(date +%s) - t0 ))s"
  # ~10 s of activity: exec a real binary (busybox `true` would be a
  # builtin/applet without exec) whose argv carries the marker, and
  # reload the test module (module-load events, data_type 603, if probed).
  rmmod kestrel_test_mod 2>/dev/null && insmod /lib/modules/kestrel_test_mod.ko 2>/dev/null
  # The kernel_module rule: a module from outside the installed tree, a
  # copy in /tmp (finit_module), then from memory: busybox insmod of a
  # gzipped module, whose finit_module the kernel refuses (-ENOEXEC), loads
  # the decompressed image with init_module. Benign: modprobe from
  # /lib/modules/$rel.
  cp /lib/modules/kestrel_test_mod.ko /tmp/kestrel_test_mod.ko
  gzip -c /lib/modules/kestrel_test_mod.ko >/tmp/kestrel_test_mod.ko.gz
  rmmod kestrel_test_mod 2>/dev/null
  out=$(insmod /tmp/kestrel_test_mod.ko 2>&1) || fail insmod-tmp "$out"
  rmmod kestrel_test_mod 2>/dev/null
  out=$(insmod /tmp/kestrel_test_mod.ko.gz 2>&1) || fail insmod-memory "$out"
  rmmod kestrel_test_mod 2>/dev/null
  out=$(modprobe kestrel_test_mod 2>&1) || fail modprobe-tree "$out"
  # A user-mode helper the kernel waits for (UMH_WAIT_PROC, data_type 607
  # with wait 2): modprobe, which an exec of an unknown binary format runs
  # (request_module("binfmt-0403")); here a script in its place.
  printf '#!/bin/sh\necho "$@" >/tmp/umh.ran\n' >/tmp/umh-modprobe
  chmod +x /tmp/umh-modprobe
  old_mp=$(cat /proc/sys/kernel/modprobe)
  echo /tmp/umh-modprobe >/proc/sys/kernel/modprobe
  printf '\001\002\003\004kestrel-umh' >/tmp/umh-bad
  chmod +x /tmp/umh-bad
  /tmp/umh-bad 2>/dev/null
  echo "$old_mp" >/proc/sys/kernel/modprobe
  echo "SMOKE umh: helper ran with: $(cat /tmp/umh.ran 2>/dev/null)"
  i=0
  while [ $i -lt 10 ]; do
    /bin/busybox echo kestrel-guest-marker >/dev/null
    sleep 1; i=$((i + 1))
  done
fi
if kill -0 $apid 2>/dev/null; then
  kill -TERM $apid
  # Give it 20 s to flush and exit, then insist.
  i=0
  while kill -0 $apid 2>/dev/null && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
  kill -0 $apid 2>/dev/null && { echo "SMOKE agent: still running 20 s after SIGTERM, killing"; kill -KILL $apid; }
fi
wait $apid
arc=$?
echo "SMOKE agent: exit status $arc"
echo "----- agent stderr -----"
cat /tmp/agent.err
echo "----- agent stdout -----"
cat /tmp/agent.out
echo "----- end of agent output -----"
if [ -s /tmp/ev.json ]; then
  echo "SMOKE events: $(wc -l < /tmp/ev.json) lines; by data_type:"
  sed -n 's/.*"data_type":"\([0-9]*\)".*/\1/p' /tmp/ev.json | sort | uniq -c \
    | while read -r n t; do echo "SMOKE events:   data_type $t: $n"; done
fi
if line=$(grep '"data_type":"59"' /tmp/ev.json 2>/dev/null | grep 'kestrel-guest-marker' | head -n1) && [ -n "$line" ]; then
  ok exec-event "$line"
else
  fail exec-event "no data_type 59 event with kestrel-guest-marker in /tmp/ev.json"
fi
# The module reload while the agent ran: a 603 event naming the file, its
# MD5 (computed here from the same file), the module's name and success.
want_md5=$(md5sum /lib/modules/kestrel_test_mod.ko | cut -d' ' -f1)
m=$(grep '"data_type":"603"' /tmp/ev.json 2>/dev/null | grep '"syscall":"finit_module"' | head -n1)
case "$m" in
  *'"lkm_file":"/lib/modules/kestrel_test_mod.ko"'*'"load_file_md5":"'"$want_md5"'"'*'"module_name":"kestrel_test_mod","res":"0"'*)
    ok module-event "$m" ;;
  *)
    fail module-event "no 603 event with lkm_file, load_file_md5 $want_md5, module_name and res 0: ${m:-none}" ;;
esac

# The agent's alerts (data_type 9000) and what they are about: every
# module load and rootkit finding, for the Rust test to check field by field.
grep -E '"data_type":"(603|70[0-4])"' /tmp/ev.json 2>/dev/null | sed 's/^/SMOKE event: /'
grep '"data_type":"9000"' /tmp/ev.json 2>/dev/null | sed 's/^/SMOKE alert: /'
# alerted RULE EVENT_LINE: an alert of RULE was triggered by that event
# alone (a single-event rule's trigger_event_ids).
alerted() {
  id=$(printf '%s\n' "$2" | sed -n 's/.*"event_id":"\([^"]*\)".*/\1/p')
  [ -n "$id" ] && grep '"data_type":"9000"' /tmp/ev.json 2>/dev/null | grep -F "\"rule_id\":\"$1\"" \
    | grep -qF "\"trigger_event_ids\":\"$id\""
}
km=kestrel.persistence.kernel_module
m=$(grep '"data_type":"603"' /tmp/ev.json 2>/dev/null | grep '"lkm_file":"/tmp/kestrel_test_mod.ko"' | grep '"res":"0"' | head -n1)
if [ -z "$m" ]; then fail alert-tmp "no 603 event for /tmp/kestrel_test_mod.ko"
elif alerted $km "$m"; then ok alert-tmp "$km on the load from /tmp"
else fail alert-tmp "no $km alert on $m"; fi
m=$(grep '"data_type":"603"' /tmp/ev.json 2>/dev/null | grep '"syscall":"init_module"' | grep '"res":"0"' | head -n1)
if [ -z "$m" ]; then fail alert-memory "no init_module 603 event"
elif alerted $km "$m"; then ok alert-memory "$km on the load from memory"
else fail alert-memory "no $km alert on $m"; fi
m=$(grep '"data_type":"603"' /tmp/ev.json 2>/dev/null | grep "\"lkm_file\":\"/lib/modules/$rel/extra/kestrel_test_mod.ko\"" | grep '"res":"0"' | head -n1)
if [ -z "$m" ]; then fail no-alert-tree "no 603 event for modprobe's load from /lib/modules/$rel"
elif alerted $km "$m"; then fail no-alert-tree "$km alert on the installed module: $m"
else ok no-alert-tree "modprobe from /lib/modules/$rel: no alert"; fi
# The clean kernel's scan: no finding, no rootkit_finding alert.
s=$(grep -o 'rootkit scan: .*; [0-9]* findings' /tmp/agent.err | head -n1)
echo "SMOKE rootkit-scan: ${s:-none}"
case "$s" in
  *'; 0 findings')
    if grep -q '"rule_id":"kestrel.defense_evasion.rootkit_finding"' /tmp/ev.json; then
      fail clean-scan "rootkit_finding alert on a clean kernel"
    else ok clean-scan "0 findings, no rootkit_finding alert"; fi ;;
  *) fail clean-scan "scan summary: ${s:-none}" ;;
esac

u=$(grep '"data_type":"607"' /tmp/ev.json 2>/dev/null | grep '/tmp/umh-modprobe' | head -n1)
case "$u" in
  *'"exe":"/'*'"argv":"/bin/sh /tmp/umh-modprobe -q -- binfmt-'*'"wait":"2"'*'"umh_parent":"kworker/'*)
    ok umh-event "$u" ;;
  *)
    fail umh-event "no 607 event for the modprobe helper with wait 2 and a kworker parent: ${u:-none}" ;;
esac
if grep '"data_type":"607"' /tmp/ev.json 2>/dev/null | grep -q 'kestrel-guest-marker'; then
  fail umh-ordinary "an ordinary exec was reported as 607"
else
  ok umh-ordinary
fi

if [ -n "$failed" ]; then
  echo "SMOKE RESULT: FAIL:$failed"
  exit 1
fi
echo "SMOKE RESULT: PASS"
