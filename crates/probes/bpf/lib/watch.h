/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Watched paths (data_types 608, 609, 90, 92): does a file, or a name
 * passed to a path syscall, fall under one of the watched patterns?
 *
 * A pattern is matched on a path's first components, by name, so a file
 * replaced by rename, a home directory made after the agent started, or a
 * container's own /etc are matched like the host's (the path is the one
 * from the root of the file's mount tree: a container's /etc/shadow is
 * /etc/shadow). Names are compared by length and first 16 bytes
 * (struct kestrel_watch_name): a longer name differing only after its 16th
 * byte matches too (an extra event, never a missed one).
 *
 * Cost: every successful open walks up from the file to the root of its
 * mount tree (dentry and mount pointers only, plain typed loads) and
 * compares its first component with the few first components the
 * patterns have (etc, root, home, var, usr for the defaults). Only a path
 * that passes that reads its other names and tries its patterns.
 */
#ifndef KESTREL_LIB_WATCH_H
#define KESTREL_LIB_WATCH_H

#include "base.h"
#include "ringbuf.h"
#include "task.h"
#include "procs.h"
#include "paths.h"
#include "files.h"
#include "moves.h"

/* Two slots; watch_current's low bit says which one is in use (user space
 * writes the other one, then counts the change, so a program never sees
 * half a change). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct kestrel_watch_set);
} watch_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} watch_current SEC(".maps");

/* The components of the path being matched, outermost first. */
struct watch_levels {
	__u32 n; /* components the path has (more than DEPTH are not kept) */
	__u32 reserved;
	struct kestrel_watch_name lv[KESTREL_WATCH_DEPTH];
	/* The walk's last DEPTH dentries, and how many it counted. Kept in
	 * the map, not in registers: a count the verifier does not know
	 * exactly lets it merge the walk's branches instead of following
	 * every combination of mount crossings. */
	__u64 ring[KESTREL_WATCH_DEPTH];
	__u32 walked;
	__u32 reserved2;
	/* The name watch_append is reading, in the map for the same reason. */
	struct kestrel_watch_name cur;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct watch_levels);
} watch_scratch SEC(".maps");

/* The file behind descriptor fd. With typed loads, the slot of the fd
 * array is read as the first member of a struct kiocb (ki_filp, a
 * struct file *): one guarded load where task_fd calls a helper, on the
 * path every open takes. */
static __always_inline struct file *watch_task_fd(struct task_struct *task, unsigned int fd)
{
	if (typed()) {
		struct fdtable *fdt = task->files->fdt;

		if (!fdt || fd >= fdt->max_fds)
			return NULL;
		__u64 slot = (__u64)fdt->fd + (__u64)fd * sizeof(void *);

		return bpf_core_cast((void *)slot, struct kiocb)->ki_filp;
	}
	return task_fd(task, fd);
}

/* Kernels before 6.14 keep a short name in d_iname. */
struct dentry___iname {
	unsigned char d_iname[32];
} __attribute__((preserve_access_index));

static __always_inline __u64 low_bytes(__u32 n)
{
	return n >= 8 ? ~0ULL : (1ULL << (n * 8)) - 1;
}

static __always_inline void name_mask(struct kestrel_watch_name *k)
{
	__u32 len = k->len;

	k->w[0] &= low_bytes(len);
	k->w[1] &= len > 8 ? low_bytes(len - 8) : 0;
}

/* A dentry's name as a watch name. A name shorter than the dentry's inline
 * buffer is always kept there (longer ones are allocated apart, and a
 * rename copies a short name in), so the typed path reads it with loads. */
