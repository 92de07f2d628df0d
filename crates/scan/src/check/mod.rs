//! The anti-rootkit decisions, as pure functions over tables read from the
//! kernel and symbol maps read from /proc/kallsyms. Nothing here touches
//! the running kernel, so every rule is unit tested with synthetic input.
//!
//! By topic: [`symbols`] (kallsyms and the kernel's text), [`modules`] (the
//! views of loaded modules and who owns an address), [`tables`] (syscall
//! tables, dispatch code and the IDT), [`hooks`] (ftrace and kprobes).

pub mod hooks;
pub mod modules;
pub mod symbols;
pub mod tables;

pub use hooks::*;
pub use modules::*;
pub use symbols::*;
pub use tables::*;

#[cfg(test)]
pub(crate) const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000a10 T asm_exc_divide_error
ffffffff81000b00 T asm_exc_overflow
ffffffff81100000 T x64_sys_call
ffffffff81100100 T __x64_sys_read
ffffffff81100200 T __x64_sys_write
ffffffff81100300 T __x64_sys_ni_syscall
ffffffff81100400 T __x86_return_thunk
ffffffff81100500 T printk
ffffffff82000000 T _etext
ffffffff82100000 D sys_call_table
ffffffff82101000 D other_data
ffffffffc0000000 t rk_hook\t[rk]
ffffffffc0000100 t rk_other\t[rk]
ffffffffc0100000 t ext4_thing\t[ext4]
ffffffffc0200000 t bpf_prog_6deef7357e7b4530_x\t[bpf]
ffffffffc0300000 t ftrace_trampoline\t[__builtin__ftrace]
";

#[cfg(test)]
pub(crate) fn syms() -> Symbols {
    Symbols::parse(KALLSYMS)
}
