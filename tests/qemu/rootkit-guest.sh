# Guest half of tests/qemu/rootkit.sh: run by the initramfs' /init with
# busybox sh on Debian 12's 6.1 kernel. Scans, loads the test-only rootkit
# (tests/qemu/rootkit/kestrel_rk.c), scans again. Prints one
# "ROOTKIT <check>: ok|FAIL ..." line per check, every finding as
# "ROOTKIT event: {json}"; then runs the agent (built-in rules), whose
# start-up scan's findings are "ROOTKIT agent-event: {json}" and alerts
# "ROOTKIT alert: {json}"; exits non-zero if any check failed.
set -u
failed=""
ok()   { echo "ROOTKIT $1: ok${2:+ ($2)}"; }
fail() { echo "ROOTKIT $1: FAIL${2:+ ($2)}"; failed="$failed $1"; }
MOD=kestrel_rk

echo "ROOTKIT kernel: $(uname -r)"
grep -E ' (sys_call_table|ia32_sys_call_table|x32_sys_call_table|x64_sys_call|ia32_sys_call)$' /proc/kallsyms \
  | sed 's/^/ROOTKIT kallsyms: /'

# (1) a clean kernel scans clean.
time -o /tmp/before.time kestrel scan rootkit > /tmp/before.json 2> /tmp/before.err
rc=$?
echo "ROOTKIT scan-time: $(tr '\n' ' ' < /tmp/before.time)"
sed 's/^/ROOTKIT before-stderr: /' /tmp/before.err
sed 's/^/ROOTKIT before-event: /' /tmp/before.json
n=$(grep -c . /tmp/before.json)
if [ "$rc" = 0 ] && [ "$n" = 0 ]; then ok clean-scan "exit 0, no findings"
else fail clean-scan "exit $rc, $n findings"; fi

# (2) load the rootkit with the table addresses kallsyms gives as root.
sct=$(awk '$3 == "sys_call_table" {print $1; exit}' /proc/kallsyms)
idt=$(awk '$3 == "idt_table" {print $1; exit}' /proc/kallsyms)
x64call=$(awk '$3 == "x64_sys_call" {print $1; exit}' /proc/kallsyms)
sysk=$(awk '$3 == "__x64_sys_kill" {print $1; exit}' /proc/kallsyms)
if out=$(insmod /lib/modules/$MOD.ko sct=0x$sct idt=0x$idt ${x64call:+x64call=0x$x64call sysk=0x$sysk} 2>&1); then
  ok insmod "sys_call_table=0x$sct idt_table=0x$idt x64_sys_call=0x${x64call:-none}"
else
  fail insmod "$out"
fi
dmesg | grep "$MOD" | sed 's/^/ROOTKIT dmesg: /'
if grep -q "^$MOD " /proc/modules; then fail module-hidden "still in /proc/modules"
elif [ -e /sys/module/$MOD ]; then fail module-hidden "still in /sys/module"
elif grep -q "\[$MOD\]" /proc/kallsyms; then fail module-hidden "still in /proc/kallsyms"
else ok module-hidden "absent from /proc/modules, /sys/module and /proc/kallsyms"; fi
# The hooks pass through: the guest still works.
if kill -0 1; then ok kill-works "kill(2) through the patched dispatch"
else fail kill-works "kill -0 1 failed"; fi
if ls /proc | grep -q '^1$'; then ok proc-listing "ls /proc works through the hook"
else fail proc-listing "ls /proc lost pid 1"; fi

sed 's/^/ROOTKIT enabled_functions: /' /sys/kernel/tracing/enabled_functions 2>/dev/null
sed 's/^/ROOTKIT kprobes: /' /sys/kernel/debug/kprobes/list 2>/dev/null

# (3) the scan names the module in 700, 701, 702 and 703.
time -o /tmp/after.time kestrel scan rootkit > /tmp/after.json 2> /tmp/after.err
rc=$?
echo "ROOTKIT scan-time: $(tr '\n' ' ' < /tmp/after.time)"
sed 's/^/ROOTKIT after-stderr: /' /tmp/after.err
sed 's/^/ROOTKIT event: /' /tmp/after.json
[ "$rc" = 0 ] && ok after-exit "exit 0 with findings" || fail after-exit "exit $rc"
for t in 700 701 702 703 704; do
  line=$(grep "\"data_type\":\"$t\"" /tmp/after.json | grep "\"module_name\":\"$MOD\"" | grep '"hidden":"1"' | head -n1)
  if [ -n "$line" ]; then ok "finding-$t" "names $MOD, hidden"
  else fail "finding-$t" "no $t event naming $MOD with hidden=1"; fi
