# Guest half of tests/qemu/modtree.sh: run by the initramfs' /init with
# busybox sh. Loads a visible test module, scans (clean: the module address
# tree agrees with the other views), loads a module that hides itself from
# the list, sysfs and kallsyms, scans again: 702 must name it, seen by
# mod_tree alone. Prints "MODTREE <check>: ok|FAIL ..." lines and exits
# non-zero if any check failed.
set -u
failed=""
ok()   { echo "MODTREE $1: ok${2:+ ($2)}"; }
fail() { echo "MODTREE $1: FAIL${2:+ ($2)}"; failed="$failed $1"; }

echo "MODTREE kernel: $(uname -r)"
if out=$(insmod /lib/modules/kestrel_test_mod.ko 2>&1); then ok insmod-visible
else fail insmod-visible "$out"; fi

kestrel scan rootkit > /tmp/before.json 2> /tmp/before.err
rc=$?
sed 's/^/MODTREE before-stderr: /' /tmp/before.err
sed 's/^/MODTREE before-event: /' /tmp/before.json
n=$(grep -c . /tmp/before.json)
if [ "$rc" = 0 ] && [ "$n" = 0 ] && grep -q 'modules 0/1 (proc_modules/sysfs/kallsyms/mod_tree)' /tmp/before.err; then
  ok clean-scan "the visible module in every view, mod_tree walked"
else fail clean-scan "exit $rc, $n findings"; fi

if out=$(insmod /lib/modules/kestrel_hide.ko 2>&1); then ok insmod-hidden
else fail insmod-hidden "$out"; fi
if grep -q '^kestrel_hide ' /proc/modules; then fail hidden "still in /proc/modules"
elif [ -e /sys/module/kestrel_hide ]; then fail hidden "still in /sys/module"
elif grep -q '\[kestrel_hide\]' /proc/kallsyms; then fail hidden "still in /proc/kallsyms"
else ok hidden "absent from /proc/modules, /sys/module and /proc/kallsyms"; fi

kestrel scan rootkit > /tmp/after.json 2> /tmp/after.err
rc=$?
sed 's/^/MODTREE after-stderr: /' /tmp/after.err
sed 's/^/MODTREE event: /' /tmp/after.json
[ "$rc" = 0 ] && ok after-exit || fail after-exit "exit $rc"
if grep '"data_type":"702"' /tmp/after.json | grep '"module_name":"kestrel_hide"' | grep '"hidden":"1"' | grep -q '"seen_by":"mod_tree"'; then
  ok found "702 names kestrel_hide, seen by mod_tree alone"
else fail found "no 702 naming kestrel_hide seen by mod_tree alone"; fi
if grep '"data_type":"702"' /tmp/after.json | grep -q '"module_name":"kestrel_test_mod"'; then
  fail no-false-positive "702 names the visible module"
else ok no-false-positive; fi

if [ -z "$failed" ]; then echo "MODTREE RESULT: PASS"; exit 0; fi
echo "MODTREE RESULT: FAIL (${failed# })"
exit 1
