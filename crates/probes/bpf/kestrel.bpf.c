// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kestrel's kernel side. Tracepoints only: this must run on kernels where
 * kprobes, fentry and BPF-LSM are unavailable. Each program sits on the
 * tracepoint of one syscall or one scheduler event, never on every syscall.
 *
 * Syscall arguments are read at the syscall's *exit* tracepoint from the
 * task's saved registers (bpf_task_pt_regs), so one program per syscall
 * sees both the arguments and the result, with no entry program and no
 * per-task map between the two.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kestrel_abi.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define ENOTSOCK 88
#define EBADF 9

/* Set by user space before load. */
const volatile __u32 self_tgid = 0;
/* Wake the consumer when this many bytes wait in the ring buffer. Below
 * it, records are submitted without a wakeup and user space collects them
 * on its poll timeout: a wakeup costs ~16 us, a silent submit ~0.5 us. */
const volatile __u64 wakeup_bytes = 256 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* resized by user space */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KESTREL_KIND_MAX * KESTREL_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Records are assembled here, then copied into the ring buffer at their
 * real size: exec records are large and mostly empty. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_exec);
} exec_scratch SEC(".maps");

/* Both ends of a TCP socket whose SYN was answered by a reset, keyed by
 * the socket. A refused connect() releases the local port before the
 * syscall returns, so its exit program would otherwise see no source; the
 * state tracepoint sees the socket just before that. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct kestrel_sockaddrs);
} refused SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_dns);
} dns_scratch SEC(".maps");

/* The credentials last seen for each process (by tgid), to notice a uid or
 * euid that became 0 however it happened: a setuid exec, setresuid back to
 * a saved root uid, or a kernel exploit's commit_creds inside any syscall.
 * Entries are made at fork (the child starts with its parent's) and
 * exec, refreshed whenever the process is seen, and dropped at exit. */
struct cred_seen {
	__u32 uid;
	__u32 euid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct cred_seen);
} creds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_cred);
} cred_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_module);
} module_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_file);
} file_scratch SEC(".maps");

static __always_inline void count(__u32 kind, __u32 ctr)
{
	__u32 key = kind * KESTREL_CTR_MAX + ctr;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

/* Hand a record to user space. The wakeup is forced only when this record
 * makes the buffered bytes cross wakeup_bytes, so a burst wakes the
 * consumer once per threshold, not once per record. */
static __always_inline void submit(void *rec, __u64 size, __u32 kind)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (avail < wakeup_bytes && avail + size >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, rec, size, flags) == 0)
		count(kind, KESTREL_CTR_SUBMITTED);
	else
		count(kind, KESTREL_CTR_RINGBUF_FULL);
}

/* kernfs_node.parent became __parent in Linux 6.15. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___pre615, parent))
		return BPF_CORE_READ((struct kernfs_node___pre615 *)kn, parent);
	return BPF_CORE_READ(kn, __parent);
}

/* The cgroup that says which container a task is in. On cgroup v2 that is
 * the unified cgroup. On v1 the unified hierarchy is unused, and runtimes
 * create a cgroup per container in every controller: the memory
 * controller's is taken, as the one every runtime configures. */
static __always_inline struct cgroup *task_cgroup(struct task_struct *task)
{
	struct css_set *cs = BPF_CORE_READ(task, cgroups);
	struct cgroup *dfl = BPF_CORE_READ(cs, dfl_cgrp);

	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct cgroup_subsys_state *css;
		struct cgroup *mem;

		if (id < 0 || id >= 16)
			return dfl;
		css = BPF_CORE_READ(cs, subsys[id]);
		mem = BPF_CORE_READ(css, cgroup);
		/* Memory on v2: its css may belong to an ancestor where the
		 * controller is enabled; the unified cgroup is exact. */
		if (mem && BPF_CORE_READ(mem, root) != BPF_CORE_READ(dfl, root))
			return mem;
	}
	return dfl;
}

/* The upid of a struct pid at its own (deepest) level. */
static __always_inline void pid_at_level(struct pid *pid, struct upid *out)
{
	unsigned int level = BPF_CORE_READ(pid, level);

	if (level > 32)
		level = 32;
	bpf_probe_read_kernel(out, sizeof(*out),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * bpf_core_type_size(struct upid));
}

/*
 * Task, file and socket fields are read with plain loads through BTF-typed
 * pointers (CO-RE relocated by vmlinux.h's preserve_access_index): the JIT
 * turns them into guarded loads, where BPF_CORE_READ would cost one helper
 * call per field. Only what the verifier cannot type (an element of a
 * pointer array, a string) goes through bpf_probe_read_kernel.
 */
