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
#define EINPROGRESS 115

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

/* Bytes this CPU submitted since it last looked at the ring's fill. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unchecked SEC(".maps");

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

/* The process table: a struct kestrel_proc (kestrel_abi.h) in the task
 * storage of each thread group leader. Made at fork (the child starts from
 * its parent's) or when the process is first seen, freed with the task.
 * Task storage, not a hash by tgid: the lookup is a few loads from the
 * task itself, where a hash lookup missed the cache twice and was a fifth
 * of handle_exec's time. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kestrel_proc);
} procs SEC(".maps");

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

/* Hand a record to user space without waking it: user space collects on
 * its poll timeout, or when the buffered bytes reach wakeup_bytes. Asking
 * the ring buffer how full it is reads the consumer's cache line (7 % of
 * handle_exec), so each CPU asks only after every WAKEUP_CHECK_BYTES it
 * submitted: a wakeup comes at most that much per CPU past the threshold. */
#define WAKEUP_CHECK_BYTES (16 * 1024)

static __always_inline __u64 wakeup_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *since = bpf_map_lookup_elem(&unchecked, &zero);

	if (since) {
		*since += size;
		if (*since >= WAKEUP_CHECK_BYTES) {
			*since = 0;
			if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= wakeup_bytes)
				return BPF_RB_FORCE_WAKEUP;
		}
	}
	return BPF_RB_NO_WAKEUP;
}

/* A record assembled elsewhere (a scratch map: variable-sized records). */
static __always_inline void submit(void *rec, __u64 size, __u32 kind)
{
	if (bpf_ringbuf_output(&events, rec, size, wakeup_flags(size)) == 0)
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
		return ((struct kernfs_node___pre615 *)kn)->parent;
	return kn->__parent;
}

/* The cgroup that says which container a task is in. On cgroup v2 that is
 * the unified cgroup. On v1 the unified hierarchy is unused, and runtimes
 * create a cgroup per container in every controller: the memory
 * controller's is taken, as the one every runtime configures. */
