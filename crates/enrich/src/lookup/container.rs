//! Which container a cgroup path belongs to, remembered per cgroup.
//!
//! Runtimes name the cgroup of each container after its id; the forms
//! differ by runtime and by cgroup driver (systemd or cgroupfs):
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | docker | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | containerd (CRI) | `/kubepods.slice/.../cri-containerd-<id>.scope` | `/kubepods/<qos>/pod<uid>/<id>` |
//! | CRI-O | `/kubepods.slice/.../crio-<id>.scope` | `/kubepods/<qos>/pod<uid>/crio-<id>` |
//! | podman | `/machine.slice/libpod-<id>.scope` | `/libpod_parent/libpod-<id>` |
//! | systemd-nspawn | `/machine.slice/systemd-nspawn@<name>.service`, `/machine.slice/machine-<name>.scope` | |
//! | lxc | `/lxc.payload.<name>` (LXC 4) | `/lxc/<name>` |
//!
//! The path is the same under cgroup v1 (in each controller's hierarchy)
//! and v2. A container's own processes are matched; the runtimes' monitor
//! processes (`crio-conmon-`, `libpod-conmon-`) are not containers.

use std::num::NonZeroUsize;

use kestrel_decode::Task;
use lru::LruCache;

use super::procfs::Procfs;

/// A container, as its cgroup path tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// Runtime: docker, containerd, crio, podman, systemd-nspawn, lxc.
    pub runtime: &'static str,
    /// Container id (64 hex digits), or the machine name for nspawn/lxc.
    pub id: String,
    /// Kubernetes pod uid, for containers of a pod.
    pub pod_uid: String,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Unescapes systemd unit name escapes (`\x2d` is '-').
fn unescape_unit(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if b.is_ascii() => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The pod uid in a kubepods path component: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let at = c.rfind("pod")?;
    if at > 0 && !c[..at].ends_with('-') {
        return None;
    }
    let uid = c[at + 3..].replace('_', "-");
    let valid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// The container a cgroup path places a process in, if any.
pub fn from_cgroup_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let in_kubepods = parts.first().is_some_and(|p| p.starts_with("kubepods"));
    let pod = if in_kubepods {
        parts.iter().find_map(|p| pod_uid(p)).unwrap_or_default()
    } else {
        String::new()
    };
    // The innermost component that names a container decides.
    for (i, part) in parts.iter().enumerate().rev() {
        let unit = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".service"))
            .unwrap_or(part);
        let found = |runtime: &'static str, id: &str| {
            Some(Container {
                runtime,
                id: id.to_string(),
                pod_uid: pod.clone(),
            })
        };
        if let Some(id) = unit.strip_prefix("docker-").filter(|id| is_id(id)) {
            return found("docker", id);
        }
        if let Some(id) = unit.strip_prefix("cri-containerd-").filter(|id| is_id(id)) {
            return found("containerd", id);
        }
        if let Some(id) = unit.strip_prefix("crio-").filter(|id| is_id(id)) {
            return found("crio", id);
        }
        if let Some(id) = unit.strip_prefix("libpod-").filter(|id| is_id(id)) {
            return found("podman", id);
        }
        if let Some(name) = unit.strip_prefix("systemd-nspawn@") {
            return found("systemd-nspawn", &unescape_unit(name));
        }
        if i > 0 && parts[i - 1] == "machine.slice" {
            if let Some(name) = part
                .strip_prefix("machine-")
                .and_then(|n| n.strip_suffix(".scope"))
            {
                return found("systemd-nspawn", &unescape_unit(name));
            }
        }
        if let Some(name) = part.strip_prefix("lxc.payload.") {
            return found("lxc", name);
        }
        if i > 0 && parts[i - 1] == "lxc" && i == 1 {
            return found("lxc", part);
        }
        if is_id(part) && i > 0 {
            match parts[i - 1] {
                "docker" => return found("docker", part),
                // A bare id in a pod's cgroup: the cgroupfs driver of a CRI
                // runtime; CRI-O prefixes its ids, so this is containerd.
                p if in_kubepods && pod_uid(p).is_some() => return found("containerd", part),
                _ => {}
            }
        }
    }
    None
}