static __always_inline void dentry_name(struct dentry *dentry, struct kestrel_watch_name *k)
{
	k->kind = KESTREL_WATCH_EXACT;
	k->m[0] = 0;
	k->m[1] = 0;
	if (typed()) {
		struct dentry *d = bpf_core_cast(dentry, struct dentry);
		__u32 len = d->d_name.len;

		k->len = len;
		if (bpf_core_field_exists(d->d_shortname) &&
		    len < bpf_core_field_size(d->d_shortname)) {
			k->w[0] = d->d_shortname.words[0];
			k->w[1] = d->d_shortname.words[1];
		} else if (!bpf_core_field_exists(d->d_shortname) &&
			   len < bpf_core_field_size(((struct dentry___iname *)d)->d_iname)) {
			struct dentry___iname *o = (void *)d;

			k->w[0] = *(__u64 *)&o->d_iname[0];
			k->w[1] = *(__u64 *)&o->d_iname[8];
		} else {
			k->w[0] = 0;
			k->w[1] = 0;
			bpf_probe_read_kernel(k->w, sizeof(k->w), d->d_name.name);
		}
	} else {
		k->len = BPF_CORE_READ(dentry, d_name.len);
		k->w[0] = 0;
		k->w[1] = 0;
		bpf_probe_read_kernel(k->w, sizeof(k->w), BPF_CORE_READ(dentry, d_name.name));
	}
	name_mask(k);
}

static __always_inline bool name_matches(const struct kestrel_watch_name *p,
					 const struct kestrel_watch_name *k)
{
	if ((k->w[0] & p->m[0]) != p->w[0] || (k->w[1] & p->m[1]) != p->w[1])
		return false;
	return p->kind == KESTREL_WATCH_EXACT ? k->len == p->len : k->len >= p->len;
}

/* Walks up from (dentry, mount) to the root of the mount tree, keeping the
 * last DEPTH components seen in lv->ring (the first ones, once at the
 * root) and their number in lv->walked. False when the walk did not reach
 * the root. */
static __always_inline bool watch_walk(struct dentry *dentry, struct vfsmount *vfsmnt,
				       struct watch_levels *lv)
{
	lv->walked = 0;
	if (typed()) {
		struct dentry *d = bpf_core_cast(dentry, struct dentry);
		struct mount *mnt = bpf_core_cast(
			(void *)vfsmnt - bpf_core_field_offset(struct mount, mnt), struct mount);

		for (int i = 0; i < KESTREL_WATCH_WALK; i++) {
			barrier_var(i);
			if (d == mnt->mnt.mnt_root) {
				struct mount *up = mnt->mnt_parent;

				if (up == mnt)
					return true;
				d = mnt->mnt_mountpoint;
				mnt = up;
				continue;
			}
			struct dentry *parent = d->d_parent;

			if (d == parent)
				return true;
			lv->ring[lv->walked & (KESTREL_WATCH_DEPTH - 1)] = (__u64)d;
			lv->walked++;
			d = parent;
		}
		return false;
	}
	struct dentry *d = dentry;
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);

	for (int i = 0; i < KESTREL_WATCH_WALK; i++) {
		barrier_var(i);
		if (d == BPF_CORE_READ(mnt, mnt.mnt_root)) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (up == mnt)
				return true;
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			continue;
		}
		struct dentry *parent = BPF_CORE_READ(d, d_parent);

		if (d == parent)
			return true;
		lv->ring[lv->walked & (KESTREL_WATCH_DEPTH - 1)] = (__u64)d;
		lv->walked++;
		d = parent;
	}
	return false;
}

/* The walked components' names into lv->lv, outermost first. */
static __always_inline void watch_names(struct watch_levels *lv, int from)
{
	__u32 n = lv->walked;

#pragma unroll
	for (int j = 0; j < KESTREL_WATCH_DEPTH; j++) {
		if (j >= from && j < n)
			dentry_name((struct dentry *)lv->ring[(n - 1 - j) & (KESTREL_WATCH_DEPTH - 1)],
				    &lv->lv[j]);
	}
	lv->n = n;
}

/* Does pattern p match the levels? With `below` k > 0 instead: could it
 * match a path that starts with the levels' first k components (a pattern
 * of k names or fewer must match them all, and then matches everything
 * below; a longer one its first k)? A global function: the verifier checks
 * it once, not once per pattern and caller. */
