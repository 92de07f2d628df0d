//! data_type 321: Elkeid lacks it (the x86-64 syscall number); the fields
//! the issue names, as an analyst reads them (bpftool's names), the
//! numbers beside.

use kestrel_decode::bpf::Bpf;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{bool_str, head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(b: &Bpf, lk: &mut Lookups, host: &Host) -> Event {
    render(b, &lk.context(&b.task, None), host)
}

pub(crate) fn render(b: &Bpf, cx: &Context, host: &Host) -> Event {
    let t = &b.task;
    let mut ev = Event::with_capacity(40);
    head(&mut ev, t, Kind::Bpf.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("cmd", cmd_name(b.cmd));
    ev.push("prog_type", name_or_number(&PROG_TYPES, b.prog_type));
    ev.push_lossless("prog_name", &b.prog_name);
    ev.push(
        "attach_type",
        b.attach_type.map(|a| name_or_number(&ATTACH_TYPES, a)).unwrap_or_default(),
    );
    tail(&mut ev, cx, host, b.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push_int("res", b.res);
    ev.push_int("cmd_id", b.cmd);
    ev.push_int("prog_type_id", b.prog_type);
    ev.push("attach_type_id", b.attach_type.map(|a| a.to_string()).unwrap_or_default());
    ev.push("prog_id", if b.prog_id == 0 { String::new() } else { b.prog_id.to_string() });
    ev.push_int("prog_fd", b.prog_fd);
    ev.push_int("target_fd", b.target_fd);
    ev.push("prog_from_kernel", bool_str(b.from_kernel));
    ev.push_lossless("tp_name", &b.tp_name);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}

fn cmd_name(cmd: u32) -> String {
    match cmd {
        5 => "BPF_PROG_LOAD".into(),
        8 => "BPF_PROG_ATTACH".into(),
        17 => "BPF_RAW_TRACEPOINT_OPEN".into(),
        28 => "BPF_LINK_CREATE".into(),
        n => n.to_string(),
    }
}

/// A newer kernel's type past the table: its number.
fn name_or_number(table: &[&str], n: u32) -> String {
    table.get(n as usize).map(|s| (*s).to_string()).unwrap_or_else(|| n.to_string())
}

// enum bpf_prog_type and enum bpf_attach_type (UAPI: numbers never change,
// new ones are appended), lowercased without their prefix as bpftool
// prints them; taken from the vmlinux.h of crates/probes/bpf (Linux 6.18).
const PROG_TYPES: [&str; 33] = ["unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_skb", "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2", "sk_reuseport", "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm", "sk_lookup", "syscall", "netfilter"];

const ATTACH_TYPES: [&str; 58] = ["cgroup_inet_ingress", "cgroup_inet_egress", "cgroup_inet_sock_create", "cgroup_sock_ops", "sk_skb_stream_parser", "sk_skb_stream_verdict", "cgroup_device", "sk_msg_verdict", "cgroup_inet4_bind", "cgroup_inet6_bind", "cgroup_inet4_connect", "cgroup_inet6_connect", "cgroup_inet4_post_bind", "cgroup_inet6_post_bind", "cgroup_udp4_sendmsg", "cgroup_udp6_sendmsg", "lirc_mode2", "flow_dissector", "cgroup_sysctl", "cgroup_udp4_recvmsg", "cgroup_udp6_recvmsg", "cgroup_getsockopt", "cgroup_setsockopt", "trace_raw_tp", "trace_fentry", "trace_fexit", "modify_return", "lsm_mac", "trace_iter", "cgroup_inet4_getpeername", "cgroup_inet6_getpeername", "cgroup_inet4_getsockname", "cgroup_inet6_getsockname", "xdp_devmap", "cgroup_inet_sock_release", "xdp_cpumap", "sk_lookup", "xdp", "sk_skb_verdict", "sk_reuseport_select", "sk_reuseport_select_or_migrate", "perf_event", "trace_kprobe_multi", "lsm_cgroup", "struct_ops", "netfilter", "tcx_ingress", "tcx_egress", "trace_uprobe_multi", "cgroup_unix_connect", "cgroup_unix_sendmsg", "cgroup_unix_recvmsg", "cgroup_unix_getpeername", "cgroup_unix_getsockname", "netkit_primary", "netkit_peer", "trace_kprobe_session", "trace_uprobe_session"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_or_number(&PROG_TYPES, 1), "socket_filter");
        assert_eq!(name_or_number(&PROG_TYPES, 2), "kprobe");
        assert_eq!(name_or_number(&PROG_TYPES, 1000), "1000");
        assert_eq!(name_or_number(&ATTACH_TYPES, 0), "cgroup_inet_ingress");
        assert_eq!(name_or_number(&ATTACH_TYPES, 25), "trace_fexit");
        assert_eq!(cmd_name(5), "BPF_PROG_LOAD");
    }
}
