//! data_type 10: the common fields, Elkeid's `mprotect_prot`, `owner_pid`,
//! `owner_file`, `vm_file`, then Kestrel's: where, how, and what the
//! mapping was.

use kestrel_decode::mprotect::{MemSyscall, Mprotect};
use kestrel_decode::Kind;
use kestrel_event::{lossless_string, Event, Host};

use super::{bool_str, head, ids, placement, tail};
use crate::context::{Context, Lookups};

const VM_READ: u64 = 0x1;
const VM_WRITE: u64 = 0x2;
const VM_EXEC: u64 = 0x4;

/// Its context looked up, then its fields.
pub(crate) fn event(m: &Mprotect, lk: &mut Lookups, host: &Host) -> Event {
    render(m, &lk.context(&m.task, None), host)
}

/// The mapping's file as /proc/PID/maps names it: its path, or for a file
/// without one (a memfd) its own name, " (deleted)" when it has no link.
fn vm_file(m: &Mprotect) -> String {
    let Some(v) = &m.vma else {
        return String::new();
    };
    let Some(path) = &v.file else {
        return String::new();
    };
    let mut s = if path.as_slice() == b"/" && !v.file_name.is_empty() {
        let mut p = b"/".to_vec();
        p.extend_from_slice(&v.file_name);
        lossless_string(&p)
    } else {
        lossless_string(path)
    };
    if v.unlinked {
        s.push_str(" (deleted)");
    }
    s
}

/// VM_READ/WRITE/EXEC as PROT_READ/WRITE/EXEC (the same bits).
fn prot_of(vm_flags: u64) -> u64 {
    vm_flags & (VM_READ | VM_WRITE | VM_EXEC)
}

pub(crate) fn render(m: &Mprotect, cx: &Context, host: &Host) -> Event {
    let t = &m.task;
    let mut ev = Event::with_capacity(48);
    head(&mut ev, t, Kind::Mprotect.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, m.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("mprotect_prot", m.prot);
    ev.push_int("owner_pid", m.owner_tgid);
    ev.push(
        "owner_file",
        if m.owner_tgid == t.tgid {
            cx.exe()
        } else {
            ""
        },
    );
    ev.push("vm_file", vm_file(m));
    // Kestrel's additions.
    ev.push("syscall", m.syscall.as_str());
    ev.push("addr", format!("{:016x}", m.addr));
    ev.push_int("len", m.len);
    ev.push_int("res", m.res);
    let v = m.vma.as_ref();
    // The mapping's protection before an mprotect; after an mmap there
    // was none before.
    ev.push(
        "old_prot",
        match (v, m.syscall) {
            (Some(v), MemSyscall::Mprotect)
            | (Some(v), MemSyscall::PkeyMprotect) => {
                prot_of(v.flags).to_string()
            }
            _ => String::new(),
        },
    );
    ev.push(
        "vm_start",
        v.map(|v| format!("{:016x}", v.start)).unwrap_or_default(),
    );
    ev.push(
        "vm_end",
        v.map(|v| format!("{:016x}", v.end)).unwrap_or_default(),
    );
    ev.push(
        "vm_anonymous",
        match v {
            Some(v) => bool_str(v.file.is_none()),
            None => "",
        },
    );
    ev.push("vm_written", v.map(|v| bool_str(v.cow)).unwrap_or(""));
    ev.push(
        "vm_file_writable",
        match v {
            Some(v) if v.file.is_some() => bool_str(v.file_writable),
            _ => "",
        },
    );
    ev.push(
        "vm_file_truncated",
        v.map(|v| bool_str(v.path_truncated)).unwrap_or(""),
    );
    ev.push("vma_unknown", bool_str(m.vma_busy));
    ev.push(
        "map_flags",
        if m.syscall == MemSyscall::Mmap {
            m.map_flags.to_string()
        } else {
            String::new()
        },
    );
    ev.push(
        "fd",
        if m.syscall == MemSyscall::Mmap {
            m.fd.to_string()
        } else {
            String::new()
        },
    );
    ev.push(
        "pkey",
        if m.syscall == MemSyscall::PkeyMprotect {
            m.pkey.to_string()
        } else {
            String::new()
        },
    );
    ev.push("read_implies_exec", bool_str(m.read_implies_exec));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