static __always_inline void check_creds(__u32 trigger, const char *filename);

static __always_inline void fill_task(struct kestrel_task *t, struct task_struct *task)
{
	struct task_struct *leader = task->group_leader;
	struct signal_struct *sig = task->signal;
	const struct cred *cred = task->cred;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	t->pid = (__u32)id;
	t->tgid = id >> 32;
	t->start_boottime = leader->start_boottime;
	t->ppid = task->real_parent->tgid;
	t->pgid = sig->pids[PIDTYPE_PGID]->numbers[0].nr;
	t->sid = sig->pids[PIDTYPE_SID]->numbers[0].nr;
	if (bpf_core_field_exists(task->sessionid))
		t->sessionid = task->sessionid;
	else
		t->sessionid = 0xffffffff;
	t->uid = (__u32)ug;
	t->gid = ug >> 32;
	t->euid = cred->euid.val;
	t->egid = cred->egid.val;
	bpf_get_current_comm(t->comm, sizeof(t->comm));
	bpf_probe_read_kernel_str(t->nodename, sizeof(t->nodename),
				  task->nsproxy->uts_ns->name.nodename);

	struct upid up = {};

	pid_at_level(BPF_CORE_READ(leader, thread_pid), &up);
	t->ns_pid = up.nr;
	t->pid_ns = BPF_CORE_READ(up.ns, ns.inum);
	t->mnt_ns = task->nsproxy->mnt_ns->ns.inum;
	t->net_ns = task->nsproxy->net_ns->ns.inum;
	t->cgroup_id = BPF_CORE_READ(task_cgroup(task), kn, id);
}

static __always_inline struct file *task_fd(struct task_struct *task, unsigned int fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *f = NULL;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	return f;
}

