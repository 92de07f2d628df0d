// SPDX-License-Identifier: GPL-2.0-only
/*
 * The listening side of IPv4/IPv6 sockets: bind records (data_type 49) and
 * accepted connections (data_type 43).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/sockets.h"
#include "lib/syscall.h"

#define NET_EBADF 9
#define NET_ENOTSOCK 88
#define NET_SOCK_RAW 3
#define NR_ACCEPT 43
#define NR_ACCEPT4 288

/* bind(fd, addr, len): every call on an inet socket, failures too (a
 * port already taken is what a second listener on it meets). */
KESTREL_SYSCALL_EXIT(bind)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs local = {};
	struct kestrel_bind e = {};
	struct sockaddr_in6 sa = {};
	struct pt_regs *regs;
	struct sock *sk;
	void *uaddr;

	if (ret == -NET_EBADF || ret == -NET_ENOTSOCK || task->tgid == self_tgid)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	e.fd = (int)regs->di;
	/* bind() looked the descriptor up as a socket first: past EBADF
	 * and ENOTSOCK it is one. A socket of another family (unix,
	 * netlink, packet) is left here. */
	sk = socket_sock(task_fd(task, e.fd));
	if (!read_sock_addrs(sk, &local))
		return 0;
	if (typed()) {
		e.protocol = bpf_core_cast(sk, struct sock)->sk_protocol;
		e.sock_type = bpf_core_cast(sk, struct sock)->sk_type;
	} else {
		e.protocol = BPF_CORE_READ(sk, sk_protocol);
		e.sock_type = BPF_CORE_READ(sk, sk_type);
	}
	e.addrs.family = local.family;
	if (ret == 0) {
		/* What the kernel bound, not what the caller's memory (which
		 * another thread may have rewritten since) says: the port
		 * the kernel chose for port 0, too. A raw socket keeps its
		 * protocol number where a port would be: it has none. */
		if (e.sock_type != NET_SOCK_RAW)
			e.addrs.sport = local.sport;
		__builtin_memcpy(e.addrs.saddr, local.saddr, 16);
	} else {
		uaddr = (void *)regs->si;
		/* As connect does: a sockaddr_in6, or the shorter one at the
		 * very end of a mapping. Unreadable: the family alone. */
		if (uaddr && !(bpf_probe_read_user(&sa, sizeof(sa), uaddr) &&
			       bpf_probe_read_user(&sa, sizeof(struct sockaddr_in), uaddr))) {
			if (sa.sin6_family == AF_INET && local.family == AF_INET) {
				e.addrs.sport = bpf_ntohs(sa.sin6_port);
				__builtin_memcpy(e.addrs.saddr,
						 &((struct sockaddr_in *)&sa)->sin_addr, 4);
			} else if (sa.sin6_family == AF_INET6 && local.family == AF_INET6) {
				e.addrs.sport = bpf_ntohs(sa.sin6_port);
				__builtin_memcpy(e.addrs.saddr, &sa.sin6_addr, 16);
			}
		}
	}
	e.hdr.kind = KESTREL_KIND_BIND;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task, proc_entry(task));
	e.res = ret;
	submit(&e, sizeof(e), KESTREL_KIND_BIND);
	return 0;
}

/* accept/accept4 returned `ret`, a new socket: reported when it is an
 * IPv4/IPv6 one. A failed call (EAGAIN, the end of every non-blocking
 * accept loop) carries no connection and leaves at the first test. */
static __always_inline int accepted(long ret, __u32 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs addrs = {};
	struct kestrel_accept *e;
	struct pt_regs *regs;

	if (ret < 0 || task->tgid == self_tgid)
		return 0;
	if (!read_sock_addrs(socket_sock(task_fd(task, (unsigned int)ret)), &addrs))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	/* Built in place: accept can be as frequent as connect. */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(KESTREL_KIND_ACCEPT, KESTREL_CTR_RINGBUF_FULL);
		return 0;
	}
	e->hdr.kind = KESTREL_KIND_ACCEPT;
	e->hdr.reserved = 0;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = ret;
	e->fd = (int)regs->di;
	e->addrs = addrs;
	e->syscall = nr;
	e->reserved = 0;
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(KESTREL_KIND_ACCEPT, KESTREL_CTR_SUBMITTED);
	return 0;
}

/* At the syscall's exit, not at sock:inet_sock_set_state: the handshake
 * completes in softirq context, before and apart from the process that
 * accepts the connection (docs/events.md). */
KESTREL_SYSCALL_EXIT(accept)
{
	return accepted(ret, NR_ACCEPT);
}

KESTREL_SYSCALL_EXIT(accept4)
{
	return accepted(ret, NR_ACCEPT4);
}