__noinline int kestrel_watch_pattern(const struct kestrel_watch_pattern *p,
				     const struct watch_levels *lv, __u32 below)
{
	if (!p || !lv)
		return below != 0;
	__u32 n = p->n;

	if (!below && (n > lv->n || n > KESTREL_WATCH_DEPTH))
		return 0;
	for (int j = 0; j < KESTREL_WATCH_DEPTH; j++) {
		if (j >= n || (below && j >= below))
			return 1;
		if (!name_matches(&p->c[j], &lv->lv[j]))
			return 0;
	}
	return 1;
}

/* Patterns pat[start..end) against the levels (`below` as above). */
static __always_inline bool watch_range(const struct kestrel_watch_set *s, __u32 start, __u32 end,
					const struct watch_levels *lv, __u32 below)
{
	for (__u32 i = 0; i < KESTREL_WATCH_MAX; i++) {
		__u64 k = (__u64)start + i;

		if (k >= end || k >= KESTREL_WATCH_MAX)
			return false;
		/* Masked after the barrier, so that the compiler keeps the
		 * mask the verifier needs to bound the index. */
		barrier_var(k);
		k &= KESTREL_WATCH_MAX - 1;
		if (kestrel_watch_pattern(&s->pat[k], lv, below))
			return true;
	}
	return false;
}

/* The set in use, or NULL when nothing is watched; *version is the count
 * of sets user space has put in force (its low bit is the slot). */
static __always_inline const struct kestrel_watch_set *watch_set_v(__u32 *version)
{
	__u32 zero = 0;
	__u32 *cur = bpf_map_lookup_elem(&watch_current, &zero);
	const struct kestrel_watch_set *s;
	__u32 slot;

	if (!cur)
		return NULL;
	*version = *cur;
	slot = *version & 1;
	s = bpf_map_lookup_elem(&watch_sets, &slot);
	if (!s || (!s->tops && s->any_end <= s->any_start))
		return NULL;
	return s;
}

static __always_inline const struct kestrel_watch_set *watch_set(void)
{
	__u32 version;

	return watch_set_v(&version);
}

/* Levels filled: does a pattern of the set in use match them? With
 * `below` k > 0: could one match below the directory of their first k
 * components (when not, no file in it is watched, whatever its name)?
 * Global, so checked once. */
__noinline int kestrel_watch_levels(const struct watch_levels *lv, __u32 below)
{
	const struct kestrel_watch_set *s = watch_set();

	if (!s || !lv || lv->n == 0)
		return below != 0;
	__u32 tops = s->tops;

	for (int t = 0; t < KESTREL_WATCH_TOPS; t++) {
		if (t >= tops)
			break;
		const struct kestrel_watch_top *top = &s->top[t];

		if (name_matches(&top->name, &lv->lv[0]))
			return watch_range(s, top->start, top->end, lv, below) ||
			       watch_range(s, s->any_start, s->any_end, lv, below);
	}
	return watch_range(s, s->any_start, s->any_end, lv, below);
}

/*
 * Verdicts per directory: a directory no pattern can match below (all of
 * /tmp, /proc, /usr/include with the defaults) is remembered, per CPU, so
 * the next open in it skips the walk to the root and the name tests. An
 * entry names the directory by its dentry and mount, checked against the
 * directory's inode number (a freed dentry's memory reused for another
 * directory of the same file system has another inode: directories have
 * no hard links, and a removed one bumps the generation). It holds while
 * no path can have changed: for one value of watch_gen (lib/moves.h) and
 * of the watched set's version. An open running beside such a call may be
 * judged by the path before it, as the walk itself would be.
 */
#define KESTREL_WATCH_CACHE_WAYS 16

