/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The parts of an exec record: ancestry, terminal, stdin/stdout, working
 * directory and cgroup path.
 */
#ifndef KESTREL_LIB_EXEC_H
#define KESTREL_LIB_EXEC_H

#include "ringbuf.h"
#include "task.h"
#include "files.h"
#include "sockets.h"
#include "exe.h"

/* Where each part of the data area can start at the latest: filename |
 * exe | cwd | cgroup | argv | env. The bound tests give the verifier its
 * bounds. */
#define OFF_EXE KESTREL_FILENAME_MAX
#define OFF_CWD (OFF_EXE + KESTREL_EXE_MAX)
#define OFF_CGROUP (OFF_CWD + KESTREL_CWD_MAX)
#define OFF_ARGV (OFF_CGROUP + KESTREL_CGROUP_MAX)
#define OFF_ENV (OFF_ARGV + KESTREL_ARGV_MAX)

/* Records are assembled here, then copied into the ring buffer at their
 * real size: exec records are large and mostly empty. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_exec);
} exec_scratch SEC(".maps");

static __always_inline struct kestrel_exec *exec_record(void)
{
	__u32 zero = 0;
	struct kestrel_exec *e = bpf_map_lookup_elem(&exec_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_EXEC, KESTREL_CTR_ERROR);
		return NULL;
	}
	e->hdr.kind = KESTREL_KIND_EXEC;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	e->flags = 0;
	e->argc = 0;
	e->filename_len = 0;
	e->cwd_len = 0;
	e->cgroup_len = 0;
	e->argv_len = 0;
	e->env_len = 0;
	e->exe_len = 0;
	e->reserved2 = 0;
	e->socket_pid = 0;
	e->socket.family = 0;
	e->tty[0] = 0;
	e->socket_comm[0] = 0;
	return e;
}

/* The inet socket on stdin or stdout of an ancestor that the process table
 * says holds one. Rare, so read with helpers: `t` is a plain address here,
 * which keeps the ancestor loop's states few for the verifier. */
static __always_inline void ancestor_socket(struct kestrel_exec *e, struct task_struct *t)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct task_struct *leader;
	struct file *f[2] = {};
	struct sock *sk;

	if (!fdt || BPF_CORE_READ(fdt, max_fds) < 2 ||
	    bpf_probe_read_kernel(f, sizeof(f), BPF_CORE_READ(fdt, fd)))
		return;
	sk = file_sock(f[0]);
	if (!sk || !read_sock_addrs(sk, &e->socket)) {
		sk = file_sock(f[1]);
		if (!sk || !read_sock_addrs(sk, &e->socket)) {
			e->socket.family = 0;
			return;
		}
	}
	leader = BPF_CORE_READ(t, group_leader);
	e->socket_pid = BPF_CORE_READ(t, tgid);
	e->socket_start_boottime = BPF_CORE_READ(leader, start_boottime);
	BPF_CORE_READ_STR_INTO(&e->socket_comm, leader, comm);
}

/* task_struct.flags bits (include/linux/sched.h), stable since 2.6. */
#define KESTREL_PF_WQ_WORKER 0x00000020
#define KESTREL_PF_KTHREAD 0x00200000

/* The real parent's start time (user space keys its process cache by it)
 * and whether it is a kernel thread: a user-mode helper's exec is the only
 * exec whose parent is one (kthreadd, or the kworker that waits for it). */
static __always_inline void fill_parent(struct kestrel_exec *e, struct task_struct *task)
{
	struct task_struct *parent = task->real_parent;
	__u32 pf = parent->flags, flags = 0;

	e->parent_start_boottime = parent->group_leader->start_boottime;
	if (pf & KESTREL_PF_KTHREAD)
		flags |= KESTREL_PARENT_KTHREAD;
	if (pf & KESTREL_PF_WQ_WORKER)
		flags |= KESTREL_PARENT_WQ_WORKER;
	e->parent_flags = flags;
}

