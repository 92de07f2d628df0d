//! Builders of raw records, for tests, fuzzing and replay benchmarks.

use std::mem::{offset_of, size_of};

use kestrel_abi as abi;

use crate::common::{AF_INET, AF_INET6};

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is a plain ABI struct; viewing it as bytes is always valid.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

fn put(dst: &mut [std::os::raw::c_char], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.iter().chain(std::iter::once(&0))) {
        *d = *s as std::os::raw::c_char;
    }
}

/// A task with the given ids and names.
pub fn task(tgid: u32, ppid: u32, uid: u32, comm: &[u8]) -> abi::kestrel_task {
    let mut t = abi::kestrel_task {
        pid: tgid,
        tgid,
        ppid,
        pgid: tgid,
        sid: tgid,
        sessionid: u32::MAX,
        uid,
        euid: uid,
        ..Default::default()
    };
    put(&mut t.comm, comm);
    put(&mut t.nodename, b"testhost");
    t
}

/// A successful exec record as the kernel would send it.
pub fn exec(
    task: abi::kestrel_task,
    filename: &[u8],
    cwd: &[&[u8]],
    cgroup: &[&[u8]],
    argv: &[&[u8]],
    env: &[&[u8]],
    ancestors: &[(u32, &[u8])],
) -> Vec<u8> {
    let mut e: Box<abi::kestrel_exec> = Box::default();
    e.hdr.kind = abi::KESTREL_KIND_EXEC as u16;
    e.task = task;
    e.argc = argv.len() as u32;
    e.flags = abi::KESTREL_EXEC_ARGV_FROM_MM;
    let mut data = Vec::new();
    data.extend_from_slice(filename);
    data.push(0);
    e.filename_len = data.len() as u32;
    // Innermost component first, as the kernel walks it.
    for c in cwd.iter().rev() {
        data.extend_from_slice(c);
        data.push(0);
    }
    e.cwd_len = data.len() as u32 - e.filename_len;
    let before = data.len() as u32;
    for c in cgroup.iter().rev() {
        data.extend_from_slice(c);
        data.push(0);
    }
    e.cgroup_len = data.len() as u32 - before;
    let before = data.len() as u32;
    for a in argv {
        data.extend_from_slice(a);
        data.push(0);
    }
    e.argv_len = data.len() as u32 - before;
    let before = data.len() as u32;
    for v in env {
        data.extend_from_slice(v);
        data.push(0);
    }
    e.env_len = data.len() as u32 - before;
    for (slot, (pid, comm)) in e.ancestors.iter_mut().zip(ancestors) {
        slot.pid = *pid;
        put(&mut slot.comm, comm);
    }
    e.ancestors_len = ancestors.len() as u32;
    e.data[..data.len()].copy_from_slice(&data);
    let size = offset_of!(abi::kestrel_exec, data) + data.len();
    e.hdr.size = size as u32;
    as_bytes(&*e)[..size].to_vec()
}

/// A connect record.
pub fn connect(task: abi::kestrel_task, res: i32, dip: [u8; 4], dport: u16) -> Vec<u8> {
    let mut c = abi::kestrel_connect::default();
    c.hdr.kind = abi::KESTREL_KIND_CONNECT as u16;
    c.hdr.size = size_of::<abi::kestrel_connect>() as u32;
    c.task = task;
    c.res = res;
    c.fd = 3;
    c.addrs.family = AF_INET;
    c.addrs.daddr[..4].copy_from_slice(&dip);
    c.addrs.dport = dport;
    c.addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    c.addrs.sport = 40000;
    as_bytes(&c).to_vec()
}

/// A connect record to an IPv6 peer, from `::1` port 40000.
pub fn connect6(task: abi::kestrel_task, res: i32, dip: [u8; 16], dport: u16) -> Vec<u8> {
    let mut c = abi::kestrel_connect::default();
    c.hdr.kind = abi::KESTREL_KIND_CONNECT as u16;
    c.hdr.size = size_of::<abi::kestrel_connect>() as u32;
    c.task = task;
    c.res = res;
    c.fd = 4;
    c.addrs.family = AF_INET6;
    c.addrs.daddr = dip;
    c.addrs.dport = dport;
    c.addrs.saddr[15] = 1;
    c.addrs.sport = 40000;
    as_bytes(&c).to_vec()
}

