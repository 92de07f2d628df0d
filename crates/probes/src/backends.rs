//! Which backend each syscall hook gets: fentry/fexit where the kernel
//! allows BPF trampolines, kprobes where it has only those, the syscall
//! tracepoint otherwise (see bpf/lib/syscall.h and docs/performance.md,
//! "Hook backends").
//!
//! What the kernel allows is found out before the object is loaded, so
//! that one refused program does not take the others down with it: a test
//! fexit is loaded and attached on getppid's function, the kprobe PMU (or
//! tracefs' kprobe_events) is looked for, and each hook's function is
//! looked up in the kernel's BTF (fentry) and in kallsyms (kprobes). A hook
//! the kernel still refuses at load or attach time is moved to the next
//! backend by the loader, and says why.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::Path;

use kestrel_abi::{Backend, Program};

use crate::{KERNEL_BTF, TRACEFS};

/// `--hook-backend`: what the syscall hooks may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookBackend {
    /// The cheapest this kernel allows, hook by hook.
    #[default]
    Auto,
    /// This one for every syscall hook, or the agent does not start.
    Only(Backend),
}

impl HookBackend {
    /// Parses `auto`, `fentry`, `kprobe` or `tracepoint`.
    pub fn parse(s: &str) -> Option<HookBackend> {
        match s {
            "auto" => Some(HookBackend::Auto),
            _ => Backend::ALL
                .into_iter()
                .find(|b| b.as_str() == s)
                .map(HookBackend::Only),
        }
    }
}

impl std::fmt::Display for HookBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookBackend::Auto => f.write_str("auto"),
            HookBackend::Only(b) => f.write_str(b.as_str()),
        }
    }
}

/// What this kernel allows, found out once per load.
pub(crate) struct Kernel {
    /// Ok, or why BPF trampolines cannot be used at all.
    fentry: Result<(), String>,
    /// Ok, or why kprobes cannot be used at all.
    kprobe: Result<(), String>,
    /// Functions the kernel's BTF has (for fentry), of those asked for.
    btf_functions: HashSet<String>,
    /// Text symbols of kallsyms (for kprobes), of those asked for.
    kallsyms: HashSet<String>,
}

impl Kernel {
    /// Looks at the running kernel for the functions `programs` would use.
    pub(crate) fn probe<'a>(programs: impl Iterator<Item = &'a Program>) -> Kernel {
        let wanted: HashSet<&str> = programs
            .flat_map(|p| p.alternatives.iter().map(|a| a.function))
            .collect();
        let btf = KernelBtf::open();
        let btf_functions = match &btf {
            Ok(b) => wanted
                .iter()
                .filter(|f| b.has_function(f))
                .map(|f| f.to_string())
                .collect(),
            Err(_) => HashSet::new(),
        };
        let fentry = match &btf {
            Ok(b) => test_fexit(b, &btf_functions),
            Err(e) => Err(e.clone()),
        };
        let kprobe = kprobes_present();
        let kallsyms = if kprobe.is_ok() {
            text_symbols(&wanted)
        } else {
            HashSet::new()
        };
        Kernel {
            fentry,
            kprobe,
            btf_functions,
            kallsyms,
        }
    }

    /// Whether `backend` can carry `function`, or why not.
    pub(crate) fn allows(&self, backend: Backend, function: &str) -> Result<(), String> {
        match backend {
            Backend::Tracepoint => Ok(()),
            Backend::Fentry => {
                self.fentry.clone()?;
                if self.btf_functions.contains(function) {
                    Ok(())
                } else {
                    Err(format!("fentry: {function} is not in the kernel's BTF"))
                }
            }
            Backend::Kprobe => {
                self.kprobe.clone()?;
                if self.kallsyms.contains(function) {
                    Ok(())
                } else {
                    Err(format!("kprobe: {function} is not in /proc/kallsyms"))
                }
            }
        }
    }

    /// One line on what the kernel allows, for the start-up log.
    pub(crate) fn summary(&self) -> String {
        let say = |b: &Result<(), String>, name: &str| match b {
            Ok(()) => format!("{name}: allowed"),
            Err(e) => e.clone(),
        };
        format!(
            "{}; {}",
            say(&self.fentry, "fentry"),
            say(&self.kprobe, "kprobe")
        )
    }
}