/* The process tree above `task`, with plain loads. */
static __always_inline void fill_ancestry(struct kestrel_exec *e, struct task_struct *task)
{
	bool truncated = false;

	e->ancestors_len = walk_ancestry(e->ancestors, task, &truncated);
	if (truncated)
		e->flags |= KESTREL_EXEC_PID_TREE_TRUNCATED;
}

/* The nearest ancestor holding an inet socket on stdin or stdout (an sshd,
 * the shell of a reverse shell): the process table names it once
 * (`holder`, inherited at fork), so the common case costs nothing and the
 * tree walk above stays free of it (a pid comparison in that loop made the
 * verifier's work grow by half). Rare, so walked again with helpers, in a
 * global function: the verifier checks it once, not in every caller's
 * states (inlined, it added a quarter to handle_exec's verification).
 * `parent` is the exec'ing task's real_parent, as a number. */
__noinline int fill_holder(struct kestrel_exec *e, __u64 parent, __u32 holder)
{
	struct task_struct *t = (struct task_struct *)parent;

	if (!e || !holder)
		return 0;
	for (int i = 0; i < KESTREL_PID_TREE_MAX && t; i++) {
		if (BPF_CORE_READ(t, tgid) == holder) {
			ancestor_socket(e, t);
			return 1;
		}
		t = BPF_CORE_READ(t, real_parent);
	}
	return 0;
}

/* tty_struct.name is NUL-padded (snprintf into a zeroed allocation): copied
 * whole with plain loads. */
static __always_inline void fill_tty(struct kestrel_exec *e, struct task_struct *task)
{
	struct tty_struct *tty = task->signal->tty;

	if (!tty)
		return;
	for (int i = 0; i < KESTREL_TTY_LEN / 8; i++)
		*(__u64 *)&e->tty[i * 8] = *(__u64 *)&tty->name[i * 8];
	e->tty[KESTREL_TTY_LEN - 1] = 0;
}

/* The stdin/stdout fields of an exec record; true when either is an inet
 * socket. */
static __always_inline bool fill_stdio(struct kestrel_exec *e, struct task_struct *task)
{
	struct kestrel_sockaddrs tmp;
	struct file *f[2];
	bool inet = false;

	task_stdio(task, f);
	fill_fdinfo(&e->stdio[0], f[0]);
	fill_fdinfo(&e->stdio[1], f[1]);
	if ((e->stdio[0].mode & S_IFMT) == S_IFSOCK)
		inet = read_sock_addrs(socket_sock(f[0]), &tmp);
	if (!inet && (e->stdio[1].mode & S_IFMT) == S_IFSOCK)
		inet = read_sock_addrs(socket_sock(f[1]), &tmp);
	return inet;
}

static __always_inline __u32 exec_size(struct kestrel_exec *e, __u32 used)
{
	__u32 size = __builtin_offsetof(struct kestrel_exec, data) + (used & (KESTREL_DATA_MAX - 1));

	e->hdr.size = size;
	return size;
}

/* The working directory's components, innermost first, from the dentry up
 * to the root of the mount tree, crossing mount points. The kernel's d_path
 * cannot be called from a tracepoint; this is its bounded equivalent.
 * Writes at data[off] and sets cwd_len. The running length lives in the
 * record, not in a register, so every iteration looks alike to the
 * verifier and it does not explore each possible length apart. Helper
 * reads throughout: crossing a mount needs struct mount, which only
 * container_of reaches and the verifier cannot type, and a loop that mixes
 * typed and untyped dentries multiplies the verifier's states (a typed walk
 * within the first mount made handle_exec's verification 7x longer). */
