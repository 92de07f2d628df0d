//! Opening, checking, loading and attaching the BPF object.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{OpenObject, PrintLevel};

use kestrel_abi::Backend;

use crate::backends::{self, HookBackend, Kernel};
use crate::skel::KestrelSkelBuilder;
use crate::{
    fmt_log, kinds, ProbeConfig, ProbeError, ProbeReport, ProbeState, Probes, KERNEL_BTF, TRACEFS,
};

static LIBBPF_LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const LOG_LINES: usize = 60;

fn libbpf_print(level: PrintLevel, msg: String) {
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    for line in msg.lines() {
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line.to_string());
    }
}

pub(crate) fn take_log() -> String {
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let s = log.iter().cloned().collect::<Vec<_>>().join("\n");
    log.clear();
    s
}

/// Finds the program libbpf complained about ("prog 'handle_exec': ...").
fn refused_program(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let start = l.find("prog '")? + 6;
        let len = l[start..].find('\'')?;
        Some(l[start..start + len].to_string())
    })
}

/// Checks what must hold before anything is loaded.
pub fn preflight(cfg: &ProbeConfig) -> Result<(), ProbeError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(ProbeError::NotRoot(euid));
    }
    let btf = cfg.btf.clone().unwrap_or_else(|| PathBuf::from(KERNEL_BTF));
    if !btf.is_file() {
        return Err(ProbeError::NoBtf(btf));
    }
    Ok(())
}

/// Mounts tracefs if this machine has not: syscall tracepoints are found
/// through it.
pub fn ensure_tracefs() -> Result<(), ProbeError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let src = CString::new("nodev").unwrap();
    let target = CString::new(TRACEFS).unwrap();
    let fstype = CString::new("tracefs").unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(())
}

/// Checks that the object holds exactly the table's programs, each in the
/// section the table names, as the build did: the object is what this
/// binary embeds, the table what it iterates.
fn check_object(obj: &OpenObject) -> Result<(), ProbeError> {
    kinds::check_object_programs(obj.progs().map(|p| {
        (
            p.name().to_string_lossy().into_owned(),
            p.section().to_string_lossy().into_owned(),
        )
    }))
    .map_err(ProbeError::Table)
}

/// What one attempt at loading came to, when it failed.
enum Attempt {
    /// The kernel refused one program on a backend that is not its last:
    /// the loader tries that hook on the next one.
    Refused {
        program: &'static str,
        backend: Backend,
        reason: String,
    },
    Fatal(ProbeError),
}

impl From<ProbeError> for Attempt {
    fn from(e: ProbeError) -> Attempt {
        Attempt::Fatal(e)
    }
}

impl Probes {
    /// Loads and attaches every program, each syscall hook on the backend
    /// `cfg.hook_backend` and this kernel give it.
    pub fn load(cfg: &ProbeConfig) -> Result<Self, ProbeError> {
        preflight(cfg)?;
        ensure_tracefs()?;
        libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
        take_log();

        let kernel = Kernel::probe(kinds::programs());
        let mut refused: HashMap<&'static str, Vec<(Backend, String)>> = HashMap::new();
        loop {
            let report = plan(cfg, &kernel, &refused)?;
            match attempt(cfg, report) {
                Ok(mut probes) => {
                    probes.kernel_summary = kernel.summary();
                    return Ok(probes);
                }
                // Each refusal moves one hook one backend on, so this ends.
                Err(Attempt::Refused {
                    program,
                    backend,
                    reason,
                }) => {
                    tracing::warn!(program, backend = %backend, reason = %reason,
                        "the kernel refused this hook's program: trying the next backend");
                    refused.entry(program).or_default().push((
                        backend,
                        format!("{backend} refused for this hook: {reason}"),
                    ));
                }
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
    }
}

/// What each program will be: its backend and hook, or why it is left out.
fn plan(
    cfg: &ProbeConfig,
    kernel: &Kernel,
    refused: &HashMap<&'static str, Vec<(Backend, String)>>,
) -> Result<Vec<ProbeReport>, ProbeError> {
    let mut report = Vec::new();
    for p in kinds::programs() {
        // A program whose tracepoint this kernel lacks watches something
        // that cannot happen here (module loading on a kernel without
        // modules): leave it out and say so, rather than fail. Lean mode
        // leaves out every syscall hook, whatever its backend: its file
        // creations and connects come from elsewhere.
        let left_out = match &p.requires {
            _ if !cfg.syscall_tracepoints && p.is_syscall_tracepoint() => Some(ProbeState::Off(
                "--syscall-tracepoints off: a syscall tracepoint slows every syscall of the host"
                    .into(),
            )),
            Some(r)
                if !Path::new(TRACEFS)
                    .join("events")
                    .join(r.tracefs_event)
                    .exists() =>
            {
                Some(ProbeState::NotApplicable(format!(
                    "this kernel has no tracepoint {} ({})",
                    r.tracefs_event, r.without
                )))
            }
            _ => None,
        };
        if let Some(state) = left_out {
            report.push(ProbeReport {
                program: p.name,
                attached_as: p.name,
                target: p.hook,
                backend: "none",
                why: String::new(),
                state,
            });
            continue;
        }
        if !p.is_syscall_tracepoint() {
            report.push(ProbeReport {
                program: p.name,
                attached_as: p.name,
                target: p.hook,
                backend: p.hook.split('/').next().unwrap_or(p.hook),
                why: "not a syscall hook: one way to attach it".into(),
                state: ProbeState::Attached,
            });
            continue;
        }
        let no_refusals = Vec::new();
        let refusals = refused.get(p.name).unwrap_or(&no_refusals);
        let (backend, why) =
            backends::choose(p, cfg.hook_backend, kernel, refusals).map_err(|reason| {
                ProbeError::Backend {
                    program: p.name.to_string(),
                    backend: cfg.hook_backend.to_string(),
                    reason,
                }
            })?;
        let (name, hook, _) = p
            .on(backend)
            .expect("choose picks a backend the program has");
        report.push(ProbeReport {
            program: p.name,
            attached_as: name,
            target: hook,
            backend: backend.as_str(),
            why,
            state: ProbeState::Attached,
        });
    }
    Ok(report)
}

/// The table program and backend of an object program's name.
fn of_object_name(name: &str) -> Option<(&'static str, Backend)> {
    kinds::programs().find_map(|p| {
        Backend::ALL
            .into_iter()
            .find(|b| p.on(*b).is_some_and(|(n, _, _)| n == name))
            .map(|b| (p.name, b))
    })
}

/// Opens, loads and attaches the object with the programs `report` names.
fn attempt(cfg: &ProbeConfig, report: Vec<ProbeReport>) -> Result<Probes, Attempt> {
    // The skeleton borrows its object storage for as long as it lives;
    // the agent loads once per process (a refused hook makes one more),
    // so the storage is leaked.
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let builder = KestrelSkelBuilder::default();
    let btf_path = cfg
        .btf
        .as_ref()
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).expect("path has no NUL"));
    let open = match &btf_path {
        Some(p) => {
            let opts = libbpf_sys::bpf_object_open_opts {
                sz: size_of::<libbpf_sys::bpf_object_open_opts>() as libbpf_sys::size_t,
                btf_custom_path: p.as_ptr(),
                ..Default::default()
            };
            builder.open_opts(opts, storage)
        }
        None => builder.open(storage),
    };
    let mut open = open.map_err(|source| ProbeError::Libbpf {
        what: "opening the BPF object failed",
        source,
        log: take_log(),
    })?;
    check_object(open.open_object())?;

