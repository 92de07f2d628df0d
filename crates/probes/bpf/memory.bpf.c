// SPDX-License-Identifier: GPL-2.0-only
/*
 * Code that does not come from a named file: memfd_create (data_type 356),
 * memory made executable (10), and threads renamed (157).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/paths.h"
#include "lib/syscall.h"

#define PROT_READ 0x1
#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define READ_IMPLIES_EXEC 0x0400000
#define VM_WRITE 0x2
#define MEM_EBUSY 16
#ifndef PF_IO_WORKER
#define PF_IO_WORKER 0x00000010
#endif
#ifndef PF_KTHREAD
#define PF_KTHREAD 0x00200000
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_memfd);
} memfd_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_mprotect);
} mprotect_scratch SEC(".maps");

/* A file's own name (the last component, "memfd:NAME" for a memfd). */
static __always_inline void file_own_name(char *dst, struct file *f)
{
	const unsigned char *name;

	if (typed())
		name = bpf_core_cast(f, struct file)->f_path.dentry->d_name.name;
	else
		name = BPF_CORE_READ(f, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(dst, KESTREL_MEMFD_NAME_LEN, name);
}

/* Code may reach the file's pages other than from the disk: it has no
 * link left (a memfd, a file deleted while open), or it is open for
 * writing or mapped shared and writable somewhere right now (one view
 * written, another executed). A library has none of these. */
static __always_inline bool file_unusual(struct file *f)
{
	struct inode *inode = file_inode(f);

	if (!inode)
		return false;
	if (typed()) {
		struct inode *i = bpf_core_cast(inode, struct inode);

		return i->i_nlink == 0 || i->i_writecount.counter > 0 ||
		       i->i_mapping->i_mmap_writable.counter > 0;
	}
	return BPF_CORE_READ(inode, i_nlink) == 0 || BPF_CORE_READ(inode, i_writecount.counter) > 0 ||
	       BPF_CORE_READ(inode, i_mapping, i_mmap_writable.counter) > 0;
}

/* memfd_create: from its exit, the name read back from the file it made,
 * so what is reported is what the kernel named (not a buffer another
 * thread may rewrite). Rare enough that every call is reported. */
KESTREL_SYSCALL_EXIT(memfd_create)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_memfd *m;
	struct file *f = NULL;
	__u32 zero = 0;

	if (task->tgid == self_tgid)
		return 0;
	m = bpf_map_lookup_elem(&memfd_scratch, &zero);
	if (!m) {
		count(KESTREL_KIND_MEMFD, KESTREL_CTR_ERROR);
		return 0;
	}
	m->hdr.kind = KESTREL_KIND_MEMFD;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&m->task, task, proc_entry(task));
	m->res = ret;
	m->flags = (__u32)regs->si;
	m->name[0] = 0;
	if (ret >= 0)
		f = task_fd(task, ret);
	if (f)
		file_own_name(m->name, f);
	else
		bpf_probe_read_user_str(m->name, sizeof(m->name), (void *)regs->di);
	submit(m, sizeof(*m), KESTREL_KIND_MEMFD);
	return 0;
}

/* bpf_find_vma's callback, under the address space's lock: what the
 * mapping at the address is, into the scratch record. */
static long mprotect_vma(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct kestrel_mprotect *m;
	struct file *f;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&mprotect_scratch, &zero);
	if (!m)
		return 0;
	m->vma |= KESTREL_VMA_FOUND;
	m->vm_start = vma->vm_start;
	m->vm_end = vma->vm_end;
	m->vm_flags = vma->vm_flags;
	if (vma->anon_vma)
		m->vma |= KESTREL_VMA_COW;
	f = vma->vm_file;
	if (f) {
		m->vma |= KESTREL_VMA_FILE;
		struct inode *inode = f->f_inode;

		if (inode && inode->i_nlink == 0)
			m->vma |= KESTREL_VMA_UNLINKED;
		if (inode && (inode->i_writecount.counter > 0 ||
			      inode->i_mapping->i_mmap_writable.counter > 0))
			m->vma |= KESTREL_VMA_WRITABLE;
		bpf_probe_read_kernel_str(m->name, sizeof(m->name), f->f_path.dentry->d_name.name);
		walk_path(&m->path, f->f_path.dentry, f->f_path.mnt, false);
	}
	return 0;
}