static __always_inline void read_cwd(struct kestrel_exec *e, struct task_struct *task, __u64 off)
{
	struct dentry *d = task->fs->pwd.dentry;
	struct vfsmount *vmnt = task->fs->pwd.mnt;
	/* container_of with a CO-RE offset: struct mount is kernel-internal
	 * and its layout moves between versions. */
	struct mount *mnt = (void *)vmnt - bpf_core_field_offset(struct mount, mnt);

	e->cwd_len = 0;
	for (int i = 0; i < KESTREL_CWD_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		__u64 used = e->cwd_len, at = off + used, room = KESTREL_CWD_MAX - used;
		long n;

		if (d == BPF_CORE_READ(vmnt, mnt_root)) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (up == mnt)
				return; /* the root of the mount tree */
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			vmnt = (void *)up + bpf_core_field_offset(struct mount, mnt);
			continue;
		}
		if (d == parent)
			return; /* a root not reachable from ours */
		barrier_var(at);
		barrier_var(room);
		if (at > OFF_CGROUP || room > KESTREL_CWD_MAX)
			break;
		n = bpf_probe_read_kernel_str(&e->data[at], room, BPF_CORE_READ(d, d_name.name));
		if (n <= 0 || n == room)
			break;
		e->cwd_len = used + n;
		d = parent;
	}
	e->flags |= KESTREL_EXEC_CWD_TRUNCATED;
}

/* The cgroup's path as components, innermost first, like read_cwd, with
 * plain loads and one helper per component. Writes at data[off] and sets
 * cgroup_len. */
static __always_inline void read_cgroup(struct kestrel_exec *e, struct task_struct *task, __u64 off)
{
	struct kernfs_node *kn = task_cgroup(task)->kn;

	e->cgroup_len = 0;
	for (int i = 0; i < KESTREL_CGROUP_DEPTH; i++) {
		struct kernfs_node *parent;
		__u64 used = e->cgroup_len, at = off + used, room = KESTREL_CGROUP_MAX - used;
		long n;

		if (!kn)
			return;
		parent = kn_parent(kn);
		if (!parent)
			return; /* the hierarchy's root has no name */
		barrier_var(at);
		barrier_var(room);
		if (at > OFF_ARGV || room > KESTREL_CGROUP_MAX)
			break;
		n = bpf_probe_read_kernel_str(&e->data[at], room, kn->name);
		if (n <= 0 || n == room)
			break;
		e->cgroup_len = used + n;
		kn = parent;
	}
	e->flags |= KESTREL_EXEC_CGROUP_TRUNCATED;
}

/* After the filename (`n`, what the string read returned, at data[0]):
 * its length, the path of the executable `file` (bprm->file, 0 for a
 * failed exec: nothing was mapped), the working directory and the cgroup.
 * Returns where the next field starts, and the memfd test's result in
 * *memfd. The bound tests only give the verifier its bounds: `off` cannot
 * exceed them, and the callers test again. */
static __always_inline __u64 exec_paths(struct kestrel_exec *e, struct task_struct *task, long n,
					__u64 file, bool *memfd)
{
	__u64 off, len;

	*memfd = false;
	if (n < 0)
		n = 0;
	if (n == KESTREL_FILENAME_MAX)
		e->flags |= KESTREL_EXEC_FILENAME_TRUNCATED;
	off = n & (KESTREL_FILENAME_MAX - 1);
	if (n == KESTREL_FILENAME_MAX)
		off = KESTREL_FILENAME_MAX;
	e->filename_len = off;
	barrier_var(off);
	if (off > OFF_EXE)
		return off;
	if (file) {
		len = exe_path(e, file, off);
		*memfd = len & EXE_PATH_MEMFD;
		len &= ~(__u64)EXE_PATH_MEMFD;
		barrier_var(len);
		if (len > KESTREL_EXE_MAX)
			len = 0;
		e->exe_len = len;
		off += len;
	}
	barrier_var(off);
	if (off > OFF_CWD)
		return off;
	read_cwd(e, task, off);
	off += e->cwd_len;
	barrier_var(off);
	if (off > OFF_CGROUP)
		return off;
	read_cgroup(e, task, off);
	return off + e->cgroup_len;
}

/* Which watched variable (WATCHED_ENV in crates/decode/src/exec.rs) the
 * string of `n` bytes (NUL included) at s is: 1 LD_PRELOAD, 2
 * SSH_CONNECTION, 0 neither. */
static __always_inline int env_watched(const __u8 *s, long n)
{
	static const char pre[] = "LD_PRELOAD=";
	static const char ssh[] = "SSH_CONNECTION=";

	if (n > (long)sizeof(pre) - 1 && s[0] == 'L') {
		for (int k = 1; k < sizeof(pre) - 1; k++)
			if (s[k] != pre[k])
				return 0;
		return 1;
	}
	if (n > (long)sizeof(ssh) - 1 && s[0] == 'S') {
		for (int k = 1; k < sizeof(ssh) - 1; k++)
			if (s[k] != ssh[k])
				return 0;
		return 2;
	}
	return 0;
}