/* task_fd for a task pointer the verifier does not type (read by a helper). */
static __always_inline struct file *task_fd_untyped(struct task_struct *task, unsigned int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline void fill_fdinfo(struct kestrel_fdinfo *fi, struct file *f)
{
	struct inode *inode;

	if (!f) {
		fi->mode = 0;
		return;
	}
	/* f came from a pointer array, untyped for the verifier: helper reads
	 * (bpf_core_cast would type it, but needs Linux 6.2). */
	inode = BPF_CORE_READ(f, f_inode);
	fi->mode = BPF_CORE_READ(inode, i_mode);
	fi->rdev = BPF_CORE_READ(inode, i_rdev);
	fi->ino = BPF_CORE_READ(inode, i_ino);
}

static __always_inline struct sock *file_sock(struct file *f)
{
	struct socket *sock;

	if (!f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/* Both ends of an inet socket as the kernel holds them. */
static __always_inline bool read_sock_addrs(struct sock *sk, struct kestrel_sockaddrs *a)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return false;
	a->family = family;
	a->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	a->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		bpf_core_read(a->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(a->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(a->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(a->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	return true;
}

static __always_inline bool same_addr(const __u8 *a, const __u8 *b)
{
	return *(__u64 *)a == *(__u64 *)b && *(__u64 *)(a + 8) == *(__u64 *)(b + 8);
}

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
	e->socket_pid = 0;
	e->socket.family = 0;
	e->tty[0] = 0;
	e->socket_comm[0] = 0;
	return e;
}

/* The process tree above `task`, and the nearest ancestor holding a socket
 * on stdin or stdout (an sshd, or the shell of a reverse shell). */
/* The process tree above `task`, and the nearest ancestor holding a socket
 * on stdin or stdout (an sshd, or the shell of a reverse shell). Read with
 * helpers, not BTF loads: through typed pointers the verifier cannot prune
 * this loop's branches and spends seconds on it at load time. */
static __always_inline void fill_ancestry(struct kestrel_exec *e, struct task_struct *task)
{
	struct task_struct *t = BPF_CORE_READ(task, real_parent);
	__u32 n = 0;

	for (int i = 0; i < KESTREL_PID_TREE_MAX; i++) {
		struct task_struct *leader;
		__u32 pid;

		if (!t)
			break;
		leader = BPF_CORE_READ(t, group_leader);
		pid = BPF_CORE_READ(t, tgid);
		if (pid == 0)
			break;
		e->ancestors[i].pid = pid;
		BPF_CORE_READ_STR_INTO(&e->ancestors[i].comm, leader, comm);
		n = i + 1;
		if (!e->socket_pid) {
			struct sock *sk = file_sock(task_fd_untyped(t, 0));

			if (!sk)
				sk = file_sock(task_fd_untyped(t, 1));
			if (sk && read_sock_addrs(sk, &e->socket)) {
				e->socket_pid = pid;
				e->socket_start_boottime = BPF_CORE_READ(leader, start_boottime);
				BPF_CORE_READ_STR_INTO(&e->socket_comm, leader, comm);
			}
		}
		if (pid == 1)
			break;
		t = BPF_CORE_READ(t, real_parent);
		if (i == KESTREL_PID_TREE_MAX - 1 && t && BPF_CORE_READ(t, tgid) > 0)
			e->flags |= KESTREL_EXEC_PID_TREE_TRUNCATED;
	}
	e->ancestors_len = n;
}

static __always_inline void fill_tty(struct kestrel_exec *e, struct task_struct *task)
{
	struct tty_struct *tty = task->signal->tty;

	if (tty)
		bpf_probe_read_kernel_str(e->tty, sizeof(e->tty), tty->name);
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
 * verifier and it does not explore each possible length apart. */
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
		if (at > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX || room > KESTREL_CWD_MAX)
			break;
		n = bpf_probe_read_kernel_str(&e->data[at], room, BPF_CORE_READ(d, d_name.name));
		if (n <= 0 || n == room)
			break;
		e->cwd_len = used + n;
		d = parent;
	}
	e->flags |= KESTREL_EXEC_CWD_TRUNCATED;
}

/* The cgroup's path as components, innermost first, like read_cwd. Writes
 * at data[off] and sets cgroup_len. */
static __always_inline void read_cgroup(struct kestrel_exec *e, struct task_struct *task, __u64 off)
{
	struct kernfs_node *kn = BPF_CORE_READ(task_cgroup(task), kn);

	e->cgroup_len = 0;
	for (int i = 0; i < KESTREL_CGROUP_DEPTH; i++) {
		struct kernfs_node *parent = kn_parent(kn);
		__u64 used = e->cgroup_len, at = off + used, room = KESTREL_CGROUP_MAX - used;
		long n;

		if (!kn || !parent)
			return; /* the hierarchy's root has no name */
		if (at > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX + KESTREL_CGROUP_MAX ||
		    room > KESTREL_CGROUP_MAX)
			break;
		n = bpf_probe_read_kernel_str(&e->data[at], room, BPF_CORE_READ(kn, name));
		if (n <= 0 || n == room)
			break;
		e->cgroup_len = used + n;
		kn = parent;
	}
	e->flags |= KESTREL_EXEC_CGROUP_TRUNCATED;
}

/* A successful exec: the new image is in place, its argument and
 * environment areas are in the new mm and are read in one copy each. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct kestrel_exec *e;
	struct mm_struct *mm;
	unsigned long start, end;
	__u64 off, len;
	long n;

	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	fill_task(&e->task, p);
	e->res = 0;
	e->argc = BPF_CORE_READ(bprm, argc);
	e->flags = KESTREL_EXEC_ARGV_FROM_MM;

	n = bpf_probe_read_kernel_str(e->data, KESTREL_FILENAME_MAX, BPF_CORE_READ(bprm, filename));
	if (n < 0)
		n = 0;
	if (n == KESTREL_FILENAME_MAX)
		e->flags |= KESTREL_EXEC_FILENAME_TRUNCATED;
	off = n & (KESTREL_FILENAME_MAX - 1);
	if (n == KESTREL_FILENAME_MAX)
		off = KESTREL_FILENAME_MAX;
	e->filename_len = off;
	barrier_var(off);
	if (off > KESTREL_FILENAME_MAX)
		return 0;
	read_cwd(e, p, off);
	off += e->cwd_len;
	barrier_var(off);
	if (off > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX)
		return 0;
	read_cgroup(e, p, off);
	off += e->cgroup_len;

	mm = BPF_CORE_READ(p, mm);
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	len = end > start ? end - start : 0;
	if (len > KESTREL_ARGV_MAX) {
		len = KESTREL_ARGV_MAX;
		e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
	}
	/* barrier_var stops clang from reusing an unclamped copy of a value;
	 * the repeated tests then give the verifier its bounds. */
	barrier_var(len);
	barrier_var(off);
	if (len > KESTREL_ARGV_MAX || off > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX + KESTREL_CGROUP_MAX)
		return 0;
	if (len && bpf_probe_read_user(&e->data[off], len, (void *)start) == 0) {
		e->argv_len = len;
		off += len;
	}

	start = BPF_CORE_READ(mm, env_start);
	end = BPF_CORE_READ(mm, env_end);
	len = end > start ? end - start : 0;
	if (len > KESTREL_ENV_MAX) {
		len = KESTREL_ENV_MAX;
		e->flags |= KESTREL_EXEC_ENV_TRUNCATED;
	}
	barrier_var(len);
	barrier_var(off);
	if (len > KESTREL_ENV_MAX ||
	    off > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX + KESTREL_CGROUP_MAX + KESTREL_ARGV_MAX)
		return 0;
	if (len && bpf_probe_read_user(&e->data[off], len, (void *)start) == 0) {
		e->env_len = len;
		off += len;
	}

	fill_fdinfo(&e->stdio[0], task_fd(p, 0));
	fill_fdinfo(&e->stdio[1], task_fd(p, 1));
	fill_tty(e, p);
	fill_ancestry(e, p);
	check_creds(KESTREL_CRED_AT_EXEC, BPF_CORE_READ(bprm, filename));
	submit(e, exec_size(e, off), KESTREL_KIND_EXEC);
	return 0;
}

/* A failed exec: the caller's image is still in place, so the filename and
 * argv pointers it passed are read from its memory, argument by argument. */
static __always_inline int exec_failed(long ret, const char *filename, const char *const *argv)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_exec *e;
	__u64 off;
	long n;

	if (ret >= 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	fill_task(&e->task, task);
	e->res = ret;

	n = bpf_probe_read_user_str(e->data, KESTREL_FILENAME_MAX, filename);
	if (n < 0)
		n = 0;
	if (n == KESTREL_FILENAME_MAX)
		e->flags |= KESTREL_EXEC_FILENAME_TRUNCATED;
	off = n & (KESTREL_FILENAME_MAX - 1);
	if (n == KESTREL_FILENAME_MAX)
		off = KESTREL_FILENAME_MAX;
	e->filename_len = off;
	barrier_var(off);
	if (off > KESTREL_FILENAME_MAX)
		return 0;
	read_cwd(e, task, off);
	off += e->cwd_len;
	barrier_var(off);
	if (off > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX)
		return 0;
	read_cgroup(e, task, off);
	off += e->cgroup_len;

	for (int i = 0; i < KESTREL_ARGS_MAX && argv; i++) {
		const char *arg = NULL;
		__u64 used = e->argv_len, at, room;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		if (used >= KESTREL_ARGV_MAX) {
			e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
			break;
		}
		at = off + used;
		room = KESTREL_ARGV_MAX - used;
		barrier_var(at);
		barrier_var(room);
		if (at > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX + KESTREL_CGROUP_MAX + KESTREL_ARGV_MAX ||
		    room > KESTREL_ARGV_MAX)
			break;
		n = bpf_probe_read_user_str(&e->data[at], room, arg);
		if (n <= 0)
			break;
		e->argv_len = used + n;
		e->argc = i + 1;
		if (i == KESTREL_ARGS_MAX - 1)
			e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
	}
	off += e->argv_len;

	fill_fdinfo(&e->stdio[0], task_fd(task, 0));
	fill_fdinfo(&e->stdio[1], task_fd(task, 1));
	fill_tty(e, task);
	check_creds(KESTREL_CRED_AT_EXEC_FAILED, NULL);
	fill_ancestry(e, task);
	submit(e, exec_size(e, off), KESTREL_KIND_EXEC);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int handle_execve_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs;

	if (ctx->ret >= 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return exec_failed(ctx->ret, (const char *)BPF_CORE_READ(regs, di),
			   (const char *const *)BPF_CORE_READ(regs, si));
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int handle_execveat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs;

	if (ctx->ret >= 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return exec_failed(ctx->ret, (const char *)BPF_CORE_READ(regs, si),
			   (const char *const *)BPF_CORE_READ(regs, dx));
}

SEC("tracepoint/syscalls/sys_exit_connect")
int handle_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;
	struct kestrel_connect e = {};
	struct sock *sk;
	void *uaddr;
	__u16 family = 0;
	long ret = ctx->ret;

	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid || ret == -EBADF || ret == -ENOTSOCK)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	uaddr = (void *)BPF_CORE_READ(regs, si);
	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return 0;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	e.hdr.kind = KESTREL_KIND_CONNECT;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task);
	e.res = ret;
	e.fd = (int)BPF_CORE_READ(regs, di);
	e.addrs.family = family;
	if (family == AF_INET) {
		struct sockaddr_in sin = {};

		bpf_probe_read_user(&sin, sizeof(sin), uaddr);
		e.addrs.dport = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(e.addrs.daddr, &sin.sin_addr, 4);
	} else {
		struct sockaddr_in6 sin6 = {};

		bpf_probe_read_user(&sin6, sizeof(sin6), uaddr);
		e.addrs.dport = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(e.addrs.daddr, &sin6.sin6_addr, 16);
	}
	sk = file_sock(task_fd(task, e.fd));
	if (sk) {
		struct kestrel_sockaddrs local = {};
		__u64 key = (__u64)sk;
		struct kestrel_sockaddrs *r;

		if (read_sock_addrs(sk, &local) && local.sport) {
			e.addrs.sport = local.sport;
			__builtin_memcpy(e.addrs.saddr, local.saddr, 16);
		} else if ((r = bpf_map_lookup_elem(&refused, &key))) {
			/* Only if it is this very connection attempt. */
			if (r->dport == e.addrs.dport && same_addr(r->daddr, e.addrs.daddr)) {
				e.addrs.sport = r->sport;
				__builtin_memcpy(e.addrs.saddr, r->saddr, 16);
			}
			bpf_map_delete_elem(&refused, &key);
		}
	}
	submit(&e, sizeof(e), KESTREL_KIND_CONNECT);
	check_creds(KESTREL_CRED_AT_CONNECT, NULL);
	return 0;
}

#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define IPPROTO_TCP 6

/* A SYN that was never answered, or answered by a reset: keep the local
 * end, which the kernel is about to release. Runs in whatever context
 * processed the reset, so it is keyed by socket, not by task. */
SEC("tracepoint/sock/inet_sock_set_state")
int handle_sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct kestrel_sockaddrs v = {};
	__u64 key;

	if (ctx->oldstate != TCP_SYN_SENT || ctx->newstate != TCP_CLOSE ||
	    ctx->protocol != IPPROTO_TCP)
		return 0;
	key = (__u64)ctx->skaddr;
	v.family = ctx->family;
	v.sport = ctx->sport;
	v.dport = ctx->dport;
	/* Copied with a helper: the verifier refuses loads through a context
	 * pointer moved by a variable offset, which memcpy may produce. */
	if (ctx->family == AF_INET) {
		bpf_probe_read_kernel(v.saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(v.daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(v.saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(v.daddr, 16, ctx->daddr_v6);
	}
	bpf_map_update_elem(&refused, &key, &v, BPF_ANY);
	return 0;
}

#define PTRACE_TRACEME 0

/* ptrace: every request that reaches into another process. Arguments come
 * from the saved registers (the fourth syscall argument is in r10). */
SEC("tracepoint/syscalls/sys_exit_ptrace")
int handle_ptrace_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_ptrace e = {};

	e.request = (long)BPF_CORE_READ(regs, di);
	if (e.request == PTRACE_TRACEME || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_PTRACE;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task);
	e.target_pid = (int)BPF_CORE_READ(regs, si);
	e.addr = BPF_CORE_READ(regs, dx);
	e.data = BPF_CORE_READ(regs, r10);
	e.res = ctx->ret;
	submit(&e, sizeof(e), KESTREL_KIND_PTRACE);
	check_creds(KESTREL_CRED_AT_PTRACE, NULL);
	return 0;
}

#define IPPROTO_UDP 17
#define DNS_PORT 53

/* Reads a user sockaddr (as filled in by the kernel on return) into the
 * server side of `a`; true when it is port 53. */
static __always_inline bool dns_peer_from_user(const void *uaddr, struct kestrel_sockaddrs *a)
{
	struct sockaddr_in6 sin6 = {};

	if (!uaddr || bpf_probe_read_user(&sin6, sizeof(sin6), uaddr))
		return false;
	if (sin6.sin6_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&sin6;

		if (bpf_ntohs(sin->sin_port) != DNS_PORT)
			return false;
		__builtin_memcpy(a->daddr, &sin->sin_addr, 4);
	} else if (sin6.sin6_family == AF_INET6) {
		if (bpf_ntohs(sin6.sin6_port) != DNS_PORT)
			return false;
		__builtin_memcpy(a->daddr, &sin6.sin6_addr, 16);
	} else {
		return false;
	}
	a->dport = DNS_PORT;
	return true;
}

/* One received datagram: filtered in the kernel (UDP, from port 53) before
 * any payload is copied, so other traffic costs a few reads. */
static __always_inline void dns_datagram(struct task_struct *task, int fd, struct sock *sk,
					 const void *buf, __u64 len, const void *src)
{
	struct kestrel_dns *e;
	__u32 zero = 0;
	__u64 n;

	e = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!e) {
		count(KESTREL_KIND_DNS, KESTREL_CTR_ERROR);
		return;
	}
	if (!read_sock_addrs(sk, &e->addrs))
		return;
	/* A connected socket (glibc's resolver) names its server itself;
	 * otherwise the source address returned to the caller does. */
	if (e->addrs.dport != DNS_PORT && !dns_peer_from_user(src, &e->addrs))
		return;
	e->hdr.kind = KESTREL_KIND_DNS;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task);
	e->fd = fd;
	e->msg_len = len;
	n = len < KESTREL_DNS_PAYLOAD_MAX ? len : KESTREL_DNS_PAYLOAD_MAX;
	barrier_var(n);
	if (n > KESTREL_DNS_PAYLOAD_MAX)
		return;
	if (bpf_probe_read_user(e->payload, n, buf))
		n = 0;
	e->payload_len = n;
	e->hdr.size = __builtin_offsetof(struct kestrel_dns, payload) + n;
	submit(e, __builtin_offsetof(struct kestrel_dns, payload) + n, KESTREL_KIND_DNS);
}

/* The socket behind fd if it is a UDP inet socket. */
static __always_inline struct sock *udp_sock(struct task_struct *task, int fd)
{
	struct sock *sk = file_sock(task_fd(task, fd));

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return NULL;
	return sk;
}

/* What the three receive programs share: a datagram was received (ret > 0)
 * by another process, on a UDP socket. Returns that socket, or NULL. */
static __always_inline struct sock *recv_udp_sock(long ret, struct task_struct **task,
						  struct pt_regs **regs, int *fd)
{
	if (ret <= 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return NULL;
	*task = bpf_get_current_task_btf();
	*regs = (struct pt_regs *)bpf_task_pt_regs(*task);
	*fd = BPF_CORE_READ(*regs, di);
	return udp_sock(*task, *fd);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int handle_recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	/* Read once into a register: the verifier refuses a load through a
	 * context pointer clang kept offset for a later use. */
	long ret = ctx->ret;
	struct task_struct *task;
	struct pt_regs *regs;
	struct sock *sk;
	int fd;

	barrier_var(ret);
	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (sk)
		dns_datagram(task, fd, sk, (void *)BPF_CORE_READ(regs, si), ret,
			     (void *)BPF_CORE_READ(regs, r8));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int handle_recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct task_struct *task;
	struct pt_regs *regs;
	struct user_msghdr msg = {};
	struct iovec iov = {};
	struct sock *sk;
	int fd;

	barrier_var(ret);
	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (!sk || bpf_probe_read_user(&msg, sizeof(msg), (void *)BPF_CORE_READ(regs, si)))
		return 0;
	/* The question is at the front: the first buffer holds it. */
	if (!msg.msg_iov || bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
		return 0;
	dns_datagram(task, fd, sk, iov.iov_base, (__u64)ret < iov.iov_len ? (__u64)ret : iov.iov_len,
		     msg.msg_name);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int handle_recvmmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct task_struct *task;
	struct pt_regs *regs;
	struct mmsghdr *vec;
	struct sock *sk;
	int fd;

	barrier_var(ret);
	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (!sk)
		return 0;
	vec = (struct mmsghdr *)BPF_CORE_READ(regs, si);
	for (int i = 0; i < KESTREL_DNS_MMSG_MAX && i < ret; i++) {
		struct mmsghdr m = {};
		struct iovec iov = {};

		if (bpf_probe_read_user(&m, sizeof(m), &vec[i]) || !m.msg_hdr.msg_iov ||
		    bpf_probe_read_user(&iov, sizeof(iov), m.msg_hdr.msg_iov))
			break;
		dns_datagram(task, fd, sk, iov.iov_base,
			     m.msg_len < iov.iov_len ? m.msg_len : iov.iov_len, m.msg_hdr.msg_name);
	}
	return 0;
}

static __always_inline void emit_cred(struct task_struct *task, struct cred_seen *old,
				      __u32 trigger, const char *filename)
{
	__u32 zero = 0;
	struct kestrel_cred *e = bpf_map_lookup_elem(&cred_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
		return;
	}
	e->hdr.kind = KESTREL_KIND_CRED;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task);
	e->old_uid = old->uid;
	e->old_euid = old->euid;
	e->trigger = trigger;
	e->filename[0] = 0;
	if (filename)
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	submit(e, sizeof(*e), KESTREL_KIND_CRED);
}

/* Compares the current task's credentials with those last seen for its
 * process; reports a change from non-root to root, then remembers. */
static __always_inline void check_creds(__u32 trigger, const char *filename)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct cred_seen now = {
		.uid = (__u32)bpf_get_current_uid_gid(),
		.euid = task->cred->euid.val,
	};
	struct cred_seen *prev = bpf_map_lookup_elem(&creds, &tgid);

	if (!prev) {
		bpf_map_update_elem(&creds, &tgid, &now, BPF_ANY);
		return;
	}
	if (prev->uid == now.uid && prev->euid == now.euid)
		return;
	if (prev->uid != 0 && prev->euid != 0 && (now.uid == 0 || now.euid == 0)) {
		struct cred_seen old = *prev;

		emit_cred(task, &old, trigger, filename);
	}
	prev->uid = now.uid;
	prev->euid = now.euid;
}

/* A new process starts with its parent's credentials. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ctgid = child->tgid;
	struct cred_seen c;

	if (ctgid == parent->tgid)
		return 0; /* a new thread of the same process */
	check_creds(KESTREL_CRED_AT_FORK, NULL);
	c.uid = child->cred->uid.val;
	c.euid = child->cred->euid.val;
	bpf_map_update_elem(&creds, &ctgid, &c, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	__u32 tgid = p->tgid;

	if (p->pid != tgid)
		return 0; /* a thread, not the process */
	check_creds(KESTREL_CRED_AT_EXIT, NULL);
	bpf_map_delete_elem(&creds, &tgid);
	return 0;
}

/* Exclusions for file creation: directories (by device and inode, filled
 * in by user space) under which creations are not reported. Checked on
 * every component of the walk, so a busy directory costs a few lookups
 * and no ring buffer space. */
struct dir_key {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct dir_key);
	__type(value, __u8);
} file_excludes SEC(".maps");