struct watch_verdict {
	__u64 dir;  /* struct dentry * */
	__u64 mnt;  /* struct vfsmount * */
	__u64 ino;  /* the directory's inode number */
	__u64 gen;  /* watch_gen << 32 | the set's version */
};

struct watch_verdicts {
	struct watch_verdict e[KESTREL_WATCH_CACHE_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct watch_verdicts);
} watch_cache SEC(".maps");

/* The key of the directory holding (dentry, mount), and the slot it
 * would have; NULL when it has none to remember (the file is a mount's
 * root, or the map is missing). */
static __always_inline struct watch_verdict *watch_dir_key(struct dentry *dentry,
							   struct vfsmount *vfsmnt, __u32 version,
							   struct watch_verdict *key)
{
	struct watch_verdicts *c;
	struct dentry *dir;
	__u32 zero = 0;

	if (typed()) {
		struct dentry *d = bpf_core_cast(dentry, struct dentry);
		struct vfsmount *m = bpf_core_cast(vfsmnt, struct vfsmount);

		if (d == m->mnt_root)
			return NULL;
		dir = d->d_parent;
		key->ino = bpf_core_cast(dir, struct dentry)->d_inode->i_ino;
	} else {
		if (dentry == BPF_CORE_READ(vfsmnt, mnt_root))
			return NULL;
		dir = BPF_CORE_READ(dentry, d_parent);
		key->ino = BPF_CORE_READ(dir, d_inode, i_ino);
	}
	key->dir = (__u64)dir;
	key->mnt = (__u64)vfsmnt;
	key->gen = (__u64)watch_gen << 32 | version;
	c = bpf_map_lookup_elem(&watch_cache, &zero);
	if (!c)
		return NULL;
	/* Indexed by the inode number: the verifier allows no shift of a
	 * pointer. */
	return &c->e[(key->ino ^ (key->ino >> 4)) & (KESTREL_WATCH_CACHE_WAYS - 1)];
}

/* The generation last: a program that preempted this one mid-way leaves
 * an entry whose generation is this one's or its own, never a mix that
 * passes for a newer verdict. */
static __always_inline void watch_dir_remember(struct watch_verdict *slot,
					       const struct watch_verdict *key)
{
	slot->gen = 0;
	slot->dir = key->dir;
	slot->mnt = key->mnt;
	slot->ino = key->ino;
	barrier();
	slot->gen = key->gen;
}

static __always_inline bool watch_dir_known(const struct watch_verdict *slot,
					    const struct watch_verdict *key)
{
	return slot->dir == key->dir && slot->mnt == key->mnt && slot->ino == key->ino &&
	       slot->gen == key->gen;
}

/* The first component of the path of (dentry, mount) (the file itself
 * when it is the root), or NULL when the walk does not reach the root. The
 * gate every open goes through, so it keeps nothing but the last dentry:
 * no count, no stores. */
static __always_inline struct dentry *watch_top(struct dentry *dentry, struct vfsmount *vfsmnt)
{
	if (typed()) {
		struct dentry *d = bpf_core_cast(dentry, struct dentry), *top = d;
		struct mount *mnt = bpf_core_cast(
			(void *)vfsmnt - bpf_core_field_offset(struct mount, mnt), struct mount);

		for (int i = 0; i < KESTREL_WATCH_WALK; i++) {
			barrier_var(i);
			if (d == mnt->mnt.mnt_root) {
				struct mount *up = mnt->mnt_parent;

				if (up == mnt)
					return top;
				d = mnt->mnt_mountpoint;
				mnt = up;
				continue;
			}
			struct dentry *parent = d->d_parent;

			if (d == parent)
				return top;
			top = d;
			d = parent;
		}
		return NULL;
	}
	struct dentry *d = dentry, *top = dentry;
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);

	for (int i = 0; i < KESTREL_WATCH_WALK; i++) {
		barrier_var(i);
		if (d == BPF_CORE_READ(mnt, mnt.mnt_root)) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (up == mnt)
				return top;
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			continue;
		}
		struct dentry *parent = BPF_CORE_READ(d, d_parent);

		if (d == parent)
			return top;
		top = d;
		d = parent;
	}
	return NULL;
}

