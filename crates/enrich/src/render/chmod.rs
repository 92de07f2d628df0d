//! data_type 90: the file and its modes, then Kestrel's res, syscall and
//! flags.

use kestrel_decode::{chmod::Chmod, Kind};
use kestrel_event::{Event, Host};

use super::rename::{path_str, syscall_name};
use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &Chmod, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

/// A mode as `chmod` takes it: four octal digits, the file type left out.
fn octal(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

pub(crate) fn render(r: &Chmod, cx: &Context, host: &Host) -> Event {
    let t = &r.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Chmod.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("file", path_str(&r.file));
    ev.push("mode", octal(r.mode));
    ev.push("old_mode", r.old_mode.map(octal).unwrap_or_default());
    ev.push_lossless("sb_id", &r.sb_id);
    tail(&mut ev, cx, host, r.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_display("watched", r.watched);
    ev.push_int("res", r.res);
    ev.push("syscall", syscall_name(r.syscall));
    ev.push_int("flags", r.flags);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}

#[cfg(test)]
mod tests {
    use super::octal;

    #[test]
    fn modes_are_four_octal_digits_without_the_file_type() {
        assert_eq!(octal(0o104755), "4755");
        assert_eq!(octal(0o644), "0644");
    }
}