/// The cgroup path from /proc/PID/cgroup text: the unified ("0::") line,
/// or on cgroup v1 the memory controller's, to match what the kernel side
/// reads (see kestrel_abi.h).
pub fn path_from_proc_cgroup(text: &str) -> Option<&str> {
    let mut unified = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrl.split(',').any(|c| c == "memory") {
            return Some(path);
        }
        if ctrl.is_empty() {
            unified = Some(path);
        }
    }
    unified
}

/// cgroup id → the container it belongs to (None: not a container).
pub(crate) struct Containers {
    cache: LruCache<u64, Option<Container>>,
}

impl Containers {
    pub(crate) fn new(entries: usize) -> Self {
        Containers {
            cache: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap()),
        }
    }

    /// The container of a task, from its cgroup path when the kernel sent
    /// one, else from the cache or /proc/PID/cgroup.
    pub(crate) fn of_task(
        &mut self,
        procfs: &Procfs,
        t: &Task,
        cgroup_path: Option<&[u8]>,
    ) -> Option<Container> {
        if let Some(path) = cgroup_path {
            // Parsed, not shown: systemd's own `\x2d` escapes must reach
            // the parser as they are, not escaped again.
            let c = from_cgroup_path(&String::from_utf8_lossy(path));
            self.cache.put(t.cgroup_id, c.clone());
            return c;
        }
        if let Some(c) = self.cache.get(&t.cgroup_id) {
            return c.clone();
        }
        let text = std::fs::read_to_string(procfs.path(t.tgid, "cgroup")).ok()?;
        let c = path_from_proc_cgroup(&text).and_then(from_cgroup_path);
        self.cache.put(t.cgroup_id, c.clone());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn c(path: &str) -> Option<(&'static str, String, String)> {
        from_cgroup_path(path).map(|c| (c.runtime, c.id, c.pod_uid))
    }

    #[test]
    fn docker_both_drivers() {
        let want = Some(("docker", ID.to_string(), String::new()));
        assert_eq!(c(&format!("/system.slice/docker-{ID}.scope")), want);
        assert_eq!(c(&format!("/docker/{ID}")), want);
    }

    #[test]
    fn kubernetes_containerd_and_crio() {
        let uid = "1a2b3c4d-0000-1111-2222-333344445555";
        let uid_ = uid.replace('-', "_");
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            )),
            Some(("containerd", ID.to_string(), uid.to_string()))
        );
        assert_eq!(
            c(&format!("/kubepods/besteffort/pod{uid}/{ID}")),
            Some(("containerd", ID.to_string(), uid.to_string()))
        );
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"
            )),
            Some(("crio", ID.to_string(), uid.to_string()))
        );
        assert_eq!(
            c(&format!("/kubepods/pod{uid}/crio-{ID}")),
            Some(("crio", ID.to_string(), uid.to_string()))
        );
        // The pod's own slice is not a container; conmon is not either.
        assert_eq!(c(&format!("/kubepods/besteffort/pod{uid}")), None);
        assert_eq!(c(&format!("/machine.slice/crio-conmon-{ID}.scope")), None);
    }

    #[test]
    fn podman_nspawn_lxc() {
        assert_eq!(
            c(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some(("podman", ID.to_string(), String::new()))
        );
        assert_eq!(
            c(&format!("/libpod_parent/libpod-{ID}")).unwrap().0,
            "podman"
        );
        assert_eq!(
            c("/machine.slice/systemd-nspawn@web\\x2d1.service/payload"),
            Some(("systemd-nspawn", "web-1".into(), String::new()))
        );
        assert_eq!(
            c("/machine.slice/machine-db.scope"),
            Some(("systemd-nspawn", "db".into(), String::new()))
        );
        assert_eq!(c("/lxc.payload.box1").unwrap().1, "box1");
        assert_eq!(
            c("/lxc/box2").unwrap(),
            ("lxc", "box2".into(), String::new())
        );
    }

    #[test]
    fn host_paths_are_not_containers() {
        for p in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/docker",
            "/docker/not-an-id",
        ] {
            assert_eq!(c(p), None, "{p}");
        }
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:pids:/docker/x\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n";
        assert_eq!(path_from_proc_cgroup(v1), Some("/docker/abc"));
        assert_eq!(
            path_from_proc_cgroup("0::/system.slice/ssh.service\n"),
            Some("/system.slice/ssh.service")
        );
        assert_eq!(path_from_proc_cgroup("garbage"), None);
    }
}