/* A (dentry, mount) path walked to the root of the mount tree, components
 * innermost first, like read_cwd (which explains the shape of the loop).
 * With check_excludes, returns false when a component is an excluded
 * directory. */
static __always_inline bool walk_path(struct kestrel_path *pb, struct dentry *d,
				      struct vfsmount *vmnt, bool check_excludes)
{
	struct mount *mnt = (void *)vmnt - bpf_core_field_offset(struct mount, mnt);

	pb->len = 0;
	pb->truncated = 0;
	for (int i = 0; i < KESTREL_CWD_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		__u64 used = pb->len, room = KESTREL_CWD_MAX - used;
		long n;

		if (check_excludes) {
			struct inode *ino = BPF_CORE_READ(d, d_inode);
			struct dir_key k = {
				.dev = BPF_CORE_READ(ino, i_sb, s_dev),
				.ino = BPF_CORE_READ(ino, i_ino),
			};

			if (bpf_map_lookup_elem(&file_excludes, &k))
				return false;
		}
		if (d == BPF_CORE_READ(vmnt, mnt_root)) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (up == mnt)
				return true;
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			vmnt = (void *)up + bpf_core_field_offset(struct mount, mnt);
			continue;
		}
		if (d == parent)
			return true;
		if (used > KESTREL_CWD_MAX || room > KESTREL_CWD_MAX)
			break;
		n = bpf_probe_read_kernel_str(&pb->bytes[used], room, BPF_CORE_READ(d, d_name.name));
		if (n <= 0 || n == room)
			break;
		pb->len = used + n;
		d = parent;
	}
	pb->truncated = 1;
	return true;
}