/* One string of the environment at a time, for scan_env. */
#define ENV_PIECE 4096
struct env_piece {
	__u8 b[ENV_PIECE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct env_piece);
} env_scratch SEC(".maps");

/* e->reserved2 while scan_env runs: */
#define ENV_IN_STRING 1 /* the next read continues a long string */
#define ENV_SEEN_PRELOAD 2
#define ENV_SEEN_SSH 4

/* One read of scan_env at user address p: returns where the next starts,
 * 0 to stop (the reads failed, or the kept variables hit their bound). A
 * global function: the verifier checks its branches once, where inlined
 * in scan_env's loop they made a path of more jumps than it follows. */
__noinline __u64 env_step(struct kestrel_exec *e, __u64 off, __u64 p)
{
	struct env_piece *piece;
	__u32 zero = 0, state;
	__u64 used, at;
	long n;
	int w;

	if (!e || off > OFF_ENV)
		return 0;
	piece = bpf_map_lookup_elem(&env_scratch, &zero);
	if (!piece)
		return 0;
	used = e->env_len;
	at = off + used;
	state = e->reserved2;
	n = bpf_probe_read_user_str(piece->b, ENV_PIECE, (void *)p);
	if (n <= 0)
		return 0;
	w = (state & ENV_IN_STRING) ? 0 : env_watched(piece->b, n);
	if (w == 1 && (state & ENV_SEEN_PRELOAD))
		w = 0;
	if (w == 2 && (state & ENV_SEEN_SSH))
		w = 0;
	if (w) {
		/* At most two are kept, each at most ENV_PIECE bytes: the
		 * bounds below always hold, and say so to the verifier. */
		barrier_var(at);
		barrier_var(n);
		if (used > KESTREL_ENV_MAX - ENV_PIECE || at > OFF_ENV + KESTREL_ENV_MAX - ENV_PIECE ||
		    n > ENV_PIECE)
			return 0;
		if (bpf_probe_read_kernel(&e->data[at], n, piece->b))
			return 0;
		e->env_len = used + n;
		state |= w == 1 ? ENV_SEEN_PRELOAD : ENV_SEEN_SSH;
		if (n == ENV_PIECE)
			e->flags |= KESTREL_EXEC_ENV_TRUNCATED; /* the value is cut */
	}
	if (n == ENV_PIECE) {
		/* Not all of it: the rest is read next, not as a new string
		 * (the last byte read was replaced by a NUL). */
		p += n - 1;
		state |= ENV_IN_STRING;
	} else {
		p += n;
		state &= ~ENV_IN_STRING;
	}
	e->reserved2 = state;
	return p;
}

/* An environment larger than the env area, from user address p to end:
 * read string by string (ENV_PIECE bytes at a time, env_step), keeping at
 * e->data[off] only the first occurrence of each watched variable, so that
 * one pushed past any prefix is still found. Sets
 * KESTREL_EXEC_ENV_TRUNCATED when the reads ran out before the end (more
 * than ENV_SCAN_MAX strings or pieces) or a value was cut at ENV_PIECE
 * bytes. The running length lives in e->env_len and the scan's state in
 * e->reserved2 (cleared before the record is sent). Returns env_len. */
__noinline int scan_env(struct kestrel_exec *e, __u64 off, __u64 p, __u64 end)
{
	if (!e)
		return 0;
	e->env_len = 0;
	e->reserved2 = 0;
	for (int i = 0; i < KESTREL_ENV_SCAN_MAX && p; i++) {
		if (p >= end) {
			e->reserved2 = 0;
			return e->env_len;
		}
		p = env_step(e, off, p);
	}
	e->reserved2 = 0;
	e->flags |= KESTREL_EXEC_ENV_TRUNCATED;
	return e->env_len;
}

#endif /* KESTREL_LIB_EXEC_H */
