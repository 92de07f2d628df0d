# Guest half of tests/qemu/backends.sh: run by the initramfs' /init with
# busybox sh. For each hook backend of $BACKENDS (from /etc/kbk.env) the
# agent starts with --hook-backend set to it, the script checks what it
# attached (its log, /metrics, tracefs, its descriptors), performs one
# behaviour of every syscall-hooked event kind, and prints the events those
# made ("BACKENDS ev BACKEND JSON") for the Rust test
# (qemu::hook_backends_*) to compare field by field across backends. Then,
# with BENCH=1, `kestrel bench overhead` over no agent and each backend.
# Not meant for the host.
set -u
. /etc/kbk.env
failed=""
ok()   { echo "BACKENDS $1: ok${2:+ ($2)}"; }
fail() { echo "BACKENDS $1: FAIL${2:+ ($2)}"; failed="$failed $1"; }

echo "BACKENDS kernel: $(uname -r)"
rel=$(uname -r)
mkdir -p /etc /mnt/kbk
# A watched path (the default set has /etc/passwd and /etc/shadow).
echo 'root:x:0:0:root:/root:/bin/sh' >/etc/passwd
# The module, from the installed tree and from /tmp.
cp /lib/modules/kestrel_test_mod.ko /tmp/kestrel_test_mod.ko

# syscall_tracepoints_enabled: how many syscall events tracefs has enabled.
syscall_tracepoints_enabled() {
  n=0
  for f in /sys/kernel/tracing/events/syscalls/*/enable; do
    [ "$(cat "$f")" = 0 ] || n=$((n + 1))
  done
  echo $n
}

for b in $BACKENDS; do
  echo "BACKENDS round: $b"
  t0=$(date +%s)
  kestrel agent --no-logins --inventory-interval-hours 0 --rootkit-scan-interval-hours 0 \
    --hook-backend "$b" --metrics 127.0.0.1:9187 --output "file:/tmp/ev-$b.json" \
    >/tmp/agent-$b.out 2>/tmp/agent-$b.err &
  apid=$!
  started=0 i=0
  while [ $i -lt 240 ]; do
    if grep -q 'kestrel agent started' /tmp/agent-$b.err 2>/dev/null; then started=1; break; fi
    kill -0 $apid 2>/dev/null || break
    sleep 1; i=$((i + 1))
  done
  echo "BACKENDS $b start: started=$started after $(( $(date +%s) - t0 ))s"
  if [ $started = 0 ]; then
    fail "$b-start" "$(tail -n 5 /tmp/agent-$b.err)"
    continue
  fi
  line=$(grep 'hook backends' /tmp/agent-$b.err | head -n1)
  echo "BACKENDS $b log: $line"
  wget -q -O /tmp/metrics-$b http://127.0.0.1:9187/metrics || fail "$b-metrics" "wget failed"
  grep '^kestrel_probe_backend_programs' /tmp/metrics-$b | sed "s/^/BACKENDS $b metric: /"
  grep "^kestrel_probe_info" /tmp/metrics-$b | grep -v -e "backend=\"tp_btf\"" -e "backend=\"$b\"" \
    | sed "s/^/BACKENDS $b probe: /"
  n=$(syscall_tracepoints_enabled)
  echo "BACKENDS $b tracefs-enabled: $n"
  # The agent's descriptors: tracepoint and kprobe programs are attached
  # through perf events, fentry and tp_btf through BPF links of their own.
  perf=0 links=""
  for fd in /proc/$apid/fd/*; do
    case "$(readlink "$fd")" in
      *perf_event*) perf=$((perf + 1)) ;;
      *bpf_link*)
        lt=$(sed -n 's/^link_type:[[:space:]]*//p' "/proc/$apid/fdinfo/${fd##*/}")
        links="$links $lt" ;;
    esac
  done
  echo "BACKENDS $b perf-events: $perf"
  echo "BACKENDS $b link-types:$(echo $links | tr ' ' '\n' | sort | uniq -c | tr -s ' \n' ' ')"

  # In a shell of its own, exec'd (so that the agent knows it from its exec
  # record, as it knows its children): the events it made are those of its
  # pid and of its children's (every command is its child; none forks
  # further but kestrel-sys ptrace's tracee, which makes none).
  sh /usr/share/kestrel/backends-behaviours.sh "kbk-$b" &
  bpid=$!
  wait $bpid
  echo "BACKENDS $b behaviours: pid $bpid"
  sleep 3
  kill -TERM $apid
  i=0
  while kill -0 $apid 2>/dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
  kill -0 $apid 2>/dev/null && { echo "BACKENDS $b: still running 30 s after SIGTERM"; kill -KILL $apid; }
  wait $apid
  echo "BACKENDS $b exit: $?"
  grep -E 'ERROR|WARN' /tmp/agent-$b.err | head -n 5 | sed "s/^/BACKENDS $b agent-log: /"
  grep -E "\"(pid|ppid)\":\"$bpid\"" /tmp/ev-$b.json | sed "s/^/BACKENDS ev $b /"
  echo "BACKENDS $b events: $(wc -l </tmp/ev-$b.json) lines"
done

if [ "${BENCH:-0}" = 1 ]; then
  echo "BACKENDS bench: starting"
  # No auditd in the guest.
  kestrel bench overhead --no-audit --runs "${BENCH_RUNS:-3}" --workloads getppid,open-existing \
    --backends "$(echo $BACKENDS | tr ' ' ',')" --out /tmp/bench.md >/tmp/bench.out 2>/tmp/bench.err
  echo "BACKENDS bench: exit $?"
  sed 's/^/BACKENDS bench| /' /tmp/bench.md
  tail -n 5 /tmp/bench.err | sed 's/^/BACKENDS bench-err| /'
  # Per-hook cost (bpf_stats) on each backend, for the workloads whose
  # programs issue #20 sets goals for.
  for b in $BACKENDS; do
    KESTREL_BENCH_AGENT_ARGS="--hook-backend $b" kestrel bench hooks --runs "${BENCH_RUNS:-3}" \
      --workloads exec,connect,file-create,open-existing --out /tmp/hooks-$b.md \
      >/tmp/hooks.out 2>/tmp/hooks.err
    echo "BACKENDS hooks $b: exit $?"
    sed "s/^/BACKENDS hooks-$b| /" /tmp/hooks-$b.md
    tail -n 3 /tmp/hooks.err | sed "s/^/BACKENDS hooks-err| /"
  done
fi

if [ -n "$failed" ]; then
  echo "BACKENDS RESULT: FAIL:$failed"
  exit 1
fi
echo "BACKENDS RESULT: PASS"
