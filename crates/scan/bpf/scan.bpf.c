// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kestrel's on-demand kernel reader for the anti-rootkit scan.
 *
 * Nothing is attached: user space runs the one program with
 * BPF_PROG_TEST_RUN, in its own task context, passing the request in the
 * raw tracepoint arguments (ctx->args[]) and collecting the answer from the
 * one-entry `out` map. The decision about what the bytes mean is made in
 * user space, where it can be unit tested.
 *
 *   args[0] = OP_READ:  copy args[2] (<= CHUNK) bytes at kernel address
 *                       args[1] into out.data.
 *   args[0] = OP_FILE:  for the scanner's own file descriptor args[1],
 *                       report the operation pointers of the open file
 *                       (f_op->iterate_shared, inode->i_op->lookup, and the
 *                       seq_file's op->show when it is a seq_file).
 *   args[0] = OP_KPROBE: the struct kprobe whose hlist node (args[2] == 0)
 *                       or list node (args[2] == 1) is at args[1]: its
 *                       address, probed address, handlers and next nodes,
 *                       so user space can walk kprobe_table.
 *   args[0] = OP_MODLAYOUT: the offsets of the module address tree and of
 *                       struct module's name and memory areas in the
 *                       running kernel, so user space can walk mod_tree.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define CHUNK 4096
#define OP_READ 1
#define OP_FILE 2
#define OP_KPROBE 3
#define OP_MODLAYOUT 4

#define MODLAYOUT_TREE 1
#define MODLAYOUT_MEM 2    /* struct module_memory mem[] (6.4+) */
#define MODLAYOUT_LAYOUT 4 /* core_layout and init_layout */

/* Only the member the scan reads; CO-RE finds it in the running kernel's
 * struct kretprobe (absent from vmlinux.h: this host has no kprobes). */
struct kretprobe___kestrel {
	struct kprobe kp;
	void *handler;
} __attribute__((preserve_access_index));

/* The module address tree (CONFIG_MODULES_TREE_LOOKUP), declared here
 * because this host's kernel, built without modules, has none of these
 * types: CO-RE finds them in the running kernel's BTF, and where they are
 * missing the branch that uses them is dead code. */
struct mod_tree_node___kestrel {
	struct module *mod;
	struct latch_tree_node node;
} __attribute__((preserve_access_index));

struct mod_tree_root___kestrel {
	struct latch_tree_root root;
} __attribute__((preserve_access_index));

/* Linux 6.4+: one memory area per type (text, data, rodata...). */
struct module_memory___kestrel {
	void *base;
	unsigned int size;
	struct mod_tree_node___kestrel mtn;
} __attribute__((preserve_access_index));

struct module___v64 {
	char name[56];
	struct module_memory___kestrel mem[7];
} __attribute__((preserve_access_index));

/* Before 6.4: a core and an init area. */
struct module_layout___kestrel {
	void *base;
	unsigned int size;
	struct mod_tree_node___kestrel mtn;
} __attribute__((preserve_access_index));

struct module___pre64 {
	char name[56];
	struct module_layout___kestrel core_layout;
	struct module_layout___kestrel init_layout;
} __attribute__((preserve_access_index));

struct out {
	__s64 err;
	__u64 len;
	/* OP_FILE answers */
	__u64 file;
	__u64 f_op;
	__u64 iterate_shared;
	__u64 i_op;
	__u64 lookup;
	__u64 private_data;
	__u64 seq_op;
	__u64 seq_show;
	/* OP_KPROBE answers */
	__u64 kp;
	__u64 kp_addr;
	__u64 kp_pre;
	__u64 kp_post;
	__u64 kp_ret_handler;
	__u64 kp_hnext;
	__u64 kp_list;
	__u64 kp_lnext;
	__u8 data[CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct out);
} out SEC(".maps");

static __always_inline int do_read(struct out *o, __u64 addr, __u64 len)
{
	if (len > CHUNK)
		len = CHUNK;
	o->len = len;
	/* The size must be provably in [1, CHUNK] for the verifier. */
	len &= (CHUNK * 2 - 1);
	if (len == 0 || len > CHUNK)
		return 0;
	o->err = bpf_probe_read_kernel(o->data, len, (const void *)addr);
	return 0;
}

static __always_inline int do_file(struct out *o, __u64 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fdarr = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	const struct file_operations *fop;
	struct inode *inode;
	const struct inode_operations *iop;
	void *priv;

	if (fd >= max) {
		o->err = -9; /* EBADF */
		return 0;
	}
	if (bpf_probe_read_kernel(&file, sizeof(file), &fdarr[fd]) || !file) {
		o->err = -9;
		return 0;
	}
	o->file = (__u64)file;
	fop = BPF_CORE_READ(file, f_op);
	o->f_op = (__u64)fop;
	if (fop)
		o->iterate_shared = (__u64)BPF_CORE_READ(fop, iterate_shared);
	inode = BPF_CORE_READ(file, f_inode);
	iop = BPF_CORE_READ(inode, i_op);
	o->i_op = (__u64)iop;
	if (iop)
		o->lookup = (__u64)BPF_CORE_READ(iop, lookup);
	priv = BPF_CORE_READ(file, private_data);
	o->private_data = (__u64)priv;
	/* Only meaningful when user space knows the file is a seq_file
	 * (/proc/net/tcp & co.); for other files these stay whatever the
	 * bytes there happen to be and user space ignores them. */
	if (priv) {
		struct seq_file *sf = priv;
		const struct seq_operations *sop = BPF_CORE_READ(sf, op);

		o->seq_op = (__u64)sop;
		if (sop)
			o->seq_show = (__u64)BPF_CORE_READ(sop, show);
	}
	o->err = 0;
	return 0;
}

static __always_inline int do_kprobe(struct out *o, __u64 node, __u64 is_list)
{
	struct kprobe *kp;

	/* Kernels without kprobes may lack the type: the branch is then
	 * dead code and the program still loads. */
	if (!bpf_core_type_exists(struct kprobe))
		return 0;
	if (is_list)
		kp = (void *)(node - bpf_core_field_offset(struct kprobe, list));
	else
		kp = (void *)(node - bpf_core_field_offset(struct kprobe, hlist));
	o->kp = (__u64)kp;
	o->kp_addr = (__u64)BPF_CORE_READ(kp, addr);
	o->kp_pre = (__u64)BPF_CORE_READ(kp, pre_handler);
	o->kp_post = (__u64)BPF_CORE_READ(kp, post_handler);
	o->kp_hnext = (__u64)BPF_CORE_READ(kp, hlist.next);
	o->kp_list = (__u64)kp + bpf_core_field_offset(struct kprobe, list);
	o->kp_lnext = (__u64)BPF_CORE_READ(kp, list.next);
	/* Meaningful only when kp is the kp of a kretprobe. */
	if (bpf_core_type_exists(struct kretprobe___kestrel)) {
		struct kretprobe___kestrel *rp =
			(void *)((__u64)kp - bpf_core_field_offset(struct kretprobe___kestrel, kp));
		o->kp_ret_handler = (__u64)BPF_CORE_READ(rp, handler);
	}
	o->err = 0;
	return 0;
}

/* The offsets user space needs to walk mod_tree with plain reads, from
 * the running kernel's BTF (see the MODLAYOUT_* words in kmem.rs). */
static __always_inline int do_modlayout(struct out *o)
{
	__u64 *w = (__u64 *)o->data;

	o->len = 16 * 8;
	o->err = 0;
	for (int i = 0; i < 16; i++)
		w[i] = 0;
	if (!bpf_core_type_exists(struct mod_tree_node___kestrel) ||
	    !bpf_core_type_exists(struct mod_tree_root___kestrel))
		return 0;
	w[0] = MODLAYOUT_TREE;
	w[1] = bpf_core_field_offset(struct mod_tree_root___kestrel, root.tree);
	w[2] = bpf_core_field_offset(struct mod_tree_node___kestrel, node);
	w[3] = bpf_core_field_offset(struct mod_tree_node___kestrel, mod);
	if (bpf_core_field_exists(struct module___v64, mem) &&
	    bpf_core_field_exists(struct module_memory___kestrel, mtn)) {
		w[0] |= MODLAYOUT_MEM;
		w[4] = bpf_core_field_offset(struct module___v64, name);
		w[5] = bpf_core_field_size(struct module___v64, name);
		w[6] = bpf_core_field_offset(struct module___v64, mem);
		w[7] = bpf_core_type_size(struct module_memory___kestrel);
		w[8] = bpf_core_field_size(struct module___v64, mem);
		w[9] = bpf_core_field_offset(struct module_memory___kestrel, base);
		w[10] = bpf_core_field_offset(struct module_memory___kestrel, size);
		w[11] = bpf_core_field_offset(struct module_memory___kestrel, mtn);
	} else if (bpf_core_field_exists(struct module___pre64, core_layout) &&
		   bpf_core_field_exists(struct module_layout___kestrel, mtn)) {
		w[0] |= MODLAYOUT_LAYOUT;
		w[4] = bpf_core_field_offset(struct module___pre64, name);
		w[5] = bpf_core_field_size(struct module___pre64, name);
		w[6] = bpf_core_field_offset(struct module___pre64, core_layout);
		w[7] = bpf_core_field_offset(struct module___pre64, init_layout);
		w[9] = bpf_core_field_offset(struct module_layout___kestrel, base);
		w[10] = bpf_core_field_offset(struct module_layout___kestrel, size);
		w[11] = bpf_core_field_offset(struct module_layout___kestrel, mtn);
	}
	return 0;
}

SEC("raw_tp")
int kestrel_scan_read(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 key = 0;
	struct out *o = bpf_map_lookup_elem(&out, &key);
	__u64 op = ctx->args[0];
	__u64 a1 = ctx->args[1];
	__u64 a2 = ctx->args[2];

	if (!o)
		return 1;
	o->err = -22; /* EINVAL until an operation says otherwise */
	o->len = 0;
	if (op == OP_READ)
		return do_read(o, a1, a2);
	if (op == OP_FILE)
		return do_file(o, a1);
	if (op == OP_KPROBE)
		return do_kprobe(o, a1, a2);
	if (op == OP_MODLAYOUT)
		return do_modlayout(o);
	return 0;
}
