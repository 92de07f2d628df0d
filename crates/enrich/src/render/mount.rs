//! data_type 165: Elkeid's fields, then the call, its result and how each
//! field was read.

use kestrel_decode::mount::{Mount, MountVia};
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{bool_str, head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(m: &Mount, lk: &mut Lookups, host: &Host) -> Event {
    render(m, &lk.context(&m.task, None), host)
}

pub(crate) fn render(m: &Mount, cx: &Context, host: &Host) -> Event {
    let t = &m.task;
    let mut ev = Event::with_capacity(40);
    head(&mut ev, t, Kind::Mount.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("pid_tree", super::exec::pid_tree_of(&m.ancestors, t));
    ev.push_lossless("dev", &m.dev);
    ev.push_lossless("file_path", &m.file_path);
    ev.push_lossless("fstype", &m.fstype);
    ev.push_int("flags", m.flags);
    tail(&mut ev, cx, host, m.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push_int("res", m.res);
    ev.push(
        "syscall",
        match m.via {
            MountVia::Mount => "mount",
            MountVia::MoveMount => "move_mount",
            MountVia::Fsmount => "fsmount",
        },
    );
    ev.push("flag_names", flag_names(m.via, m.flags));
    ev.push("dev_from", if m.dev_from_kernel { "kernel" } else { "caller" });
    ev.push_lossless("target", &m.target);
    ev.push("dev_truncated", bool_str(m.dev_truncated));
    ev.push("file_path_truncated", bool_str(m.path_truncated));
    ev.push("pid_tree_truncated", bool_str(m.pid_tree_truncated));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}

const MS_FLAGS: [(u64, &str); 25] = [
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (16, "MS_SYNCHRONOUS"),
    (32, "MS_REMOUNT"),
    (64, "MS_MANDLOCK"),
    (128, "MS_DIRSYNC"),
    (256, "MS_NOSYMFOLLOW"),
    (1024, "MS_NOATIME"),
    (2048, "MS_NODIRATIME"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (32768, "MS_SILENT"),
    (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 22, "MS_KERNMOUNT"),
    (1 << 23, "MS_I_VERSION"),
    (1 << 24, "MS_STRICTATIME"),
    (1 << 25, "MS_LAZYTIME"),
];

const MOVE_MOUNT_FLAGS: [(u64, &str); 8] = [
    (0x1, "MOVE_MOUNT_F_SYMLINKS"),
    (0x2, "MOVE_MOUNT_F_AUTOMOUNTS"),
    (0x4, "MOVE_MOUNT_F_EMPTY_PATH"),
    (0x10, "MOVE_MOUNT_T_SYMLINKS"),
    (0x20, "MOVE_MOUNT_T_AUTOMOUNTS"),
    (0x40, "MOVE_MOUNT_T_EMPTY_PATH"),
    (0x100, "MOVE_MOUNT_SET_GROUP"),
    (0x200, "MOVE_MOUNT_BENEATH"),
];

const MOUNT_ATTR_FLAGS: [(u64, &str); 9] = [
    (0x1, "MOUNT_ATTR_RDONLY"),
    (0x2, "MOUNT_ATTR_NOSUID"),
    (0x4, "MOUNT_ATTR_NODEV"),
    (0x8, "MOUNT_ATTR_NOEXEC"),
    (0x10, "MOUNT_ATTR_NOATIME"),
    (0x20, "MOUNT_ATTR_STRICTATIME"),
    (0x80, "MOUNT_ATTR_NODIRATIME"),
    (0x10_0000, "MOUNT_ATTR_IDMAP"),
    (0x20_0000, "MOUNT_ATTR_NOSYMFOLLOW"),
];

/// The flags by name, `|`-separated; bits without a name as one hex
/// number. mount's old magic number in the high half (0xC0ED, which the
/// kernel drops) is left out.
fn flag_names(via: MountVia, flags: u64) -> String {
    let (table, mut rest): (&[(u64, &str)], u64) = match via {
        MountVia::Mount if flags & 0xffff_0000 == 0xc0ed_0000 => (&MS_FLAGS, flags & 0xffff),
        MountVia::Mount => (&MS_FLAGS, flags),
        MountVia::MoveMount => (&MOVE_MOUNT_FLAGS, flags),
        MountVia::Fsmount => (&MOUNT_ATTR_FLAGS, flags),
    };
    let mut names: Vec<String> = Vec::new();
    for (bit, name) in table {
        if rest & bit != 0 {
            names.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named() {
        assert_eq!(flag_names(MountVia::Mount, 4096 | 16384), "MS_BIND|MS_REC");
        assert_eq!(flag_names(MountVia::Mount, 0xc0ed_0000 | 1), "MS_RDONLY");
        assert_eq!(flag_names(MountVia::Mount, 1 << 40), "0x10000000000");
        assert_eq!(flag_names(MountVia::MoveMount, 0x44), "MOVE_MOUNT_F_EMPTY_PATH|MOVE_MOUNT_T_EMPTY_PATH");
        assert_eq!(flag_names(MountVia::Mount, 0), "");
        assert_eq!(flag_names(MountVia::Fsmount, 0x8), "MOUNT_ATTR_NOEXEC");
    }
}
