//! Kernel tables that must point into core kernel text: the syscall
//! tables, the code that dispatches through them, and the IDT.

use std::ops::Range;

use super::symbols::Symbols;

/// Fixed address of the read-only IDT alias in the cpu_entry_area on
/// x86-64 (CPU_ENTRY_AREA_RO_IDT): usable when `idt_table` is not listed.
pub const CEA_RO_IDT: u64 = 0xfffffe00_00000000;
/// Gates in the IDT.
pub const IDT_ENTRIES: usize = 256;
/// Bytes of one 64-bit gate descriptor.
pub const GATE_SIZE: usize = 16;

/// Trailing zero words: the padding between a syscall table and the next
/// symbol (kallsyms gives no object sizes). A real entry is never zero.
pub fn trim_padding(entries: &mut Vec<u64>) {
    while entries.len() > 1 && entries.last() == Some(&0) {
        entries.pop();
    }
}

/// Indexes of a pointer table whose entries leave core kernel text.
pub fn stray_entries(entries: &[u64], text: &Range<u64>) -> Vec<(usize, u64)> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, a)| !text.contains(a))
        .map(|(i, a)| (i, *a))
        .collect()
}

/// One decoded interrupt gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Vector number.
    pub vector: usize,
    /// Handler address.
    pub handler: u64,
    /// The present bit.
    pub present: bool,
}

/// Decodes 64-bit IDT gate descriptors (Intel SDM vol. 3, 6.14.1).
pub fn decode_idt(raw: &[u8]) -> Vec<Gate> {
    raw.chunks_exact(GATE_SIZE)
        .take(IDT_ENTRIES)
        .enumerate()
        .map(|(vector, g)| {
            let lo = u64::from(u16::from_le_bytes([g[0], g[1]]));
            let mid = u64::from(u16::from_le_bytes([g[6], g[7]]));
            let hi = u64::from(u32::from_le_bytes([g[8], g[9], g[10], g[11]]));
            Gate {
                vector,
                handler: lo | mid << 16 | hi << 32,
                present: g[5] & 0x80 != 0,
            }
        })
        .collect()
}

/// Present gates whose handler is outside the kernel's own text (core
/// text, or init text where early boot handlers of reserved vectors stay).
pub fn stray_gates(gates: &[Gate], text: &Range<u64>, init: Option<&Range<u64>>) -> Vec<Gate> {
    gates
        .iter()
        .filter(|g| {
            g.present && !text.contains(&g.handler) && !init.is_some_and(|i| i.contains(&g.handler))
        })
        .copied()
        .collect()
}

/// Result of checking a syscall dispatch function's code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// Direct call/jmp targets that are the expected syscall functions.
    pub good: usize,
    /// Helpers the compiler calls (return/indirect thunks), not counted.
    pub helpers: usize,
    /// (instruction address, target) of every other outside target.
    pub bad: Vec<(u64, u64)>,
}

/// Compiler-emitted helpers a dispatch function may branch to.
fn is_helper(name: &str) -> bool {
    name.starts_with("__x86_return_thunk")
        || name.starts_with("__x86_indirect_")
        || name.starts_with("__SCT__")
        || name.starts_with("srso_")
        || name.starts_with("its_")
        || name.starts_with("retbleed_")
        || name.starts_with("entry_untrain_ret")
        || name == "__stack_chk_fail"
        || name.starts_with("__ubsan_")
        || name.starts_with("__fentry__")
}