/// The backend `want` gives `p` on this kernel, and why; an error when
/// `want` names one backend this hook cannot have.
pub(crate) fn choose(
    p: &Program,
    want: HookBackend,
    kernel: &Kernel,
    refused: &[(Backend, String)],
) -> Result<(Backend, String), String> {
    let has = |b: Backend| -> Result<(), String> {
        let Some((_, _, function)) = p.on(b) else {
            return Err(format!("{b}: {} has no {b} twin", p.name));
        };
        if let Some((_, why)) = refused.iter().find(|(r, _)| *r == b) {
            return Err(why.clone());
        }
        kernel.allows(b, function)
    };
    match want {
        HookBackend::Only(Backend::Tracepoint) => {
            Ok((Backend::Tracepoint, "--hook-backend tracepoint".into()))
        }
        HookBackend::Only(b) => match has(b) {
            Ok(()) => Ok((b, format!("--hook-backend {b}"))),
            Err(e) => Err(e),
        },
        HookBackend::Auto => {
            let mut why = Vec::new();
            for b in [Backend::Fentry, Backend::Kprobe] {
                match has(b) {
                    Ok(()) if why.is_empty() => {
                        return Ok((b, format!("{b}: the cheapest allowed")))
                    }
                    Ok(()) => return Ok((b, why.join("; "))),
                    Err(e) => why.push(e),
                }
            }
            Ok((Backend::Tracepoint, why.join("; ")))
        }
    }
}

/// The kernel's own BTF, for looking functions up.
struct KernelBtf(*mut libbpf_sys::btf);

impl KernelBtf {
    fn open() -> Result<KernelBtf, String> {
        let path = CString::new(KERNEL_BTF).unwrap();
        // SAFETY: a valid path; a null btf_ext asks for none.
        let btf = unsafe { libbpf_sys::btf__parse(path.as_ptr(), std::ptr::null_mut()) };
        // libbpf returns NULL and sets errno on failure.
        if btf.is_null() {
            return Err(format!(
                "fentry: the kernel publishes no BTF at {KERNEL_BTF} ({})",
                errno_text(std::io::Error::last_os_error())
            ));
        }
        Ok(KernelBtf(btf))
    }

    /// The BTF id of function `name`, if the kernel has one.
    fn function_id(&self, name: &str) -> Option<u32> {
        let n = CString::new(name).ok()?;
        // SAFETY: self.0 is a live btf; n is NUL-terminated.
        let id = unsafe {
            libbpf_sys::btf__find_by_name_kind(self.0, n.as_ptr(), libbpf_sys::BTF_KIND_FUNC)
        };
        (id > 0).then_some(id as u32)
    }

    fn has_function(&self, name: &str) -> bool {
        self.function_id(name).is_some()
    }
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        // SAFETY: made by btf__parse, freed once.
        unsafe { libbpf_sys::btf__free(self.0) }
    }
}

/// Loads `r0 = 0; exit` as an fexit on one of the hooks' functions that
/// the kernel's BTF has, attaches it, then lets both go: what the kernel
/// says is what it would say to the agent's own fentry programs (EPERM
/// where lockdown or a security module refuses trampolines, ENOTSUPP where
/// the kernel was built without them). The trampoline is up for a few
/// microseconds and does nothing.
fn test_fexit(btf: &KernelBtf, functions: &HashSet<String>) -> Result<(), String> {
    // Not every kernel's BTF has every syscall's function (6.18's has no
    // __x64_sys_getppid): any of ours will do.
    let mut names: Vec<&String> = functions.iter().collect();
    names.sort();
    let Some((test_function, id)) = names
        .into_iter()
        .find_map(|f| btf.function_id(f).map(|id| (f.as_str(), id)))
    else {
        return Err("fentry: the kernel's BTF has none of the syscall functions".into());
    };
    // BPF_ALU64 | BPF_MOV | BPF_K to r0, imm 0; then BPF_JMP | BPF_EXIT.
    let insns: [u64; 2] = [0xb7, 0x95];
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: size_of::<libbpf_sys::bpf_prog_load_opts>() as libbpf_sys::size_t,
        expected_attach_type: libbpf_sys::BPF_TRACE_FEXIT,
        attach_btf_id: id,
        ..Default::default()
    };
    let name = CString::new("kestrel_fx_test").unwrap();
    let license = CString::new("GPL").unwrap();
    // SAFETY: insns holds two valid instructions, as bpf_insn's layout
    // (code, regs, off, imm) packs them in a little-endian u64; the
    // strings and opts outlive the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as libbpf_sys::size_t,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(format!(
            "fentry refused: {} (loading a test fexit on {test_function})",
            errno_text(std::io::Error::from_raw_os_error(-fd))
        ));
    }
    // SAFETY: fd is the program just loaded; a null name is what a
    // tracing program's attach takes.
    let link = unsafe { libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), fd) };
    let result = if link < 0 {
        Err(format!(
            "fentry refused: {} (attaching a test fexit on {test_function})",
            errno_text(std::io::Error::from_raw_os_error(-link))
        ))
    } else {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(link) };
        Ok(())
    };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    result
}

/// Whether this kernel has kprobes, as libbpf attaches them: the kprobe
/// PMU, or the legacy tracefs interface.
fn kprobes_present() -> Result<(), String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    let legacy = Path::new(TRACEFS).join("kprobe_events");
    if pmu.exists() || legacy.exists() {
        Ok(())
    } else {
        Err(format!(
            "kprobe: this kernel has no kprobes (no {} nor {}: built without CONFIG_KPROBES)",
            pmu.display(),
            legacy.display()
        ))
    }
}

