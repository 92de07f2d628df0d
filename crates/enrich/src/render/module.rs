//! data_type 603.

use kestrel_decode::Module;
use kestrel_event::{Event, Host, DATA_TYPE_MODULE};

use super::{head, ids, placement, tail};
use crate::context::{Context, ModuleFile, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(m: &Module, lk: &mut Lookups, host: &Host) -> Event {
    let (cx, file) = lk.module(m);
    render(m, &cx, file, host)
}

pub(crate) fn render(m: &Module, cx: &Context, file: ModuleFile, host: &Host) -> Event {
    let t = &m.task;
    let mut ev = Event::with_capacity(30);
    head(&mut ev, t, DATA_TYPE_MODULE);
    ev.push("exe", cx.exe());
    ev.push("lkm_file", file.path);
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, m.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("load_file_md5", file.md5);
    // Kestrel's additions.
    ev.push("module_name", file.name);
    ev.push_int("res", m.res);
    ev.push(
        "syscall",
        if m.fd >= 0 {
            "finit_module"
        } else {
            "init_module"
        },
    );
    ev.push_int("flags", m.flags);
    ev.push_int("image_len", m.image_len);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