/// Decodes the machine code of `x64_sys_call`/`ia32_sys_call` (loaded at
/// `base`) and checks every direct call/jmp leaving the function: it must
/// land exactly on a symbol named `prefix...` (`__x64_`, `__ia32_`). This
/// catches a patched call into a module ("FlipSwitch") and a call
/// redirected to any other kernel function.
pub fn check_dispatch(code: &[u8], base: u64, prefix: &str, syms: &Symbols) -> Dispatch {
    use iced_x86::{Decoder, DecoderOptions, OpKind};
    let mut out = Dispatch::default();
    let end = base + code.len() as u64;
    let mut dec = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    while dec.can_decode() {
        let insn = dec.decode();
        // Only direct near branches (call, jmp, jcc, loop) have this kind.
        if !matches!(insn.op0_kind(), OpKind::NearBranch64) {
            continue;
        }
        let target = insn.near_branch64();
        if (base..end).contains(&target) {
            continue;
        }
        let at = syms.exact(target);
        if at
            .iter()
            .any(|s| s.module.is_none() && s.name.starts_with(prefix))
        {
            out.good += 1;
        } else if at.iter().any(|s| s.module.is_none() && is_helper(&s.name)) {
            out.helpers += 1;
        } else {
            out.bad.push((insn.ip(), target));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::*;

    #[test]
    fn stray_table_entries_and_their_module() {
        let s = syms();
        let text = core_text(&s).unwrap();
        let table = [0xffffffff81100100, 0xffffffffc0000000, 0xffffffff81100300];
        let stray = stray_entries(&table, &text);
        assert_eq!(stray, [(1, 0xffffffffc0000000)]);
        let mut padded = vec![0xffffffff81100100, 0, 0xffffffff81100100, 0, 0];
        trim_padding(&mut padded);
        assert_eq!(padded.len(), 3, "inner zeros stay and are reported");
        assert_eq!(stray_entries(&padded, &text), [(1, 0)]);
        assert_eq!(s.describe(0), "0x0");

        // Hidden module: known by sysfs ranges only.
        let mut mods = Modules {
            supported: true,
            ..Default::default()
        };
        let rk = mods.entry("rk");
        rk.sysfs = true;
        rk.ranges.push(0xffffffffc0000000..0xffffffffc0002000);
        let o = owner(0xffffffffc0000000, &mods, &s);
        assert_eq!(o.module_name, "rk");
        assert!(o.hidden);

        // Listed module: not hidden.
        mods.entry("rk").listed = true;
        assert!(!owner(0xffffffffc0000000, &mods, &s).hidden);

        // Known only through kallsyms (no ranges): nearest module symbol.
        let o = owner(0xffffffffc0100008, &mods, &s);
        assert_eq!((o.module_name.as_str(), o.hidden), ("ext4", true));

        // Nobody knows the memory.
        let o = owner(0xffffffffd0000000, &Modules::default(), &Symbols::default());
        assert_eq!((o.module_name.as_str(), o.hidden), ("unknown", true));
    }

    fn gate(handler: u64, present: bool) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x10u16.to_le_bytes());
        g[5] = if present { 0x8e } else { 0x0e };
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        g
    }

    #[test]
    fn idt_gates_decode_and_strays_are_found() {
        let s = syms();
        let text = core_text(&s).unwrap();
        let mut raw = Vec::new();
        for v in 0..IDT_ENTRIES {
            let h = match v {
                4 => 0xffffffffc0000100,
                // Not present: never taken, never reported.
                200 => 0xffffffffc0000000,
                _ => 0xffffffff81000a10,
            };
            raw.extend_from_slice(&gate(h, v != 200));
        }
        let gates = decode_idt(&raw);
        assert_eq!(gates.len(), 256);
        assert_eq!(gates[0].handler, 0xffffffff81000a10);
        assert!(gates[0].present && !gates[200].present);
        let stray = stray_gates(&gates, &text, None);
        assert_eq!(stray.len(), 1);
        assert_eq!((stray[0].vector, stray[0].handler), (4, 0xffffffffc0000100));
        // Early handlers left in init text are the kernel's own.
        let init = 0xffffffffc0000000..0xffffffffc0001000;
        assert!(stray_gates(&gates, &text, Some(&init)).is_empty());
    }

    /// Assembles `call rel32` / `jmp rel32` at `at` towards `target`.
    fn rel32(op: u8, at: u64, target: u64) -> [u8; 5] {
        let rel = (target as i64 - (at as i64 + 5)) as i32;
        let mut b = [op, 0, 0, 0, 0];
        b[1..].copy_from_slice(&rel.to_le_bytes());
        b
    }

    #[test]
    fn dispatch_targets_must_be_syscall_functions() {
        let s = syms();
        let base = 0xffffffff81100000u64;
        let mut code = Vec::new();
        // cmp eax, 1 ; je +5 (internal)
        code.extend_from_slice(&[0x83, 0xf8, 0x01, 0x74, 0x05]);
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe8, at, 0xffffffff81100100)); // call __x64_sys_read
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe9, at, 0xffffffff81100200)); // jmp __x64_sys_write
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe9, at, 0xffffffff81100400)); // jmp __x86_return_thunk
        let clean = check_dispatch(&code, base, "__x64_", &s);
        assert_eq!(
            clean,
            Dispatch {
                good: 2,
                helpers: 1,
                bad: vec![]
            }
        );

        // FlipSwitch: the call now goes into a module.
        let mut hooked = code.clone();
        hooked[5..10].copy_from_slice(&rel32(0xe8, base + 5, 0xffffffffc0000000));
        let d = check_dispatch(&hooked, base, "__x64_", &s);
        assert_eq!(d.good, 1);
        assert_eq!(d.bad, [(base + 5, 0xffffffffc0000000)]);

        // Redirected to another core function: also wrong.
        let mut other = code.clone();
        other[5..10].copy_from_slice(&rel32(0xe8, base + 5, 0xffffffff81100500));
        assert_eq!(
            check_dispatch(&other, base, "__x64_", &s).bad,
            [(base + 5, 0xffffffff81100500)]
        );
        // The ia32 prefix does not accept x64 functions.
        assert_eq!(check_dispatch(&code, base, "__ia32_", &s).good, 0);
    }
}