/// Which of `wanted` are text symbols of the kernel (kallsyms' t/T).
fn text_symbols(wanted: &HashSet<&str>) -> HashSet<String> {
    let syms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    syms.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            // Module symbols carry "[module]" after the name: not ours.
            (matches!(kind, "t" | "T") && f.next().is_none() && wanted.contains(name))
                .then(|| name.to_string())
        })
        .collect()
}

/// "EPERM (Operation not permitted)": the name operators search for, and
/// the text.
pub(crate) fn errno_text(e: std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::EFAULT) => "EFAULT",
        // The kernel's own ENOTSUPP, which has no libc name.
        Some(524) => return "ENOTSUPP (operation not supported by this kernel)".into(),
        _ => return e.to_string(),
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({text})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_abi::kinds;

    fn kernel(fentry: bool, kprobe: bool) -> Kernel {
        let all: HashSet<String> = kinds::programs()
            .flat_map(|p| p.alternatives.iter().map(|a| a.function.to_string()))
            .collect();
        Kernel {
            fentry: if fentry {
                Ok(())
            } else {
                Err("fentry refused: EPERM".into())
            },
            kprobe: if kprobe {
                Ok(())
            } else {
                Err("kprobe: none".into())
            },
            btf_functions: all.clone(),
            kallsyms: all,
        }
    }

    fn prog(name: &str) -> &'static Program {
        kinds::programs().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn auto_takes_the_cheapest_and_says_why_not_the_others() {
        let openat = prog("handle_openat_exit");
        let (b, why) = choose(openat, HookBackend::Auto, &kernel(true, true), &[]).unwrap();
        assert_eq!(b, Backend::Fentry, "{why}");
        let (b, why) = choose(openat, HookBackend::Auto, &kernel(false, true), &[]).unwrap();
        assert_eq!(
            (b, why.as_str()),
            (Backend::Kprobe, "fentry refused: EPERM")
        );
        let (b, why) = choose(openat, HookBackend::Auto, &kernel(false, false), &[]).unwrap();
        assert_eq!(b, Backend::Tracepoint);
        assert_eq!(why, "fentry refused: EPERM; kprobe: none");
        // A hook the kernel refused at load moves on.
        let refused = [(
            Backend::Fentry,
            "fentry refused at load: EINVAL".to_string(),
        )];
        let (b, why) = choose(openat, HookBackend::Auto, &kernel(true, true), &refused).unwrap();
        assert_eq!(
            (b, why.as_str()),
            (Backend::Kprobe, "fentry refused at load: EINVAL")
        );
    }

    #[test]
    fn a_missing_function_is_that_hook_s_alone() {
        let mut k = kernel(true, true);
        k.btf_functions.remove("__x64_sys_fchmodat2");
        let (b, why) = choose(prog("handle_fchmodat2_exit"), HookBackend::Auto, &k, &[]).unwrap();
        assert_eq!(b, Backend::Kprobe);
        assert!(
            why.contains("__x64_sys_fchmodat2 is not in the kernel's BTF"),
            "{why}"
        );
        let (b, _) = choose(prog("handle_openat_exit"), HookBackend::Auto, &k, &[]).unwrap();
        assert_eq!(b, Backend::Fentry);
    }

    #[test]
    fn a_named_backend_is_that_one_or_an_error() {
        let openat = prog("handle_openat_exit");
        let only = HookBackend::Only(Backend::Fentry);
        assert_eq!(
            choose(openat, only, &kernel(false, true), &[]).unwrap_err(),
            "fentry refused: EPERM"
        );
        let (b, _) = choose(
            openat,
            HookBackend::Only(Backend::Tracepoint),
            &kernel(true, true),
            &[],
        )
        .unwrap();
        assert_eq!(b, Backend::Tracepoint);
        let (b, _) = choose(
            openat,
            HookBackend::Only(Backend::Kprobe),
            &kernel(true, true),
            &[],
        )
        .unwrap();
        assert_eq!(b, Backend::Kprobe);
    }

    #[test]
    fn parses_its_values() {
        assert_eq!(HookBackend::parse("auto"), Some(HookBackend::Auto));
        assert_eq!(
            HookBackend::parse("fentry"),
            Some(HookBackend::Only(Backend::Fentry))
        );
        assert_eq!(
            HookBackend::parse("kprobe"),
            Some(HookBackend::Only(Backend::Kprobe))
        );
        assert_eq!(
            HookBackend::parse("tracepoint"),
            Some(HookBackend::Only(Backend::Tracepoint))
        );
        assert_eq!(HookBackend::parse("fexit"), None);
    }

    #[test]
    fn errno_names() {
        let e = errno_text(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e, "EPERM (Operation not permitted)");
        assert!(errno_text(std::io::Error::from_raw_os_error(524)).starts_with("ENOTSUPP"));
    }
}
