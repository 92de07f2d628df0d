//! Kernel module loading (data_type 603). This host's kernel has modules
//! compiled out: the probe must say it does not apply, not fail. The load
//! itself is proven in a qemu guest (tests/qemu). Needs root.

use crate::support::Agent;

#[test]
fn module_probes_follow_what_the_kernel_supports() {
    let agent = Agent::start(&[]);
    let stderr = agent.stderr();
    for (prog, event) in [
        ("handle_finit_module_exit", "sys_exit_finit_module"),
        ("handle_init_module_exit", "sys_exit_init_module"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("program=\"{prog}\"")))
            .unwrap_or_else(|| panic!("no status line for {prog}:\n{stderr}"));
        let exists = std::path::Path::new("/sys/kernel/tracing/events/syscalls")
            .join(event)
            .exists();
        if exists {
            assert!(line.contains("probe attached"), "{line}");
        } else {
            assert!(line.contains("probe not applicable"), "{line}");
            assert!(
                line.contains(event),
                "the reason names the tracepoint: {line}"
            );
        }
    }
    agent.stop();
}