/* The scratch record started for a call that asks for executable memory,
 * with the mapping at `addr` looked up (NULL: no scratch, counted). */
static __always_inline struct kestrel_mprotect *mprotect_start(struct task_struct *task, __u64 addr,
							       __u32 vma)
{
	struct kestrel_mprotect *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&mprotect_scratch, &zero);
	if (!m) {
		count(KESTREL_KIND_MPROTECT, KESTREL_CTR_ERROR);
		return NULL;
	}
	m->vma = vma;
	m->vm_start = 0;
	m->vm_end = 0;
	m->vm_flags = 0;
	m->name[0] = 0;
	m->path.len = 0;
	m->path.truncated = 0;
	/* Another thread mapping or unmapping holds the lock: the mapping is
	 * not known, and the call is reported rather than guessed about. */
	if (bpf_find_vma(task, addr, mprotect_vma, NULL, 0) == -MEM_EBUSY)
		m->vma |= KESTREL_VMA_BUSY;
	return m;
}

static __always_inline void mprotect_send(struct kestrel_mprotect *m, struct task_struct *task)
{
	struct mm_struct *mm = task->mm;

	m->hdr.kind = KESTREL_KIND_MPROTECT;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&m->task, task, proc_entry(task));
	m->owner_tgid = task->tgid;
	if (bpf_core_field_exists(mm->owner) && mm && mm->owner)
		m->owner_tgid = mm->owner->tgid;
	submit(m, sizeof(*m), KESTREL_KIND_MPROTECT);
}

/* mprotect and pkey_mprotect, at entry: the mapping's protection before
 * the change is still there to read. Calls that do not ask for execution
 * (ld.so making its relocations read-only, at every process start) leave
 * after one test; of the rest, a named file's pages that were never
 * writable nor written (re-protecting a library's code) are not reported.
 * Reported: anonymous memory, W+X, a mapping that was writable or has
 * written private pages, a file without a name (memfd, deleted) or open
 * for writing or mapped writable elsewhere, a range
 * running past the first mapping, or a mapping that could not be looked at. */
static __always_inline int mprotect_enter(struct pt_regs *r, __u32 sys, int pkey)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 addr = r->di, len = r->si;
	__u32 prot = r->dx, rie = 0;
	struct kestrel_mprotect *m;

	if (!(prot & PROT_EXEC)) {
		/* The kernel adds PROT_EXEC to PROT_READ for such a process. */
		if (!(prot & PROT_READ) || !(task->personality & READ_IMPLIES_EXEC))
			return 0;
		rie = KESTREL_VMA_READ_IMPLIES_EXEC;
	}
	if (task->tgid == self_tgid)
		return 0;
	m = mprotect_start(task, addr, rie);
	if (!m)
		return 0;
	if ((m->vma & (KESTREL_VMA_FOUND | KESTREL_VMA_FILE | KESTREL_VMA_COW |
		       KESTREL_VMA_UNLINKED | KESTREL_VMA_WRITABLE | KESTREL_VMA_BUSY)) ==
		    (KESTREL_VMA_FOUND | KESTREL_VMA_FILE) &&
	    !(prot & PROT_WRITE) && !(m->vm_flags & VM_WRITE) && addr + len <= m->vm_end)
		return 0;
	m->addr = addr;
	m->len = len;
	m->res = 0;
	m->prot = prot;
	m->map_flags = 0;
	m->fd = -1;
	m->pkey = pkey;
	m->syscall = sys;
	mprotect_send(m, task);
	return 0;
}

KESTREL_SYSCALL_ENTER(mprotect)
{
	return mprotect_enter(syscall_regs(), KESTREL_MEM_MPROTECT, -1);
}

