//! data_type 611: a process raised above its parent's credentials.

use kestrel_decode::{Creds, Kind, Privesc};
use kestrel_event::{Event, Host};

use super::exec::tree;
use super::{head, ids, placement, tail};
use crate::context::Lookups;

/// Its context looked up, then Elkeid's fields and Kestrel's.
pub(crate) fn event(p: &Privesc, lk: &mut Lookups, host: &Host) -> Event {
    let cx = lk.context(&p.task, None);
    let t = &p.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Privesc.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push_int("p_pid", p.p_pid);
    ev.push("pid_tree", tree(&p.ancestors, t.tgid, &t.comm));
    ev.push("p_cred", cred_string(&p.p_cred));
    ev.push("c_cred", cred_string(&p.c_cred));
    tail(&mut ev, &cx, host, p.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push("trigger", super::cred::trigger_name(p.trigger));
    ev.push_int("euid", t.euid);
    ev.push("pid_tree_truncated", super::bool_str(p.pid_tree_truncated));
    placement(&mut ev, t, &cx);
    ev
}

/// Elkeid's `uid|euid|suid|fsuid|gid|egid|sgid|fsgid`.
fn cred_string(c: &Creds) -> String {
    let ids: Vec<String> = c.ids.iter().map(u32::to_string).collect();
    ids.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cred_strings_are_in_elkeids_order() {
        let c = Creds {
            ids: [1, 2, 3, 4, 5, 6, 7, 8],
        };
        assert_eq!(cred_string(&c), "1|2|3|4|5|6|7|8");
    }
}
