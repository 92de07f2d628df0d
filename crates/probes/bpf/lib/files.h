/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Open files: a task's descriptors and the inodes behind them.
 */
#ifndef KESTREL_LIB_FILES_H
#define KESTREL_LIB_FILES_H

#include "base.h"

#define S_IFMT 00170000
#define S_IFSOCK 0140000

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

#endif /* KESTREL_LIB_FILES_H */
