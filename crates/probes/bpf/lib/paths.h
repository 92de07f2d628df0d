/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Paths walked in the kernel, component by component, up to the root of
 * the mount tree; and the directories under which file creations are not
 * reported, checked on the way.
 */
#ifndef KESTREL_LIB_PATHS_H
#define KESTREL_LIB_PATHS_H

#include "base.h"

/* Exclusions for file creation: directories (by device and inode, filled
 * in by user space) under which creations are not reported. Checked on
 * every component of the walk, so a busy directory costs a few lookups
 * and no ring buffer space.
 *
 * An excluded directory is the one the agent's own mount namespace shows
 * under the excluded path, so the check follows the new file's ancestors
 * on its own filesystem, and crosses up from a mount to the directory it
 * covers only for mounts of the agent's namespace. A filesystem mounted
 * over an excluded directory in another namespace (`unshare -Urm` and a
 * tmpfs: any user can) is not that directory, and what is created in it
 * is reported. */
struct dir_key {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KESTREL_FILE_EXCLUDES_MAX);
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
			if (mnt->mnt_ns->ns.inum != self_mnt_ns)
				check_excludes = false;
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
			if (BPF_CORE_READ(mnt, mnt_ns, ns.inum) != self_mnt_ns)
				check_excludes = false;
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

#endif /* KESTREL_LIB_PATHS_H */