static __always_inline int module_event(long ret, int fd, __u64 image_len, __u32 flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_module *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&module_scratch, &zero);
	if (!m) {
		count(KESTREL_KIND_MODULE, KESTREL_CTR_ERROR);
		return 0;
	}
	m->hdr.kind = KESTREL_KIND_MODULE;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&m->task, task);
	m->res = ret;
	m->fd = fd;
	m->image_len = image_len;
	m->flags = flags;
	m->path.len = 0;
	m->path.truncated = 0;
	if (fd >= 0) {
		struct file *f = task_fd(task, fd);

		if (f)
			walk_path(&m->path, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
				  false);
	}
	submit(m, sizeof(*m), KESTREL_KIND_MODULE);
	return 0;
}

/* Kernels without module support have neither tracepoint: user space
 * leaves these two programs out (see kestrel-probes' PROGRAMS). */
SEC("tracepoint/syscalls/sys_exit_finit_module")
int handle_finit_module_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return module_event(ret, (int)BPF_CORE_READ(regs, di), 0, (__u32)BPF_CORE_READ(regs, dx));
}

SEC("tracepoint/syscalls/sys_exit_init_module")
int handle_init_module_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return module_event(ret, -1, BPF_CORE_READ(regs, si), 0);
}

#define O_CREAT 0100
#define O_WRONLY 01
#define O_TRUNC 01000
#define __O_TMPFILE 020000000
#define FMODE_CREATED 0x100000
#define AT_FDCWD -100

