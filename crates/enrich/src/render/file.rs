//! data_type 602. `create_file_md5` and `create_file_md5_skipped` are
//! left empty: the content is hashed later, once the creator had time to
//! write it (the agent's file hashing stage, which fills one of them).

use kestrel_decode::FileCreate;
use kestrel_event::{lossless_string, Event, Host, DATA_TYPE_FILE};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(f: &FileCreate, lk: &mut Lookups, host: &Host) -> Event {
    render(f, &lk.context(&f.task, None), host)
}

pub(crate) fn render(f: &FileCreate, cx: &Context, host: &Host) -> Event {
    let t = &f.task;
    let mut ev = Event::with_capacity(32);
    head(&mut ev, t, DATA_TYPE_FILE);
    ev.push("exe", cx.exe());
    let path = lossless_string(&f.path);
    ev.push(
        "file_path",
        if f.path_truncated {
            format!("...{path}")
        } else {
            path
        },
    );
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, f.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("create_file_md5", "");
    // Kestrel's additions. Why the hash is missing, once the hash step
    // had its turn: empty when `create_file_md5` is set.
    ev.push("create_file_md5_skipped", "");
    ev.push(
        "create_type",
        if f.linked && f.tmpfile {
            "tmpfile_linkat"
        } else if f.linked {
            "linkat"
        } else if f.tmpfile {
            "tmpfile"
        } else if f.mknod {
            "mknod"
        } else {
            "open"
        },
    );
    ev.push("mode", format!("{:o}", f.mode));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