    open.maps
        .events
        .set_max_entries(cfg.ring_buffer_bytes)
        .map_err(|source| ProbeError::Libbpf {
            what: "sizing the ring buffer failed",
            source,
            log: take_log(),
        })?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the BPF object has read-only settings");
    rodata.self_tgid = std::process::id();
    // File exclusions name directories as this namespace sees them.
    rodata.self_mnt_ns = std::fs::metadata("/proc/self/ns/mnt")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
        .unwrap_or(0);
    rodata.wakeup_bytes = cfg.wakeup_bytes;
    rodata.exit_events = cfg.exit_events;
    // Lean mode sees TCP connects and listeners at their state
    // changes instead.
    rodata.lean_sockets = !cfg.syscall_tracepoints;

    // Only the planned twin of each hook is loaded: the others stay in the
    // object, unverified.
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        let load = report
            .iter()
            .any(|r| r.state == ProbeState::Attached && r.attached_as == name);
        if !load {
            prog.set_autoload(false);
        }
    }

    let skel = match open.load() {
        Ok(s) => s,
        Err(e) => {
            let log = take_log();
            let program = refused_program(&log);
            if let Some((table, backend)) = program.as_deref().and_then(of_object_name) {
                if backend != Backend::Tracepoint && cfg.hook_backend == HookBackend::Auto {
                    return Err(Attempt::Refused {
                        program: table,
                        backend,
                        reason: format!("{e}{}", last_line(&log)),
                    });
                }
            }
            return Err(ProbeError::Load {
                program: program.unwrap_or_else(|| "(unknown)".into()),
                reason: e.to_string(),
                log,
            }
            .into());
        }
    };

    let mut links = Vec::new();
    for r in &report {
        if r.state != ProbeState::Attached {
            continue;
        }
        let attach_err = |reason: String| ProbeError::Attach {
            program: r.attached_as.to_string(),
            target: r.target.to_string(),
            reason,
        };
        // check_object saw every program of the table in the object.
        let prog = skel
            .object()
            .progs_mut()
            .find(|p| p.name() == r.attached_as)
            .ok_or_else(|| attach_err("not in the BPF object".into()))?;
        let link = match prog.attach() {
            Ok(l) => l,
            Err(e) => {
                let reason = format!("{e}{}", fmt_log(&take_log()));
                if r.backend != Backend::Tracepoint.as_str()
                    && cfg.hook_backend == HookBackend::Auto
                {
                    if let Some((table, backend)) = of_object_name(r.attached_as) {
                        return Err(Attempt::Refused {
                            program: table,
                            backend,
                            reason: format!("attach: {e}"),
                        });
                    }
                }
                return Err(attach_err(reason).into());
            }
        };
        tracing::debug!(program = r.attached_as, target = r.target, "attached");
        links.push(link);
    }
    Ok(Probes {
        skel,
        links,
        report,
        kernel_summary: String::new(),
    })
}

/// The last thing libbpf said, for a one-line reason.
fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(" ({})", l.trim()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_refused_program() {
        let log = "libbpf: prog 'handle_exec': BPF program load failed: Permission denied\n\
                   libbpf: prog 'handle_exec': -- BEGIN PROG LOAD LOG --";
        assert_eq!(refused_program(log).as_deref(), Some("handle_exec"));
        assert_eq!(refused_program("nothing here"), None);
    }

    /// Opening parses the object without loading anything: no root needed.
    #[test]
    fn the_object_holds_the_table_s_programs() {
        let mut storage = MaybeUninit::uninit();
        let open = KestrelSkelBuilder::default()
            .open(&mut storage)
            .expect("the BPF object opens");
        check_object(open.open_object()).unwrap_or_else(|e| panic!("{e}"));
    }
}