/* Is the file at (dentry, mount) watched? */
static __always_inline bool watched_dentry(struct dentry *dentry, struct vfsmount *mnt)
{
	struct watch_verdict key, *slot;
	const struct kestrel_watch_set *s;
	struct kestrel_watch_name top;
	struct watch_levels *lv;
	struct dentry *t;
	__u32 zero = 0, version = 0;

	s = watch_set_v(&version);
	if (!s)
		return false;
	slot = watch_dir_key(dentry, mnt, version, &key);
	if (slot && watch_dir_known(slot, &key))
		return false; /* the common case: a directory seen before */
	t = watch_top(dentry, mnt);
	if (!t)
		return false;
	if (s->any_end <= s->any_start) {
		dentry_name(t, &top);
		if (!((s->top_bits >> KESTREL_WATCH_BIT(top.len, top.w[0])) & 1)) {
			/* No pattern starts there: nothing below the file's
			 * directory either, unless the file is the first name. */
			if (slot && t != dentry)
				watch_dir_remember(slot, &key);
			return false;
		}
	}
	lv = bpf_map_lookup_elem(&watch_scratch, &zero);
	if (!lv)
		return false;
	if (!watch_walk(dentry, mnt, lv) || lv->walked == 0)
		return false;
	watch_names(lv, 0);
	if (kestrel_watch_levels(lv, 0))
		return true;
	/* A file right under the first name (/etc/hostname) is not tried: a
	 * first name that passed the test above starts a pattern, so its
	 * directory is always open below. */
	if (slot && lv->walked >= 3 && !kestrel_watch_levels(lv, lv->walked - 1))
		watch_dir_remember(slot, &key);
	return false;
}

/* Appends the components of the name at s[0..] (a user string copied into
 * the record) to the levels: "." is skipped, ".." goes up. Symbolic links
 * are not followed. The depth is kept in lv->n (see watch_levels). */
#define WATCH_LOAD(x) (*(volatile typeof(x) *)&(x))

static __always_inline void watch_append(struct watch_levels *lv, const char *s, __u32 size)
{
	struct kestrel_watch_name *k = &lv->cur;

	k->len = 0;
	k->kind = KESTREL_WATCH_EXACT;
	k->w[0] = 0;
	k->w[1] = 0;
	k->m[0] = 0;
	k->m[1] = 0;
	/* Every value carried from one byte to the next is loaded from the
	 * map (volatile, so the compiler keeps it there): the verifier then
	 * knows nothing exact of them and checks each iteration once. */
	for (__u32 i = 0; i < size; i++) {
		/* As in walk_path: Linux before 6.3 refuses a loop entered in
		 * its middle with a fall-through back edge. */
		barrier_var(i);
		char c = s[i & 255];
		__u32 len = WATCH_LOAD(k->len);

		if (c == '/' || c == 0) {
			__u64 w0 = WATCH_LOAD(k->w[0]);

			if (len == 1 && (w0 & 0xff) == '.') {
				/* "." */
			} else if (len == 2 && (w0 & 0xffff) == 0x2e2e) {
				__u32 depth = WATCH_LOAD(lv->n);

				if (depth > 0)
					WATCH_LOAD(lv->n) = depth - 1;
			} else if (len > 0) {
				__u32 depth = WATCH_LOAD(lv->n);

				if (depth < KESTREL_WATCH_DEPTH)
					lv->lv[depth & (KESTREL_WATCH_DEPTH - 1)] = *k;
				WATCH_LOAD(lv->n) = depth + 1;
			}
			WATCH_LOAD(k->len) = 0;
			WATCH_LOAD(k->w[0]) = 0;
			WATCH_LOAD(k->w[1]) = 0;
			if (c == 0)
				break;
			continue;
		}
		if (len < 8)
			WATCH_LOAD(k->w[0]) |= (__u64)(__u8)c << ((len & 7) * 8);
		else if (len < 16)
			WATCH_LOAD(k->w[1]) |= (__u64)(__u8)c << ((len & 7) * 8);
		WATCH_LOAD(k->len) = len + 1;
	}
}