/// A ptrace record.
pub fn ptrace(
    task: abi::kestrel_task,
    request: i64,
    target_pid: i32,
    res: i32,
    addr: u64,
    data: u64,
) -> Vec<u8> {
    let mut p = abi::kestrel_ptrace::default();
    p.hdr.kind = abi::KESTREL_KIND_PTRACE as u16;
    p.hdr.size = size_of::<abi::kestrel_ptrace>() as u32;
    p.task = task;
    p.request = request;
    p.target_pid = target_pid;
    p.res = res;
    p.addr = addr;
    p.data = data;
    as_bytes(&p).to_vec()
}

/// A DNS record: `payload` received on fd 5 at 127.0.0.1:40001 from
/// 127.0.0.53:53, the record cut after the payload as the kernel does.
pub fn dns(task: abi::kestrel_task, payload: &[u8]) -> Vec<u8> {
    let mut d: Box<abi::kestrel_dns> = Box::default();
    d.hdr.kind = abi::KESTREL_KIND_DNS as u16;
    d.task = task;
    d.fd = 5;
    d.msg_len = payload.len() as u32;
    let n = payload.len().min(d.payload.len());
    d.payload_len = n as u32;
    d.payload[..n].copy_from_slice(&payload[..n]);
    d.addrs.family = AF_INET;
    d.addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    d.addrs.sport = 40001;
    d.addrs.daddr[..4].copy_from_slice(&[127, 0, 0, 53]);
    d.addrs.dport = 53;
    let size = offset_of!(abi::kestrel_dns, payload) + n;
    d.hdr.size = size as u32;
    as_bytes(&*d)[..size].to_vec()
}

/// A credential change record.
pub fn cred(
    task: abi::kestrel_task,
    old_uid: u32,
    old_euid: u32,
    trigger: u32,
    filename: &[u8],
) -> Vec<u8> {
    let mut c = abi::kestrel_cred::default();
    c.hdr.kind = abi::KESTREL_KIND_CRED as u16;
    c.hdr.size = size_of::<abi::kestrel_cred>() as u32;
    c.task = task;
    c.old_uid = old_uid;
    c.old_euid = old_euid;
    c.trigger = trigger;
    put(&mut c.filename, filename);
    as_bytes(&c).to_vec()
}

/// Fills a kernel path walk from components given root first.
fn walk(p: &mut abi::kestrel_path, components: &[&[u8]]) {
    let mut area = Vec::new();
    for c in components.iter().rev() {
        area.extend_from_slice(c);
        area.push(0);
    }
    p.bytes[..area.len()].copy_from_slice(&area);
    p.len = area.len() as u32;
}

/// A module load record: finit_module of the file at `path`
/// (components, root first) when `fd` >= 0, else init_module.
pub fn module(
    task: abi::kestrel_task,
    res: i32,
    fd: i32,
    image_len: u64,
    flags: u32,
    path: &[&[u8]],
) -> Vec<u8> {
    let mut m: Box<abi::kestrel_module> = Box::default();
    m.hdr.kind = abi::KESTREL_KIND_MODULE as u16;
    m.hdr.size = size_of::<abi::kestrel_module>() as u32;
    m.task = task;
    m.res = res;
    m.fd = fd;
    m.image_len = image_len;
    m.flags = flags;
    walk(&mut m.path, path);
    as_bytes(&*m).to_vec()
}

/// How a file was created, for [`file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// open/openat/creat: `path` is the file itself.
    Open,
    /// O_TMPFILE: `path` is the directory plus the "#INODE" name.
    Tmpfile,
    /// mknod: `path` is the directory, `rel` the name given.
    Mknod,
}

/// A file creation record.
pub fn file(
    task: abi::kestrel_task,
    how: Creation,
    mode: u32,
    path: &[&[u8]],
    rel: &[u8],
) -> Vec<u8> {
    let mut f: Box<abi::kestrel_file> = Box::default();
    f.hdr.kind = abi::KESTREL_KIND_FILE as u16;
    f.hdr.size = size_of::<abi::kestrel_file>() as u32;
    f.task = task;
    f.res = if how == Creation::Mknod { 0 } else { 3 };
    f.flags = match how {
        Creation::Open => 0,
        Creation::Tmpfile => abi::KESTREL_FILE_TMPFILE,
        Creation::Mknod => abi::KESTREL_FILE_MKNOD,
    };
    f.mode = mode;
    walk(&mut f.path, path);
    put(&mut f.rel, rel);
    as_bytes(&*f).to_vec()
}