static __always_inline struct cgroup *task_cgroup(struct task_struct *task)
{
	struct css_set *cs = task->cgroups;
	struct cgroup *dfl = cs->dfl_cgrp;

	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct cgroup *mem;

		if (id < 0 || id >= 16)
			return dfl;
		mem = cs->subsys[id]->cgroup;
		/* Memory on v2: its css may belong to an ancestor where the
		 * controller is enabled; the unified cgroup is exact. */
		if (mem && mem->root != dfl->root)
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
 * turns them into guarded loads, where a helper call costs some 20-40 ns
 * each on this kind of VM and was most of every program's time. Only what
 * the verifier cannot type (an element of a pointer array, a string, a
 * container_of) goes through bpf_probe_read_kernel, and then as few times
 * as possible: neighbouring fields are read in one call.
 */

/* The process's entry in the process table, made from the task's
 * credentials if it has none yet. NULL only if the map refused one. */
static __always_inline struct kestrel_proc *proc_entry(struct task_struct *task)
{
	struct kestrel_proc *ps = bpf_task_storage_get(&procs, task->group_leader, 0, 0);

	if (!ps) {
		const struct cred *cred = task->cred;
		struct kestrel_proc now = { .uid = cred->uid.val, .euid = cred->euid.val };

		ps = bpf_task_storage_get(&procs, task->group_leader, &now,
					  BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!ps)
			count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
	}
	return ps;
}

static __always_inline void check_creds(struct kestrel_proc *ps, struct task_struct *task,
					__u32 trigger, const char *filename);

/*
 * The task's identity, as of now. What lies behind chains of pointers that
 * rarely change (the leader's pid numbers, the namespaces, the cgroup) is
 * cached in the process's entry `ps` with the address it was read through,
 * and read again when the task points elsewhere: those loads mostly miss
 * the CPU's cache (caching them took 8-14 % off a connect). Only the
 * leader's own events use and fill the cache, so that no two CPUs write one
 * entry at once.
 * A pointer compared equal could in principle be a new object at a freed
 * one's address; the namespace and cgroup groups are therefore also
 * cleared when the process calls unshare or setns or is moved to another
 * cgroup (handle_unshare_exit, handle_setns_exit, handle_cgroup_attach). The leader's group is
 * tied to the entry's own task. pgid, sid, ppid, credentials, comm and
 * nodename are read live: each is one or two loads, and they change without
 * leaving a trace that a tracepoint sees.
 */
static __always_inline void fill_task(struct kestrel_task *t, struct task_struct *task,
				      struct kestrel_proc *ps)
{
	struct task_struct *leader = task->group_leader;
	struct signal_struct *sig = task->signal;
	struct nsproxy *nsp = task->nsproxy;
	struct css_set *cgs = task->cgroups;
	const struct cred *cred = task->cred;
	const char *node = nsp->uts_ns->name.nodename;

	if (task != leader)
		ps = NULL;

	t->pid = task->pid;
	t->tgid = task->tgid;
	t->ppid = task->real_parent->tgid;
	t->pgid = sig->pids[PIDTYPE_PGID]->numbers[0].nr;
	t->sid = sig->pids[PIDTYPE_SID]->numbers[0].nr;
	if (bpf_core_field_exists(task->sessionid))
		t->sessionid = task->sessionid;
	else
		t->sessionid = 0xffffffff;
	t->uid = cred->uid.val;
	t->gid = cred->gid.val;
	t->euid = cred->euid.val;
	t->egid = cred->egid.val;
	/* comm and nodename are NUL-padded to their size (strscpy_pad,
	 * sethostname's memset): word loads copy them, no string helper. */
	*(__u64 *)&t->comm[0] = *(__u64 *)&task->comm[0];
	*(__u64 *)&t->comm[8] = *(__u64 *)&task->comm[8];
	for (int i = 0; i < (KESTREL_NODENAME_LEN - 1) / 8; i++)
		*(__u64 *)&t->nodename[i * 8] = *(__u64 *)&node[i * 8];
	t->nodename[KESTREL_NODENAME_LEN - 1] = 0;
	t->reserved[0] = 0;
	t->reserved[1] = 0;
	t->reserved[2] = 0;

	if (ps && ps->c_leader == (__u64)leader) {
		t->start_boottime = ps->start_boottime;
		t->ns_pid = ps->ns_pid;
		t->pid_ns = ps->pid_ns;
	} else {
		struct pid *tp = leader->thread_pid;

		t->start_boottime = leader->start_boottime;
		/* The pid as the process's own namespace numbers it: at level
		 * 0 (the host) a plain load; deeper, the array index is not a
		 * constant the verifier accepts, so a helper reads that one
		 * entry. */
		if (tp->level == 0) {
			t->ns_pid = tp->numbers[0].nr;
			t->pid_ns = tp->numbers[0].ns->ns.inum;
		} else {
			struct upid up = {};

			pid_at_level(tp, &up);
			t->ns_pid = up.nr;
			t->pid_ns = BPF_CORE_READ(up.ns, ns.inum);
		}
		if (ps) {
			ps->start_boottime = t->start_boottime;
			ps->ns_pid = t->ns_pid;
			ps->pid_ns = t->pid_ns;
			ps->c_leader = (__u64)leader;
		}
	}
	if (ps && ps->c_nsproxy == (__u64)nsp) {
		t->mnt_ns = ps->mnt_ns;
		t->net_ns = ps->net_ns;
	} else {
		t->mnt_ns = nsp->mnt_ns->ns.inum;
		t->net_ns = nsp->net_ns->ns.inum;
		if (ps) {
			ps->mnt_ns = t->mnt_ns;
			ps->net_ns = t->net_ns;
			ps->c_nsproxy = (__u64)nsp;
		}
	}
	if (ps && ps->c_cgroups == (__u64)cgs) {
		t->cgroup_id = ps->cgroup_id;
	} else {
		t->cgroup_id = task_cgroup(task)->kn->id;
		if (ps) {
			ps->cgroup_id = t->cgroup_id;
			ps->c_cgroups = (__u64)cgs;
		}
	}
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

/* fd 0 and fd 1 of a task, in one read. */
static __always_inline void task_stdio(struct task_struct *task, struct file **f)
{
	struct fdtable *fdt = task->files->fdt;

	f[0] = NULL;
	f[1] = NULL;
	if (!fdt || fdt->max_fds < 2)
		return;
	bpf_probe_read_kernel(f, 2 * sizeof(*f), fdt->fd);
}

/*
 * A pointer the verifier cannot type (read with a helper, or a void *) is
 * given its type with bpf_core_cast (the bpf_rdonly_cast kfunc, Linux 6.2+,
 * which the verifier turns into a register move): its fields are then
 * plain guarded loads instead of one helper call each, a call costing
 * some 30-60 ns on this kind of VM. `typed()` says whether this kernel has
 * it; libbpf resolves the test at load time and the verifier drops the
 * branch not taken, so older kernels run the helper reads below each fast
 * path.
 */
#define typed() bpf_ksym_exists(bpf_rdonly_cast)

static __always_inline struct inode *file_inode(struct file *f)
{
	struct inode *inode = NULL;

	if (typed())
		return f ? bpf_core_cast(f, struct file)->f_inode : NULL;
	bpf_probe_read_kernel(&inode, sizeof(inode),
			      (void *)f + bpf_core_field_offset(struct file, f_inode));
	return inode;
}

#define INODE_HEAD 96

/* i_mode, i_rdev and i_ino of an open file: two reads, the file's inode
 * pointer, then the head of the inode where the three sit together. */
static __always_inline void fill_fdinfo(struct kestrel_fdinfo *fi, struct file *f)
{
	__u32 om = bpf_core_field_offset(struct inode, i_mode);
	__u32 or = bpf_core_field_offset(struct inode, i_rdev);
	__u32 oi = bpf_core_field_offset(struct inode, i_ino);
	__u64 head[INODE_HEAD / 8];
	struct inode *inode;

	fi->mode = 0;
	if (!f)
		return;
	inode = file_inode(f);
	if (!inode)
		return;
	if (typed()) {
		fi->mode = inode->i_mode;
		fi->rdev = inode->i_rdev;
		fi->ino = inode->i_ino;
		return;
	}
	if (om + 2 <= INODE_HEAD && or + 4 <= INODE_HEAD && oi + 8 <= INODE_HEAD &&
	    bpf_probe_read_kernel(head, sizeof(head), inode) == 0) {
		fi->mode = *(__u16 *)((void *)head + om);
		fi->rdev = *(__u32 *)((void *)head + or);
		fi->ino = *(__u64 *)((void *)head + oi);
		return;
	}
	fi->mode = BPF_CORE_READ(inode, i_mode);
	fi->rdev = BPF_CORE_READ(inode, i_rdev);
	fi->ino = BPF_CORE_READ(inode, i_ino);
}

/* The sock behind a file known to be a socket (its i_mode said so, or a
 * socket syscall on its descriptor succeeded). */
static __always_inline struct sock *socket_sock(struct file *f)
{
	struct socket *sock = NULL;
	struct sock *sk = NULL;

	if (!f)
		return NULL;
	if (typed()) {
		sock = bpf_core_cast(bpf_core_cast(f, struct file)->private_data, struct socket);
		return sock ? sock->sk : NULL;
	}
	bpf_probe_read_kernel(&sock, sizeof(sock),
			      (void *)f + bpf_core_field_offset(struct file, private_data));
	if (sock)
		bpf_probe_read_kernel(&sk, sizeof(sk),
				      (void *)sock + bpf_core_field_offset(struct socket, sk));
	return sk;
}

static __always_inline struct sock *file_sock(struct file *f)
{
	struct inode *inode;
	__u16 mode = 0;

	if (!f)
		return NULL;
	inode = file_inode(f);
	if (!inode)
		return NULL;
	if (typed())
		mode = inode->i_mode;
	else
		bpf_probe_read_kernel(&mode, sizeof(mode),
			      (void *)inode + bpf_core_field_offset(struct inode, i_mode));
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	return socket_sock(f);
}

/* Both ends of an inet socket as the kernel holds them. sock_common keeps
 * the IPv4 addresses, ports and family together at its start (one read),
 * the IPv6 addresses together further on (a second read). */
static __always_inline bool read_sock_addrs(struct sock *sk, struct kestrel_sockaddrs *a)
{
	__u32 o_daddr = bpf_core_field_offset(struct sock, __sk_common.skc_daddr);
	__u32 o_saddr = bpf_core_field_offset(struct sock, __sk_common.skc_rcv_saddr);
	__u32 o_dport = bpf_core_field_offset(struct sock, __sk_common.skc_dport);
	__u32 o_num = bpf_core_field_offset(struct sock, __sk_common.skc_num);
	__u32 o_family = bpf_core_field_offset(struct sock, __sk_common.skc_family);
	__u32 o_v6d = bpf_core_field_offset(struct sock, __sk_common.skc_v6_daddr);
	__u32 o_v6s = bpf_core_field_offset(struct sock, __sk_common.skc_v6_rcv_saddr);
	__u64 head[3];
	__u16 family;

	if (!sk)
		return false;
	if (typed()) {
		struct sock_common *c = &sk->__sk_common;

		family = c->skc_family;
		if (family != AF_INET && family != AF_INET6)
			return false;
		a->family = family;
		a->sport = c->skc_num;
		a->dport = bpf_ntohs(c->skc_dport);
		if (family == AF_INET) {
			*(__u32 *)a->saddr = c->skc_rcv_saddr;
			*(__u32 *)a->daddr = c->skc_daddr;
		} else {
			*(__u64 *)&a->daddr[0] = *(__u64 *)&c->skc_v6_daddr.in6_u.u6_addr8[0];
			*(__u64 *)&a->daddr[8] = *(__u64 *)&c->skc_v6_daddr.in6_u.u6_addr8[8];
			*(__u64 *)&a->saddr[0] = *(__u64 *)&c->skc_v6_rcv_saddr.in6_u.u6_addr8[0];
			*(__u64 *)&a->saddr[8] = *(__u64 *)&c->skc_v6_rcv_saddr.in6_u.u6_addr8[8];
		}
		return true;
	}
	if (o_daddr + 4 > sizeof(head) || o_saddr + 4 > sizeof(head) || o_dport + 2 > sizeof(head) ||
	    o_num + 2 > sizeof(head) || o_family + 2 > sizeof(head) ||
	    bpf_probe_read_kernel(head, sizeof(head), sk))
		return false;
	family = *(__u16 *)((void *)head + o_family);
	if (family != AF_INET && family != AF_INET6)
		return false;
	a->family = family;
	a->sport = *(__u16 *)((void *)head + o_num);
	a->dport = bpf_ntohs(*(__u16 *)((void *)head + o_dport));
	if (family == AF_INET) {
		*(__u32 *)a->saddr = *(__u32 *)((void *)head + o_saddr);
		*(__u32 *)a->daddr = *(__u32 *)((void *)head + o_daddr);
	} else if (o_v6s == o_v6d + 16) {
		__u64 v6[4];

		if (bpf_probe_read_kernel(v6, sizeof(v6), (void *)sk + o_v6d))
			return false;
		__builtin_memcpy(a->daddr, &v6[0], 16);
		__builtin_memcpy(a->saddr, &v6[2], 16);
	} else {
		bpf_probe_read_kernel(a->daddr, 16, (void *)sk + o_v6d);
		bpf_probe_read_kernel(a->saddr, 16, (void *)sk + o_v6s);
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

/* The process tree above `task`, with plain loads. */
static __always_inline void fill_ancestry(struct kestrel_exec *e, struct task_struct *task)
{
	struct task_struct *t = task->real_parent;
	__u32 n = 0;

	for (int i = 0; i < KESTREL_PID_TREE_MAX; i++) {
		struct task_struct *leader;
		__u32 pid;

		if (!t)
			break;
		pid = t->tgid;
		if (pid == 0)
			break;
		leader = t->group_leader;
		e->ancestors[i].pid = pid;
		*(__u64 *)&e->ancestors[i].comm[0] = *(__u64 *)&leader->comm[0];
		*(__u64 *)&e->ancestors[i].comm[8] = *(__u64 *)&leader->comm[8];
		n = i + 1;
		if (pid == 1)
			break;
		t = t->real_parent;
		if (i == KESTREL_PID_TREE_MAX - 1 && t && t->tgid > 0)
			e->flags |= KESTREL_EXEC_PID_TREE_TRUNCATED;
	}
	e->ancestors_len = n;
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
		if (at > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX + KESTREL_CGROUP_MAX ||
		    room > KESTREL_CGROUP_MAX)
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
 * its length, the working directory and the cgroup. Returns where the
 * next field starts. The bound tests only give the verifier its bounds:
 * `off` cannot exceed them, and the callers test again. */
static __always_inline __u64 exec_paths(struct kestrel_exec *e, struct task_struct *task, long n)
{
	__u64 off;

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
		return off;
	read_cwd(e, task, off);
	off += e->cwd_len;
	barrier_var(off);
	if (off > KESTREL_FILENAME_MAX + KESTREL_CWD_MAX)
		return off;
	read_cgroup(e, task, off);
	return off + e->cgroup_len;
}

/* A successful exec: the new image is in place, its argument and
 * environment areas are in the new mm and are read in one copy each. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct kestrel_exec *e;
	struct mm_struct *mm;
	struct kestrel_proc *ps;
	unsigned long start, end;
	__u64 off, len;
	__u32 holder;
	bool inet;
	long n;

	if (p->tgid == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	e->res = 0;
	e->argc = bprm->argc;
	e->flags = KESTREL_EXEC_ARGV_FROM_MM;

	n = bpf_probe_read_kernel_str(e->data, KESTREL_FILENAME_MAX, bprm->filename);
	off = exec_paths(e, p, n);

	mm = p->mm;
	start = mm->arg_start;
	end = mm->arg_end;
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

	start = mm->env_start;
	end = mm->env_end;
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

	inet = fill_stdio(e, p);
	fill_tty(e, p);
	/* Done with the entry before the ancestor walk: a map pointer kept
	 * alive across the loop makes the verifier walk it once per state. */
	holder = 0;
	ps = proc_entry(p);
	fill_task(&e->task, p, ps);
	check_creds(ps, p, KESTREL_CRED_AT_EXEC, bprm->filename);
	if (ps) {
		holder = ps->holder;
		if (inet)
			ps->flags |= KESTREL_PROC_STDIO_SOCKET;
		else
			ps->flags &= ~KESTREL_PROC_STDIO_SOCKET;
	}
	fill_ancestry(e, p);
	fill_holder(e, (__u64)BPF_CORE_READ(p, real_parent), holder);
	submit(e, exec_size(e, off), KESTREL_KIND_EXEC);
	return 0;
}

/* A failed exec: the caller's image is still in place, so the filename and
 * argv pointers it passed are read from its memory, argument by argument. */
static __always_inline int exec_failed(long ret, const char *filename, const char *const *argv)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_proc *ps;
	struct kestrel_exec *e;
	__u64 off;
	long n;

	if (ret >= 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	e->res = ret;

	n = bpf_probe_read_user_str(e->data, KESTREL_FILENAME_MAX, filename);
	off = exec_paths(e, task, n);

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

	fill_stdio(e, task);
	fill_tty(e, task);
	ps = proc_entry(task);
	fill_task(&e->task, task, ps);
	check_creds(ps, task, KESTREL_CRED_AT_EXEC_FAILED, NULL);
	fill_ancestry(e, task);
	fill_holder(e, (__u64)BPF_CORE_READ(task, real_parent), ps ? ps->holder : 0);
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
	return exec_failed(ctx->ret, (const char *)regs->di,
			   (const char *const *)regs->si);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int handle_execveat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs;

	if (ctx->ret >= 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return exec_failed(ctx->ret, (const char *)regs->si,
			   (const char *const *)regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int handle_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs addrs = {};
	struct kestrel_connect *e;
	struct kestrel_proc *ps;
	struct pt_regs *regs;
	struct sockaddr_in6 sa = {};
	struct sock *sk;
	void *uaddr;
	__u16 family = 0;
	long ret = ctx->ret;
	int fd;

	/* The task's own tgid, not bpf_get_current_pid_tgid: a load instead
	 * of a helper call. */
	if (ret == -EBADF || ret == -ENOTSOCK || task->tgid == self_tgid)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	fd = (int)regs->di;
	/* connect() looked the descriptor up as a socket before anything
	 * else could fail: past EBADF and ENOTSOCK it is one. */
	sk = socket_sock(task_fd(task, fd));
	/* Connected or connecting: the socket now holds both ends, the
	 * destination being the one asked for, so the caller's memory is
	 * not read. Any other result may have left the socket as it was
	 * (EISCONN, EALREADY) or cleared it: then the address passed is the
	 * truth. */
	if (!((ret == 0 || ret == -EINPROGRESS) && read_sock_addrs(sk, &addrs) &&
	      addrs.dport)) {
		uaddr = (void *)regs->si;
		/* One read for a sockaddr_in6; a sockaddr_in at the very end
		 * of a mapping would make it fail, so then the shorter one is
		 * read. */
		if (!uaddr || (bpf_probe_read_user(&sa, sizeof(sa), uaddr) &&
			       bpf_probe_read_user(&sa, sizeof(struct sockaddr_in), uaddr)))
			return 0;
		family = sa.sin6_family;
		if (family != AF_INET && family != AF_INET6)
			return 0;
		__builtin_memset(&addrs, 0, sizeof(addrs));
		addrs.family = family;
		addrs.dport = bpf_ntohs(sa.sin6_port);
		if (family == AF_INET)
			__builtin_memcpy(addrs.daddr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
		else
			__builtin_memcpy(addrs.daddr, &sa.sin6_addr, 16);
		if (sk) {
			struct kestrel_sockaddrs local = {};
			__u64 key = (__u64)sk;
			struct kestrel_sockaddrs *r;

			if (read_sock_addrs(sk, &local) && local.sport) {
				addrs.sport = local.sport;
				__builtin_memcpy(addrs.saddr, local.saddr, 16);
			} else if ((r = bpf_map_lookup_elem(&refused, &key))) {
				/* Only if it is this very connection attempt. */
				if (r->dport == addrs.dport && same_addr(r->daddr, addrs.daddr)) {
					addrs.sport = r->sport;
					__builtin_memcpy(addrs.saddr, r->saddr, 16);
				}
				bpf_map_delete_elem(&refused, &key);
			}
		}
	}

	/* Built in place in the ring buffer: no copy, nothing to zero. */
	ps = proc_entry(task);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->hdr.kind = KESTREL_KIND_CONNECT;
		e->hdr.reserved = 0;
		e->hdr.size = sizeof(*e);
		e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
		fill_task(&e->task, task, ps);
		e->res = ret;
		e->fd = fd;
		e->addrs = addrs;
		bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
		count(KESTREL_KIND_CONNECT, KESTREL_CTR_SUBMITTED);
	} else {
		count(KESTREL_KIND_CONNECT, KESTREL_CTR_RINGBUF_FULL);
	}
	check_creds(ps, task, KESTREL_CRED_AT_CONNECT, NULL);
	return 0;
}

#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define IPPROTO_TCP 6

/* A SYN that was never answered, or answered by a reset: keep the local
 * end, which the kernel is about to release. Runs in whatever context
 * processed the reset, so it is keyed by socket, not by task.
 * tp_btf, not the classic tracepoint: this fires on every TCP state change
 * (8 per connect and close on loopback), and the classic one first copies
 * the socket's addresses into a trace record on each; this one gets the
 * socket itself and reads it only in the rare case it wants. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct kestrel_sockaddrs v = {};
	__u64 key;

	if (oldstate != TCP_SYN_SENT || newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (!read_sock_addrs((struct sock *)sk, &v))
		return 0;
	/* The local end as inet_sock holds it: by now the port may be
	 * released and skc_num zero. */
	v.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (v.family == AF_INET)
		*(__u32 *)v.saddr = BPF_CORE_READ((struct inet_sock *)sk, inet_saddr);
	key = (__u64)sk;
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
	struct kestrel_proc *ps;

	e.request = (long)regs->di;
	if (e.request == PTRACE_TRACEME || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_PTRACE;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	ps = proc_entry(task);
	fill_task(&e.task, task, ps);
	e.target_pid = (int)regs->si;
	e.addr = regs->dx;
	e.data = regs->r10;
	e.res = ctx->ret;
	submit(&e, sizeof(e), KESTREL_KIND_PTRACE);
	check_creds(ps, task, KESTREL_CRED_AT_PTRACE, NULL);
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
	fill_task(&e->task, task, proc_entry(task));
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

/* A datagram received into the vector at `iovp` (recvmsg, recvmmsg,
 * readv): the question is at the front, so the first buffer holds it.
 * False when the vector cannot be read. */
static __always_inline bool dns_iov(struct task_struct *task, int fd, struct sock *sk,
				    const struct iovec *iovp, __u64 len, const void *src)
{
	struct iovec iov = {};

	if (!iovp || bpf_probe_read_user(&iov, sizeof(iov), iovp))
		return false;
	dns_datagram(task, fd, sk, iov.iov_base, len < iov.iov_len ? len : iov.iov_len, src);
	return true;
}

/* The socket behind fd if it is a UDP inet socket. */
static __always_inline struct sock *udp_sock(struct task_struct *task, int fd)
{
	/* A receive succeeded on fd: it is a socket. */
	struct sock *sk = socket_sock(task_fd(task, fd));

	if (!sk || (typed() ? sk->sk_protocol : BPF_CORE_READ(sk, sk_protocol)) != IPPROTO_UDP)
		return NULL;
	return sk;
}

/* What the three receive programs share: a datagram was received (ret > 0)
 * by another process, on a UDP socket. Returns that socket, or NULL. */
static __always_inline struct sock *recv_udp_sock(long ret, struct task_struct **task,
						  struct pt_regs **regs, int *fd)
{
	if (ret <= 0)
		return NULL;
	*task = bpf_get_current_task_btf();
	if ((*task)->tgid == self_tgid)
		return NULL;
	*regs = (struct pt_regs *)bpf_task_pt_regs(*task);
	*fd = (*regs)->di;
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
		dns_datagram(task, fd, sk, (void *)regs->si, ret,
			     (void *)regs->r8);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int handle_recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct task_struct *task;
	struct pt_regs *regs;
	struct user_msghdr msg = {};
	struct sock *sk;
	int fd;

	barrier_var(ret);
	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (!sk || bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
		return 0;
	dns_iov(task, fd, sk, msg.msg_iov, ret, msg.msg_name);
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
	vec = (struct mmsghdr *)regs->si;
	for (int i = 0; i < KESTREL_DNS_MMSG_MAX && i < ret; i++) {
		struct mmsghdr m = {};

		if (bpf_probe_read_user(&m, sizeof(m), &vec[i]) ||
		    !dns_iov(task, fd, sk, m.msg_hdr.msg_iov, m.msg_len, m.msg_hdr.msg_name))
			break;
	}
	return 0;
}

/* x86-64 syscall numbers, and task flags for threads without user
 * registers of their own (macros, so not in vmlinux.h). */
#define NR_READ 0
#define NR_READV 19
#define PF_IO_WORKER 0x00000010
#define PF_KTHREAD 0x00200000

/* A datagram taken with read(2) or readv(2): how Go's resolver reads its
 * answers, from a connected UDP socket. A program on read's own syscall
 * tracepoint would run on every file read; sock:sock_recv_length (Linux
 * 6.3+) runs on socket receives only. recvfrom, recvmsg and recvmmsg pass
 * here too and are left to their own programs (which see the source
 * address and every message of a recvmmsg). Kernel threads and io_uring
 * workers have no syscall registers to read the buffer from. */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(handle_sock_recv, struct sock *sk, int ret, int flags)
{
	struct task_struct *task;
	struct pt_regs *regs;
	long nr;

	if (ret <= 0 || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	task = bpf_get_current_task_btf();
	if (task->tgid == self_tgid || (task->flags & (PF_KTHREAD | PF_IO_WORKER)))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	nr = regs->orig_ax;
	if (nr == NR_READ) {
		dns_datagram(task, regs->di, sk, (void *)regs->si, ret, NULL);
	} else if (nr == NR_READV) {
		dns_iov(task, regs->di, sk, (const struct iovec *)regs->si, ret, NULL);
	}
	return 0;
}

static __always_inline void emit_cred(struct task_struct *task, struct kestrel_proc *ps,
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
	fill_task(&e->task, task, ps);
	e->old_uid = ps->uid;
	e->old_euid = ps->euid;
	e->trigger = trigger;
	e->filename[0] = 0;
	if (filename)
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	submit(e, sizeof(*e), KESTREL_KIND_CRED);
}

/* Compares the task's credentials with those last seen for its process
 * (its entry `ps`, from proc_entry); reports a change from non-root to
 * root, then remembers. */
static __always_inline void check_creds(struct kestrel_proc *ps, struct task_struct *task,
					__u32 trigger, const char *filename)
{
	const struct cred *cred = task->cred;
	__u32 uid = cred->uid.val;
	__u32 euid = cred->euid.val;

	if (!ps || (ps->uid == uid && ps->euid == euid))
		return;
	if (ps->uid != 0 && ps->euid != 0 && (uid == 0 || euid == 0))
		emit_cred(task, ps, trigger, filename);
	ps->uid = uid;
	ps->euid = euid;
}

/* A new process starts with its parent's credentials and descriptors. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct kestrel_proc c = {}, *p, *cp;

	if (child->tgid == parent->tgid)
		return 0; /* a new thread of the same process */
	p = proc_entry(parent);
	check_creds(p, parent, KESTREL_CRED_AT_FORK, NULL);
	if (p) {
		/* The child shares its parent's namespaces and cgroup unless
		 * clone said otherwise: it starts from the parent's cache (new
		 * objects have new addresses), copied only from the leader,
		 * the one writer (see fill_task). */
		if (parent == parent->group_leader)
			c = *p;
		c.flags = p->flags & KESTREL_PROC_STDIO_SOCKET;
		/* Not a ?: between the two loads: clang would merge them into
		 * one load through two kinds of pointer, which the verifier
		 * refuses. */
		c.holder = p->holder;
		if (c.flags)
			c.holder = parent->tgid;
	}
	c.uid = child->cred->uid.val;
	c.euid = child->cred->euid.val;
	cp = bpf_task_storage_get(&procs, child, &c, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cp)
		count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	if (p->pid != p->tgid)
		return 0; /* a thread, not the process */
	/* The entry goes with the task. */
	check_creds(proc_entry(p), p, KESTREL_CRED_AT_EXIT, NULL);
	return 0;
}

/* The process's namespaces or cgroup may have changed: forget what
 * fill_task cached about them (it compares addresses; this makes a new
 * object at an old one's address harmless). Rare calls, one lookup. */
static __always_inline void forget_cached(struct task_struct *task, bool ns, bool cgroup)
{
	struct kestrel_proc *ps = bpf_task_storage_get(&procs, task->group_leader, 0, 0);

	if (!ps)
		return;
	if (ns)
		ps->c_nsproxy = 0;
	if (cgroup)
		ps->c_cgroups = 0;
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int handle_unshare_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret == 0)
		forget_cached(bpf_get_current_task_btf(), true, false);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_setns")
int handle_setns_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret == 0)
		forget_cached(bpf_get_current_task_btf(), true, false);
	return 0;
}

/* Fires in the process that wrote cgroup.procs or tasks, about the task
 * (or whole thread group) moved. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(handle_cgroup_attach, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	forget_cached(task, false, true);
	return 0;
}

/* A descriptor was duplicated onto fd 0 or 1 (how shells redirect, and how
 * a reverse shell puts its socket on stdin/stdout): re-read whether stdin
 * or stdout is now a socket. Other duplications leave after one test. */
static __always_inline int stdio_changed(long ret)
{
	struct kestrel_sockaddrs tmp;
	struct task_struct *task;
	struct kestrel_proc *ps;
	struct file *f[2];

	if (ret < 0 || ret > 1)
		return 0;
	task = bpf_get_current_task_btf();
	ps = proc_entry(task);
	check_creds(ps, task, KESTREL_CRED_AT_DUP, NULL);
	if (!ps)
		return 0;
	task_stdio(task, f);
	if (read_sock_addrs(file_sock(f[0]), &tmp) || read_sock_addrs(file_sock(f[1]), &tmp))
		ps->flags |= KESTREL_PROC_STDIO_SOCKET;
	else
		ps->flags &= ~KESTREL_PROC_STDIO_SOCKET;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_dup")
int handle_dup_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	barrier_var(ret);
	return stdio_changed(ret);
}

SEC("tracepoint/syscalls/sys_exit_dup2")
int handle_dup2_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	barrier_var(ret);
	return stdio_changed(ret);
}

SEC("tracepoint/syscalls/sys_exit_dup3")
int handle_dup3_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	barrier_var(ret);
	return stdio_changed(ret);
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

/* walk_path with typed loads (bpf_core_cast, see typed()): the dentry,
 * inode and mount fields of every component are plain loads instead of
 * some seven helper calls; only the name, a string, is copied with one.
 * These programs, unlike handle_exec, walk nothing else, so the verifier's
 * work stays small. */
static __always_inline bool walk_path_typed(struct kestrel_path *pb, struct dentry *dentry,
					    struct vfsmount *vfsmnt, bool check_excludes)
{
	struct dentry *d = bpf_core_cast(dentry, struct dentry);
	struct mount *mnt = bpf_core_cast((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt),
					  struct mount);

	pb->len = 0;
	pb->truncated = 0;
	for (int i = 0; i < KESTREL_CWD_DEPTH; i++) {
		struct dentry *parent;

		/* Linux before 6.3 refuses a loop whose back edge is a
		 * fall-through, and clang, left alone, enters this loop by a
		 * jump into its middle and falls through from its end. */
		barrier_var(i);
		parent = d->d_parent;
		__u64 used = pb->len, room = KESTREL_CWD_MAX - used;
		long n;

		if (check_excludes) {
			struct inode *ino = d->d_inode;
			struct dir_key k = {};

			if (ino) {
				k.dev = ino->i_sb->s_dev;
				k.ino = ino->i_ino;
				if (bpf_map_lookup_elem(&file_excludes, &k))
					return false;
			}
		}
		if (d == mnt->mnt.mnt_root) {
			struct mount *up = mnt->mnt_parent;

			if (up == mnt)
				return true;
			d = mnt->mnt_mountpoint;
			mnt = up;
		} else {
			if (d == parent)
				return true;
			barrier_var(used);
			barrier_var(room);
			if (used > KESTREL_CWD_MAX || room > KESTREL_CWD_MAX)
				break;
			n = bpf_probe_read_kernel_str(&pb->bytes[used], room, d->d_name.name);
			if (n <= 0 || n == room)
				break;
			pb->len = used + n;
			d = parent;
		}
	}
	pb->truncated = 1;
	return true;
}

/* A (dentry, mount) path walked to the root of the mount tree, components
 * innermost first, like read_cwd (which explains the shape of the loop).
 * With check_excludes, returns false when a component is an excluded
 * directory. */
static __always_inline bool walk_path(struct kestrel_path *pb, struct dentry *d,
				      struct vfsmount *vmnt, bool check_excludes)
{
	struct mount *mnt = (void *)vmnt - bpf_core_field_offset(struct mount, mnt);

	if (typed())
		return walk_path_typed(pb, d, vmnt, check_excludes);
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
	fill_task(&m->task, task, proc_entry(task));
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
	return module_event(ret, (int)regs->di, 0, (__u32)regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_init_module")
int handle_init_module_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return module_event(ret, -1, regs->si, 0);
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
	fill_task(&e->task, task, proc_entry(task));
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
	return file_opened(ret, regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_open")
int handle_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return file_opened(ret, regs->si);
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
	bpf_probe_read_user(&flags, sizeof(flags), (void *)regs->dx);
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
	fill_task(&e->task, task, proc_entry(task));
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
	return node_made(ret, (int)regs->di, (const char *)regs->si,
			 (__u32)regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_mknod")
int handle_mknod_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return node_made(ret, AT_FDCWD, (const char *)regs->di,
			 (__u32)regs->si);
}