static __always_inline struct kestrel_file *file_record(struct task_struct *task)
{
	__u32 zero = 0;
	struct kestrel_file *e = bpf_map_lookup_elem(&file_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_FILE, KESTREL_CTR_ERROR);
		return NULL;
	}
	e->hdr.kind = KESTREL_KIND_FILE;
	e->hdr.size = sizeof(*e);
	e->flags = 0;
	e->rel[0] = 0;
	return e;
}

/* After an open-family call: was a file created? Only opens asking for
 * O_CREAT or O_TMPFILE get past the first test, so other opens cost a
 * register read. FMODE_CREATED tells a new file from an existing one. */
static __always_inline int file_opened(long ret, __u64 flags)
{
	struct task_struct *task;
	struct kestrel_file *e;
	struct file *f;
	bool tmpfile = (flags & __O_TMPFILE) == __O_TMPFILE;
	__u32 fmode;

	if (ret < 0 || !(flags & (O_CREAT | __O_TMPFILE)))
		return 0;
	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	f = task_fd(task, ret);
	if (!f)
		return 0;
	fmode = BPF_CORE_READ(f, f_mode);
	if (!tmpfile && !(fmode & FMODE_CREATED))
		return 0;
	e = file_record(task);
	if (!e)
		return 0;
	if (!walk_path(&e->path, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), true))
		return 0; /* under an excluded directory */
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task);
	e->res = ret;
	e->mode = BPF_CORE_READ(f, f_inode, i_mode);
	if (tmpfile)
		e->flags |= KESTREL_FILE_TMPFILE;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int handle_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return file_opened(ret, BPF_CORE_READ(regs, dx));
}

