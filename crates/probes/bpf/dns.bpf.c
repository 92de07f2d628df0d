// SPDX-License-Identifier: GPL-2.0-only
/*
 * DNS answers (data_type 601): UDP datagrams from port 53, from the
 * receive syscalls and from sock_recv_length.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/sockets.h"
#include "lib/syscall.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_dns);
} dns_scratch SEC(".maps");

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

KESTREL_SYSCALL_EXIT(recvfrom)
{
	struct task_struct *task;
	struct pt_regs *regs;
	struct sock *sk;
	int fd;

	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (sk)
		dns_datagram(task, fd, sk, (void *)regs->si, ret,
			     (void *)regs->r8);
	return 0;
}

KESTREL_SYSCALL_EXIT(recvmsg)
{
	struct task_struct *task;
	struct pt_regs *regs;
	struct user_msghdr msg = {};
	struct sock *sk;
	int fd;

	sk = recv_udp_sock(ret, &task, &regs, &fd);
	if (!sk || bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
		return 0;
	dns_iov(task, fd, sk, msg.msg_iov, ret, msg.msg_name);
	return 0;
}

KESTREL_SYSCALL_EXIT(recvmmsg)
{
	struct task_struct *task;
	struct pt_regs *regs;
	struct mmsghdr *vec;
	struct sock *sk;
	int fd;

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
