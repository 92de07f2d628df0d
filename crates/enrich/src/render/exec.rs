//! data_type 59.

use kestrel_decode::{Exec, SockAddrs, WATCHED_ENV};
use kestrel_event::{lossless_string, Event, Host, DATA_TYPE_EXEC};

use super::{bool_str, head, ids, ip_or_empty, placement, tail};
use crate::context::{Context, ExecView};

pub(crate) fn render(e: &Exec, cx: &Context, view: ExecView, host: &Host) -> Event {
    let t = &e.task;
    let mut ev = Event::with_capacity(40);
    let ExecView {
        cwd,
        stdio: [stdin, stdout],
        env,
    } = view;
    head(&mut ev, t, DATA_TYPE_EXEC);
    ev.push("run_path", cwd);
    ev.push("exe", cx.exe());
    ev.push("argv", join_argv(&e.argv));
    ids(&mut ev, t);
    ev.push("stdin", stdin);
    ev.push("stdout", stdout);
    ev.push("sessionid", t.sessionid.to_string());

    let socket = e.socket.as_ref();
    push_addrs(&mut ev, socket.map(|(_, a)| a));
    ev.push("pid_tree", pid_tree(e));
    ev.push("tty_name", lossless_string(&e.tty));
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
    ev.push("res", e.res.to_string());
    ev.push("argc", e.argc.to_string());
    ev.push("argv_truncated", bool_str(e.argv_truncated));
    ev.push("pid_tree_truncated", bool_str(e.pid_tree_truncated));
    ev.push("filename", lossless_string(&e.filename));
    ev.push("euid", t.euid.to_string());
    ev.push("sid", t.sid.to_string());
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
            ev.push("dport", a.dport.to_string());
            ev.push("sip", ip_or_empty(a.sip));
            ev.push("sport", a.sport.to_string());
            ev.push("sa_family", a.family.to_string());
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
fn join_argv(argv: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&lossless_string(a));
    }
    s
}

/// `1(systemd)->1384(sshd)->...->PID(comm)`: root first, the process last.
fn pid_tree(e: &Exec) -> String {
    let mut s = String::new();
    for a in e.ancestors.iter().rev() {
        s.push_str(&format!("{}({})->", a.pid, lossless_string(&a.comm)));
    }
    s.push_str(&format!(
        "{}({})",
        e.task.tgid,
        lossless_string(&e.task.comm)
    ));
    s
}
