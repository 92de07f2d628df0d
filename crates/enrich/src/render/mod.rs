//! One renderer per record kind, `<name>.rs` for each kind of the table,
//! looks up the record's [`Context`] and writes the event's fields, in the
//! reference's order; the field groups every kind shares are here.

use std::net::IpAddr;

use kestrel_decode::{Record, Task};
use kestrel_event::{Event, Host, When};

use crate::context::{Context, Lookups};

/// The modules and the dispatch to them: a kind without its renderer's
/// module or `event` function does not build.
macro_rules! renderers {
    ($($kind:ident $name:ident),*) => {
        $(pub(crate) mod $name;)*

        /// The event of any record.
        pub(crate) fn event(rec: &Record, lk: &mut Lookups, host: &Host) -> Event {
            match rec {
                $(Record::$kind(r) => $name::event(r, lk, host),)*
            }
        }
    };
}
kestrel_decode::for_each_kind!(renderers);

/// `uid` and `data_type`, which open every kernel event.
fn head(ev: &mut Event, t: &Task, data_type: &'static str) {
    ev.push_int("uid", t.uid);
    ev.push("data_type", data_type);
}

/// The task's ids and names.
fn ids(ev: &mut Event, t: &Task) {
    ev.push_int("pid", t.pid);
    ev.push_int("ppid", t.ppid);
    ev.push_int("pgid", t.pgid);
    ev.push_int("tgid", t.tgid);
    ev.push_lossless("comm", &t.comm);
    ev.push_lossless("nodename", &t.nodename);
}

/// `user`, then the host facts: the address is that of the network the
/// event happened in.
fn tail(ev: &mut Event, cx: &Context, host: &Host, ktime_ns: u64) {
    ev.push("user", &cx.user);
    let when = When::Boot(ktime_ns);
    match &cx.foreign_ip {
        Some(ip) => host.stamp_with_ip(ev, when, ip),
        None => host.stamp(ev, when),
    }
}

/// Namespace and container fields, which close every kernel event.
fn placement(ev: &mut Event, t: &Task, cx: &Context) {
    ev.push_int("pid_ns", t.pid_ns);
    ev.push_int("mnt_ns", t.mnt_ns);
    ev.push_int("net_ns", t.net_ns);
    ev.push_int("ns_pid", t.ns_pid);
    ev.push_int("cgroup_id", t.cgroup_id);
    let (c, names) = (&cx.container, &cx.names);
    ev.push("container_id", &c.id);
    ev.push("container_runtime", c.runtime);
    ev.push("pod_uid", &c.pod_uid);
    ev.push("container_name", &names.name);
    ev.push("image", &names.image);
    ev.push("pod_name", &names.pod_name);
    ev.push("pod_namespace", &names.pod_namespace);
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn ip_or_empty(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        String::new()
    } else {
        ip.to_string()
    }
}
