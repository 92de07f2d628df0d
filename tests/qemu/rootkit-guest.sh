# Guest half of tests/qemu/rootkit.sh: run by the initramfs' /init with
# busybox sh on Debian 12's 6.1 kernel. Scans, loads the test-only rootkit
# (tests/qemu/rootkit/kestrel_rk.c), scans again. Prints one
# "ROOTKIT <check>: ok|FAIL ..." line per check, every finding as
# "ROOTKIT event: {json}", and exits non-zero if any check failed.
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

if [ -z "$failed" ]; then echo "ROOTKIT RESULT: PASS"; exit 0; fi
echo "ROOTKIT RESULT: FAIL (${failed# })"
exit 1