KESTREL_SYSCALL_ENTER(pkey_mprotect)
{
	struct pt_regs *r = syscall_regs();

	return mprotect_enter(r, KESTREL_MEM_PKEY_MPROTECT, (int)r->r10);
}

/* mmap, at its exit (the address it chose), arguments from the saved
 * registers (the fourth in r10). Every process start maps its libraries
 * executable: a named file nobody writes, mapped without PROT_WRITE,
 * leaves after the descriptor's inode is looked at. */
KESTREL_SYSCALL_EXIT(mmap)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u32 prot = regs->dx, flags = regs->r10, rie = 0;
	int fd = regs->r8;
	struct kestrel_mprotect *m;

	if (!(prot & PROT_EXEC)) {
		if (!(prot & PROT_READ) || !(task->personality & READ_IMPLIES_EXEC))
			return 0;
		rie = KESTREL_VMA_READ_IMPLIES_EXEC;
	}
	if (!(flags & MAP_ANONYMOUS) && !(prot & PROT_WRITE)) {
		struct file *f = task_fd(task, fd);

		/* No file: a bad descriptor, nothing was mapped. */
		if (!f || !file_unusual(f))
			return 0;
	}
	if (task->tgid == self_tgid)
		return 0;
	m = mprotect_start(task, ret, rie);
	if (!m)
		return 0;
	if (ret < 0 && ret > -4096) {
		/* Failed: nothing is mapped at an address to look at. */
		m->vma &= ~(KESTREL_VMA_FOUND | KESTREL_VMA_FILE | KESTREL_VMA_COW |
			    KESTREL_VMA_UNLINKED);
		m->vm_start = 0;
		m->vm_end = 0;
		m->vm_flags = 0;
		m->name[0] = 0;
		m->path.len = 0;
	}
	m->addr = ret;
	m->len = regs->si;
	m->res = ret;
	m->prot = prot;
	m->map_flags = flags;
	m->fd = fd;
	m->pkey = -1;
	m->syscall = KESTREL_MEM_MMAP;
	mprotect_send(m, task);
	return 0;
}

/* Syscalls in which the kernel renames a thread itself: exec (x86-64,
 * x32 and ia32 numbers: execve 59/520/11, execveat 322/545/358; 11 and
 * 358 are no renaming call in 64-bit mode), and 0, the registers of a
 * thread that never entered one (a user-mode helper's exec). */
static __always_inline bool rename_by_exec(__u64 nr)
{
	nr &= ~0x40000000ull; /* __X32_SYSCALL_BIT */
	return nr == 59 || nr == 322 || nr == 520 || nr == 545 || nr == 11 || nr == 358 || nr == 0;
}

/* A thread's name changed: prctl(PR_SET_NAME), a write to
 * /proc/PID/task/TID/comm or /proc/PID/comm (by its own process: the
 * kernel refuses others), pthread_setname_np (either of those). Fires in
 * the renaming thread, before the new name is copied: task->comm is
 * still the old one. Not reported: the renaming every exec does, and
 * kernel threads and io_uring workers naming themselves. */
SEC("tp_btf/task_rename")
int BPF_PROG(handle_task_rename, struct task_struct *task, const char *comm)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct pt_regs *regs;
	struct kestrel_prctl e = {};
	__u64 nr;

	if (cur->flags & PF_KTHREAD)
		return 0;
	if ((cur->flags & PF_IO_WORKER) && cur == task)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(cur);
	nr = regs->orig_ax;
	if (rename_by_exec(nr) || cur->tgid == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_PRCTL;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task, proc_entry(task));
	e.syscall = nr;
	if (nr == 157)
		e.option = regs->di;
	e.renamer = cur->pid;
	bpf_probe_read_kernel_str(e.new_name, sizeof(e.new_name), comm);
	submit(&e, sizeof(e), KESTREL_KIND_PRCTL);
	return 0;
}