/* Is the name `name` (copied from user space, NUL-terminated within 256
 * bytes), relative to (dir, mount) unless absolute, watched? */
static __always_inline bool watched_name(struct dentry *dir, struct vfsmount *mnt, const char *name)
{
	const struct kestrel_watch_set *s = watch_set();
	struct watch_levels *lv;
	__u32 zero = 0;

	if (!s)
		return false;
	lv = bpf_map_lookup_elem(&watch_scratch, &zero);
	if (!lv)
		return false;
	lv->walked = 0;
	if (name[0] != '/' && !watch_walk(dir, mnt, lv))
		return false;
	watch_names(lv, 0);
	watch_append(lv, name, 256);
	return kestrel_watch_levels(lv, 0);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_watched);
} watched_scratch SEC(".maps");

#define WATCH_O_ACCMODE 03
#define WATCH_O_CREAT 0100
#define WATCH_O_TRUNC 01000
#define WATCH_O_PATH 010000000
#define WATCH_S_IFDIR 0040000

static __always_inline struct kestrel_watched *watched_record(void)
{
	__u32 zero = 0;
	struct kestrel_watched *e = bpf_map_lookup_elem(&watched_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_WATCHED, KESTREL_CTR_ERROR);
		return NULL;
	}
	e->hdr.kind = KESTREL_KIND_WATCHED;
	e->hdr.size = sizeof(*e);
	e->rel[0] = 0;
	e->flags = 0;
	e->path.len = 0;
	e->path.truncated = 0;
	return e;
}

static __always_inline void watched_send(struct kestrel_watched *e, struct task_struct *task,
					 struct super_block *sb)
{
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->sb_id[0] = 0;
	if (sb)
		bpf_probe_read_kernel_str(e->sb_id, sizeof(e->sb_id), &sb->s_id);
	submit(e, sizeof(*e), KESTREL_KIND_WATCHED);
}

/* An open that returned `fd` for the file f: 608 or 609 when f is a
 * watched file. A path opened (O_PATH) is neither read nor written;
 * directories are listed, not read. Called for every successful open, so
 * the unwatched case is the walk up and one comparison per first
 * component of the patterns. */
static __always_inline void watch_open(struct task_struct *task, struct file *f, long fd,
				       __u64 flags, __u32 op, bool created)
{
	struct kestrel_watched *e;
	struct dentry *d;
	struct vfsmount *m;

	if (flags & WATCH_O_PATH)
		return;
	if (typed()) {
		struct file *tf = bpf_core_cast(f, struct file);

		d = tf->f_path.dentry;
		m = tf->f_path.mnt;
	} else {
		d = BPF_CORE_READ(f, f_path.dentry);
		m = BPF_CORE_READ(f, f_path.mnt);
	}
	if (!watched_dentry(d, m))
		return;
	struct inode *inode = BPF_CORE_READ(f, f_inode);

	if ((BPF_CORE_READ(inode, i_mode) & 0170000) == WATCH_S_IFDIR)
		return;
	e = watched_record();
	if (!e)
		return;
	if (!walk_path(&e->path, d, m, false))
		return;
	e->res = fd;
	e->op = op;
	e->open_flags = flags;
	if ((flags & WATCH_O_ACCMODE) || (flags & (WATCH_O_TRUNC | WATCH_O_CREAT)))
		e->flags |= KESTREL_WATCHED_WRITE;
	if (created)
		e->flags |= KESTREL_WATCHED_CREATED;
	watched_send(e, task, BPF_CORE_READ(inode, i_sb));
}

#endif /* KESTREL_LIB_WATCH_H */
