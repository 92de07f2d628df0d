//! data_type 59.

use kestrel_decode::{Ancestor, Exec, SockAddrs, WATCHED_ENV};
use kestrel_event::{lossless_string, Event, Host, DATA_TYPE_EXEC};

use super::{bool_str, head, ids, ip_or_empty, placement, tail};
use crate::context::{Context, ExecView, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(e: &Exec, lk: &mut Lookups, host: &Host) -> Event {
    let (cx, view) = lk.exec(e);
    render(e, &cx, view, host)
}

pub(crate) fn render(e: &Exec, cx: &Context, view: ExecView, host: &Host) -> Event {
    let t = &e.task;
    let mut ev = Event::with_capacity(40);
    let ExecView {
        cwd,
        stdio: [stdin, stdout],
        env,
        parent,
        pgid,
    } = view;
    head(&mut ev, t, DATA_TYPE_EXEC);
    ev.push("run_path", cwd);
    ev.push("exe", cx.exe());
    ev.push("argv", join_argv(&e.argv));
    ids(&mut ev, t);
    ev.push("stdin", stdin);
    ev.push("stdout", stdout);
    ev.push_int("sessionid", t.sessionid);

    let socket = e.socket.as_ref();
    push_addrs(&mut ev, socket.map(|(_, a)| a));
    ev.push("pid_tree", pid_tree(e));
    ev.push_lossless("tty_name", &e.tty);
    ev.push(
        "socket_process_pid",
        socket.map(|(a, _)| a.pid.to_string()).unwrap_or_default(),
    );
    ev.push(
        "socket_process_exe",
        cx.socket_holder
            .as_ref()
            .map(|p| p.exe.clone())
            .unwrap_or_default(),
    );
    for (name, value) in WATCHED_ENV.into_iter().zip(env) {
        ev.push(name, value);
    }
    tail(&mut ev, cx, host, e.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push(
        "socket_process_exe_md5",
        cx.socket_holder
            .as_ref()
            .map(|p| p.exe_md5.clone())
            .unwrap_or_default(),
    );
    // Kestrel's additions, beside the reference fields.
    ev.push_int("res", e.res);
    ev.push_int("argc", e.argc);
    ev.push("argv_truncated", bool_str(e.argv_truncated));
    ev.push("argv_list", argv_list(&e.argv));
    ev.push("ppid_argv", parent.argv);
    ev.push("pgid_argv", pgid.argv);
    ev.push("parent_exe", parent.exe);
    ev.push("pid_tree_truncated", bool_str(e.pid_tree_truncated));
    ev.push_lossless("filename", &e.filename);
    ev.push_int("euid", t.euid);
    ev.push_int("sid", t.sid);
    placement(&mut ev, t, cx);
    exe_identity(&mut ev, e, cx);
    ev.push("env_truncated", bool_str(e.env_truncated));
    ev
}

/// What the kernel took of the file it executed, and what the hash is:
/// the fields a rule needs when `exe` is a memfd, a deleted file or a
/// path that has since been given to another file.
fn exe_identity(ev: &mut Event, e: &Exec, cx: &Context) {
    let id = e.task.exe.filter(|_| e.res == 0);
    let (inode, dev) = match &id {
        Some(id) => {
            let (major, minor) = id.dev_major_minor();
            (id.ino.to_string(), format!("{major}:{minor}"))
        }
        None => (String::new(), String::new()),
    };
    ev.push("exe_inode", inode);
    ev.push("exe_dev", dev);
    ev.push("exe_memfd", bool_str(id.is_some_and(|i| i.memfd)));
    ev.push("exe_deleted", bool_str(id.is_some_and(|i| i.deleted)));
    ev.push("exe_truncated", bool_str(e.exe_truncated));
    ev.push("exe_md5_status", cx.exe_md5_status());
}

/// The exec event's `dip dport sip sport sa_family`, in the reference's
/// order: remote end first (the peer behind the session).
fn push_addrs(ev: &mut Event, a: Option<&SockAddrs>) {
    match a {
        Some(a) => {
            ev.push("dip", ip_or_empty(a.dip));
            ev.push_int("dport", a.dport);
            ev.push("sip", ip_or_empty(a.sip));
            ev.push_int("sport", a.sport);
            ev.push_int("sa_family", a.family);
        }
        None => {
            for k in ["dip", "dport", "sip", "sport", "sa_family"] {
                ev.push(k, "");
            }
        }
    }
}

/// Arguments joined by spaces, as in the reference. `argc` and
/// `argv_truncated` beside it say whether all of them are here.
pub(crate) fn join_argv(argv: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&lossless_string(a));
    }
    s
}

/// The arguments as a JSON array (in a string, like every value): `argv`
/// joined by spaces cannot tell `["a b"]` from `["a", "b"]`.
fn argv_list(argv: &[Vec<u8>]) -> String {
    let args: Vec<String> = argv.iter().map(|a| lossless_string(a)).collect();
    serde_json::to_string(&args).unwrap_or_default()
}

/// `1(systemd)->1384(sshd)->...->PID(comm)`: root first, the process last.
pub(super) fn pid_tree(e: &Exec) -> String {
    tree(&e.ancestors, e.task.tgid, &e.task.comm)
}

/// `pid_tree` of any record that carries its ancestors and task.
pub(super) fn pid_tree_of(ancestors: &[Ancestor], t: &kestrel_decode::Task) -> String {
    tree(ancestors, t.tgid, &t.comm)
}

/// `pid_tree` of any record with ancestors, parent first.
pub(super) fn tree(ancestors: &[Ancestor], tgid: u32, comm: &[u8]) -> String {
    let mut s = String::new();
    for a in ancestors.iter().rev() {
        s.push_str(&format!("{}({})->", a.pid, tree_comm(&a.comm)));
    }
    s.push_str(&format!("{}({})", tgid, tree_comm(comm)));
    s
}

/// A comm inside `pid_tree`: processes name themselves, so the tree's own
/// separators are escaped (`(` `)` `>` as `\x28` `\x29` `\x3e`) and a
/// comm such as `x)->1(sshd` cannot add an ancestor. `\` is already
/// `\\`, so the text `\x28` stays apart from an escaped `(`.
fn tree_comm(comm: &[u8]) -> String {
    let s = lossless_string(comm);
    if !s.contains(['(', ')', '>']) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '(' => out.push_str("\\x28"),
            ')' => out.push_str("\\x29"),
            '>' => out.push_str("\\x3e"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comm_cannot_add_an_ancestor() {
        assert_eq!(tree_comm(b"x)->1(sshd"), "x\\x29-\\x3e1\\x28sshd");
        assert_eq!(tree_comm(b"bash"), "bash");
        assert_eq!(tree_comm(b"a\\x29"), "a\\\\x29");
    }

    #[test]
    fn argv_list_keeps_the_arguments_apart() {
        let one = argv_list(&[b"a b".to_vec()]);
        let two = argv_list(&[b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(one, r#"["a b"]"#);
        assert_eq!(two, r#"["a","b"]"#);
        assert_eq!(
            join_argv(&[b"a b".to_vec()]),
            join_argv(&[b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(
            argv_list(&[b"\xff".to_vec(), b"\\xff".to_vec()]),
            r#"["\\xff","\\\\xff"]"#
        );
        assert_eq!(argv_list(&[]), "[]");
    }
}