SEC("tracepoint/syscalls/sys_exit_open")
int handle_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return file_opened(ret, BPF_CORE_READ(regs, si));
}

SEC("tracepoint/syscalls/sys_exit_creat")
int handle_creat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	barrier_var(ret);
	return file_opened(ret, O_CREAT | O_WRONLY | O_TRUNC);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int handle_openat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u64 flags = 0;

	barrier_var(ret);
	if (ret < 0)
		return 0;
	/* struct open_how starts with its u64 flags. */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)BPF_CORE_READ(regs, dx));
	return file_opened(ret, flags);
}

/* mknod/mknodat made a node: the directory it was made in is walked (the
 * cwd, or the dirfd's directory), the name is kept as passed; user space
 * joins them. */
static __always_inline int node_made(long ret, int dfd, const char *upath, __u32 mode)
{
	struct task_struct *task;
	struct kestrel_file *e;
	bool ok;

	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = file_record(task);
	if (!e)
		return 0;
	if (bpf_probe_read_user_str(e->rel, sizeof(e->rel), upath) <= 0)
		return 0;
	if (e->rel[0] == '/') {
		e->path.len = 0;
		e->path.truncated = 0;
		ok = true;
	} else if (dfd == AT_FDCWD) {
		ok = walk_path(&e->path, task->fs->pwd.dentry, task->fs->pwd.mnt, true);
	} else {
		struct file *dir = task_fd(task, dfd);

		if (!dir)
			return 0;
		ok = walk_path(&e->path, BPF_CORE_READ(dir, f_path.dentry),
			       BPF_CORE_READ(dir, f_path.mnt), true);
	}
	if (!ok)
		return 0;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task);
	e->res = 0;
	e->mode = mode;
	e->flags |= KESTREL_FILE_MKNOD;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mknodat")
int handle_mknodat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return node_made(ret, (int)BPF_CORE_READ(regs, di), (const char *)BPF_CORE_READ(regs, si),
			 (__u32)BPF_CORE_READ(regs, dx));
}

SEC("tracepoint/syscalls/sys_exit_mknod")
int handle_mknod_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return node_made(ret, AT_FDCWD, (const char *)BPF_CORE_READ(regs, di),
			 (__u32)BPF_CORE_READ(regs, si));
}
