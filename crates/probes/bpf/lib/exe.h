/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The executable a process runs: the file the kernel mapped at its exec
 * (bprm->file), by identity (device, inode, ctime, memfd and deleted) and
 * by path. The path given to exec says nothing an attacker cannot bend
 * (/proc/self/fd/N, /dev/fd/N/name, a symlink, a relative name); the file
 * itself is what ran.
 */
#ifndef KESTREL_LIB_EXE_H
#define KESTREL_LIB_EXE_H

#include "base.h"
#include "paths.h"

#define KESTREL_TMPFS_MAGIC 0x01021994
#define KESTREL_HUGETLBFS_MAGIC 0x958458f6

/* The inode's ctime moved twice: inode.__i_ctime in 6.6, then the split
 * i_ctime_sec / i_ctime_nsec in 6.11. */
struct inode___pre611 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

static __always_inline __u64 inode_ctime_ns(struct inode *ino)
{
	/* Since 6.13 the top bit of i_ctime_nsec says whether the ctime was
	 * queried (multigrain timestamps), as inode_get_ctime_nsec masks. */
	if (bpf_core_field_exists(ino->i_ctime_sec))
		return (__u64)ino->i_ctime_sec * 1000000000ull + (ino->i_ctime_nsec & 0x7fffffff);
	if (bpf_core_field_exists(struct inode___pre611, __i_ctime)) {
		struct inode___pre611 *o = (void *)ino;

		return (__u64)o->__i_ctime.tv_sec * 1000000000ull + o->__i_ctime.tv_nsec;
	} else {
		struct inode___pre66 *o = (void *)ino;

		return (__u64)o->i_ctime.tv_sec * 1000000000ull + o->i_ctime.tv_nsec;
	}
}

/* The identity of the file exec mapped, into the process table entry (and
 * from there into every struct kestrel_task of the process and of the
 * children it forks). Plain loads: bprm->file is typed. The memfd test
 * needs the name, which the path walk reads: see exe_path. */
static __always_inline void exe_identity(struct kestrel_proc *ps, struct file *f)
{
	struct inode *ino = f->f_inode;
	struct dentry *d = f->f_path.dentry;
	__u32 flags = KESTREL_EXE_KNOWN;

	ps->exe_ino = ino->i_ino;
	ps->exe_dev = ino->i_sb->s_dev;
	ps->exe_ctime_ns = inode_ctime_ns(ino);
	/* No name left: no links (a memfd, an unlinked file), or this name
	 * unlinked (d_unlinked(): unhashed and not a root). */
	if (ino->__i_nlink == 0 || (!d->d_hash.pprev && d->d_parent != d))
		flags |= KESTREL_EXE_DELETED;
	ps->exe_flags = flags;
}

/* A scratch path for the walk, copied into the record at its real length. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_path);
} exe_scratch SEC(".maps");

#define EXE_PATH_MEMFD (1 << 16)

/* The path of the file `file` (an address: exec's bprm->file) walked like
 * the working directory, at e->data[off]; returns its length (exe_len),
 * with EXE_PATH_MEMFD added when the file looks like a memfd_create file
 * (a shmem or hugetlbfs file named "memfd:..." at the root of its mount).
 * Sets KESTREL_EXEC_EXE_TRUNCATED when the walk stopped short. A global
 * function: the verifier checks it once, apart from handle_exec's states. */
__noinline int exe_path(struct kestrel_exec *e, __u64 file, __u64 off)
{
	struct file *f = (struct file *)file;
	struct kestrel_path *pb;
	struct dentry *d;
	__u32 zero = 0;
	__u64 len;
	__u32 magic;
	char head[8] = {};

	if (!e || !f || off > KESTREL_FILENAME_MAX)
		return 0;
	pb = bpf_map_lookup_elem(&exe_scratch, &zero);
	if (!pb)
		return 0;
	d = BPF_CORE_READ(f, f_path.dentry);
	walk_path(pb, d, BPF_CORE_READ(f, f_path.mnt), false);
	if (pb->truncated)
		e->flags |= KESTREL_EXEC_EXE_TRUNCATED;
	/* A pseudo file (a memfd: alloc_file_pseudo) is a dentry of its own,
	 * its own parent, where the walk stops before taking a name: named
	 * alone, as d_path does ("/memfd:NAME"). */
	if (pb->len == 0 && !pb->truncated && BPF_CORE_READ(d, d_parent) == d) {
		long n = bpf_probe_read_kernel_str(pb->bytes, KESTREL_EXE_MAX,
						   BPF_CORE_READ(d, d_name.name));

		if (n > 1)
			pb->len = n;
	}
	len = pb->len;
	barrier_var(len);
	if (len > KESTREL_EXE_MAX)
		return 0;
	if (len && bpf_probe_read_kernel(&e->data[off], len, pb->bytes))
		return 0;
	magic = BPF_CORE_READ(d, d_sb, s_magic);
	if ((magic == KESTREL_TMPFS_MAGIC || magic == KESTREL_HUGETLBFS_MAGIC) &&
	    BPF_CORE_READ(d, d_parent) == BPF_CORE_READ(d, d_parent, d_parent) &&
	    bpf_probe_read_kernel_str(head, sizeof(head), BPF_CORE_READ(d, d_name.name)) > 6 &&
	    head[0] == 'm' && head[1] == 'e' && head[2] == 'm' && head[3] == 'f' && head[4] == 'd' &&
	    head[5] == ':')
		return len | EXE_PATH_MEMFD;
	return len;
}

#endif /* KESTREL_LIB_EXE_H */