done
if grep '"data_type":"702"' /tmp/after.json | grep "\"module_name\":\"$MOD\"" | grep -q '"seen_by":"mod_tree"'; then ok mod-tree "702 seen only by mod_tree"
else fail mod-tree "no 702 naming $MOD seen by mod_tree alone"; fi
for h in ftrace kprobe; do
  if grep '"data_type":"704"' /tmp/after.json | grep "\"module_name\":\"$MOD\"" | grep -q "\"hook_type\":\"$h\""; then ok "hook-$h" "704 names $MOD"
  else fail "hook-$h" "no 704 $h event naming $MOD"; fi
done
if grep '"data_type":"701"' /tmp/after.json | grep -q '"syscall_number":"62"'; then ok syscall-number "62 (kill)"
else fail syscall-number "no 701 with syscall_number 62"; fi
if [ -n "$x64call" ]; then
  if grep '"data_type":"701"' /tmp/after.json | grep '"table":"x64_sys_call"' | grep -q "\"module_name\":\"$MOD\""; then
    ok flipswitch "701 on x64_sys_call names $MOD"
  else fail flipswitch "no 701 on x64_sys_call naming $MOD"; fi
fi
if grep '"data_type":"703"' /tmp/after.json | grep -q '"interrupt_number":"4"'; then ok interrupt-number "4"
else fail interrupt-number "no 703 with interrupt_number 4"; fi

# (4) the agent, with its built-in rules, runs the same scan at start: each
# finding raises kestrel.defense_evasion.rootkit_finding. (The clean scan's
# agent, which raises none, is the smoke test's: tests/qemu/smoke-guest.sh.)
t0=$(date +%s)
kestrel agent --no-logins --inventory-interval-hours 0 --rootkit-scan-interval-hours 24 \
  --output file:/tmp/agent.json >/tmp/agent.out 2>/tmp/agent.err &
apid=$!
i=0
while [ $i -lt 240 ]; do
  grep -q 'kestrel agent started' /tmp/agent.err && grep -q 'rootkit scan: .*; [0-9]* findings' /tmp/agent.err && break
  kill -0 $apid 2>/dev/null || break
  sleep 1; i=$((i + 1))
done
echo "ROOTKIT agent: started and scanned after $(( $(date +%s) - t0 ))s"
if kill -0 $apid 2>/dev/null; then
  kill -TERM $apid
  i=0
  while kill -0 $apid 2>/dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
  kill -0 $apid 2>/dev/null && { echo "ROOTKIT agent: still running 30 s after SIGTERM, killing"; kill -KILL $apid; }
fi
wait $apid
arc=$?
grep -E 'rootkit scan|ERROR|WARN' /tmp/agent.err | sed 's/^/ROOTKIT agent-stderr: /'
grep -E '"data_type":"70[0-4]"' /tmp/agent.json 2>/dev/null | sed 's/^/ROOTKIT agent-event: /'
grep '"data_type":"9000"' /tmp/agent.json 2>/dev/null | sed 's/^/ROOTKIT alert: /'
[ "$arc" = 0 ] && ok agent-exit || fail agent-exit "exit $arc"
n=$(grep -cE '"data_type":"70[0-4]"' /tmp/agent.json 2>/dev/null)
missing=0
for id in $(grep -E '"data_type":"70[0-4]"' /tmp/agent.json 2>/dev/null | sed -n 's/.*"event_id":"\([^"]*\)".*/\1/p'); do
  grep '"data_type":"9000"' /tmp/agent.json | grep -F '"rule_id":"kestrel.defense_evasion.rootkit_finding"' \
    | grep -qF "\"trigger_event_ids\":\"$id\"" || missing=$((missing + 1))
done
if [ "${n:-0}" -gt 0 ] && [ $missing = 0 ]; then ok agent-alerts "$n findings, each with its rootkit_finding alert"
else fail agent-alerts "${n:-0} findings, $missing without a rootkit_finding alert"; fi

if [ -z "$failed" ]; then echo "ROOTKIT RESULT: PASS"; exit 0; fi
echo "ROOTKIT RESULT: FAIL (${failed# })"
exit 1
