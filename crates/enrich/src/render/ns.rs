//! data_types 308 (setns) and 272 (unshare): the common fields (the
//! caller's namespaces before the call), the namespace types and, for
//! each, the namespace the call moves the process to, comparable with the
//! common `mnt_ns`, `pid_ns` and `net_ns`.

use kestrel_decode::ns::{Ns, NsFd, NS_TYPES};
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(n: &Ns, lk: &mut Lookups, host: &Host) -> Event {
    render(n, &lk.context(&n.task, None), host)
}

/// `target_<type>_ns` field names, in the order of `NS_TYPES`.
const TARGET_FIELDS: [&str; NS_TYPES.len()] = [
    "target_mnt_ns",
    "target_pid_ns",
    "target_net_ns",
    "target_uts_ns",
    "target_ipc_ns",
    "target_user_ns",
    "target_cgroup_ns",
    "target_time_ns",
];

pub(crate) fn render(n: &Ns, cx: &Context, host: &Host) -> Event {
    let t = &n.task;
    let codes = Kind::Ns.spec().data_types;
    let mut ev = Event::with_capacity(44);
    head(&mut ev, t, if n.setns { codes[0] } else { codes[1] });
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, n.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("res", n.res);
    ev.push("ns_types", ns_types(n.ns_types));
    ev.push_int("flags", n.flags);
    if n.setns {
        ev.push_int("fd", n.fd);
        ev.push(
            "fd_kind",
            match n.fd_kind {
                NsFd::Nsfs => "nsfs",
                NsFd::Pidfd => "pidfd",
                NsFd::Other => "",
            },
        );
        ev.push(
            "target_pid",
            if n.target_pid == 0 { String::new() } else { n.target_pid.to_string() },
        );
    }
    for (name, ino) in TARGET_FIELDS.iter().zip(n.target) {
        ev.push(name, if ino == 0 { String::new() } else { ino.to_string() });
    }
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}

/// "mnt,net": the types' names as in /proc/PID/ns/, in a fixed order;
/// other bits as one hex number.
fn ns_types(bits: u32) -> String {
    let mut out: Vec<String> = NS_TYPES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let rest = NS_TYPES.iter().fold(bits, |b, (bit, _)| b & !bit);
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_named() {
        assert_eq!(ns_types(0x4002_0000), "mnt,net");
        assert_eq!(ns_types(0x1000_0000 | 0x100), "user,0x100");
        assert_eq!(ns_types(0), "");
    }
}
