// SPDX-License-Identifier: GPL-2.0-only
/*
 * Path syscalls: rename (data_type 82), link and symlink (86), unlink
 * (605) and rmdir (606), every call with its result. The kernel has no
 * tracepoint inside the VFS for these, and kprobes, fentry and BPF-LSM,
 * which see the kernel's own copy of the names, are not available on
 * every target: the syscall exits are the hook, the arguments read from
 * the caller's saved registers (lib/names.h). linkat's program is the file
 * kind's (file.bpf.c).
 */
#include "lib/names.h"

#define AT_REMOVEDIR 0x200

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* rename(old, new) */
SEC("tracepoint/syscalls/sys_exit_rename")
int handle_rename_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_RENAME, 82, AT_FDCWD, (const char *)r->di,
			 AT_FDCWD, (const char *)r->si, 0, false);
}

/* renameat(olddfd, old, newdfd, new) */
SEC("tracepoint/syscalls/sys_exit_renameat")
int handle_renameat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_RENAME, 264, (int)r->di, (const char *)r->si,
			 (int)r->dx, (const char *)r->r10, 0, false);
}

/* renameat2(olddfd, old, newdfd, new, flags) */
SEC("tracepoint/syscalls/sys_exit_renameat2")
int handle_renameat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_RENAME, 316, (int)r->di, (const char *)r->si,
			 (int)r->dx, (const char *)r->r10, (__u32)r->r8, false);
}

/* link(old, new) */
SEC("tracepoint/syscalls/sys_exit_link")
int handle_link_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_LINK, 86, AT_FDCWD, (const char *)r->di, AT_FDCWD,
			 (const char *)r->si, 0, false);
}

/* symlink(target, linkpath) */
SEC("tracepoint/syscalls/sys_exit_symlink")
int handle_symlink_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_LINK, 88, AT_FDCWD, (const char *)r->di, AT_FDCWD,
			 (const char *)r->si, 0, true);
}

/* symlinkat(target, newdfd, linkpath) */
SEC("tracepoint/syscalls/sys_exit_symlinkat")
int handle_symlinkat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return pair_done(ctx->ret, KESTREL_KIND_LINK, 266, AT_FDCWD, (const char *)r->di,
			 (int)r->si, (const char *)r->dx, 0, true);
}

/* unlink(path) */
SEC("tracepoint/syscalls/sys_exit_unlink")
int handle_unlink_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return removal_done(ctx->ret, KESTREL_KIND_UNLINK, 87, AT_FDCWD, (const char *)r->di, 0);
}

/* unlinkat(dfd, path, flags): a directory with AT_REMOVEDIR (606). */
SEC("tracepoint/syscalls/sys_exit_unlinkat")
int handle_unlinkat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();
	__u32 flags = r->dx;

	return removal_done(ctx->ret, flags & AT_REMOVEDIR ? KESTREL_KIND_RMDIR : KESTREL_KIND_UNLINK,
			    263, (int)r->di, (const char *)r->si, flags);
}

/* rmdir(path) */
SEC("tracepoint/syscalls/sys_exit_rmdir")
int handle_rmdir_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = user_regs();

	return removal_done(ctx->ret, KESTREL_KIND_RMDIR, 84, AT_FDCWD, (const char *)r->di, 0);
}
