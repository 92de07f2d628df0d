// SPDX-License-Identifier: GPL-2.0-only
/*
 * Connect records (data_type 42): connect(2), UDP datagrams sent to an
 * address without connect, and the TCP state change that keeps the local
 * end of a refused connect.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/creds.h"
#include "lib/files.h"
#include "lib/sockets.h"
#include "lib/syscall.h"

#define ENOTSOCK 88
#define EBADF 9
#define EINPROGRESS 115

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

/* A connect(2) record, built in place in the ring buffer (no copy,
 * nothing to zero), and the credential check every connect makes. */
static __always_inline int report_connect(struct task_struct *task, long res, int fd,
					  const struct kestrel_sockaddrs *addrs)
{
	struct kestrel_proc *ps = proc_entry(task);
	struct kestrel_connect *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (e) {
		e->hdr.kind = KESTREL_KIND_CONNECT;
		e->hdr.reserved = 0;
		e->hdr.size = sizeof(*e);
		e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
		fill_task(&e->task, task, ps);
		e->res = res;
		e->fd = fd;
		e->addrs = *addrs;
		e->via = KESTREL_CONNECT_VIA_CONNECT;
		e->reserved = 0;
		bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
		count(KESTREL_KIND_CONNECT, KESTREL_CTR_SUBMITTED);
	} else {
		count(KESTREL_KIND_CONNECT, KESTREL_CTR_RINGBUF_FULL);
	}
	check_creds(ps, task, KESTREL_CRED_AT_CONNECT, NULL);
	return 0;
}

KESTREL_SYSCALL_EXIT(connect)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs addrs = {};
	struct pt_regs *regs;
	struct sockaddr_in6 sa = {};
	struct sock *sk;
	void *uaddr;
	__u16 family = 0;
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

	return report_connect(task, ret, fd, &addrs);
}

#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define IPPROTO_TCP 6

/* Lean mode (--syscall-tracepoints off) has no connect(2) or bind(2)
 * program: the loader sets this, and a TCP connect is then seen when its
 * socket leaves CLOSE for SYN_SENT, a TCP listener (what a bind shell
 * makes) when it leaves CLOSE for LISTEN. */
const volatile bool lean_sockets = false;

/* The connect: the socket leaves CLOSE for SYN_SENT. That change happens only in tcp_v4/v6_connect, under
 * the socket's lock, in the task connecting (connect(2), or sendmsg with
 * MSG_FASTOPEN); it comes before the local port is picked and before the
 * handshake, so the record says "in progress" and has the port only of a
 * socket bound beforehand (docs/performance.md, "Lean mode"). */
static __always_inline int syn_sent(struct sock *sk)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs addrs = {};

	if (task->tgid == self_tgid || !read_sock_addrs(sk, &addrs))
		return 0;
	/* The descriptor is not known here. */
	return report_connect(task, -EINPROGRESS, -1, &addrs);
}

#define TCP_LISTEN 10

/* The listener, reported as a bind (49): the socket leaves CLOSE for
 * LISTEN in inet_csk_listen_start, in the task calling listen(2) (or
 * io_uring's listen, which no syscall tracepoint sees), before a port is
 * picked for a socket not bound beforehand: sport is 0 then. */
static __always_inline int listening(struct sock *sk)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_sockaddrs addrs = {};
	struct kestrel_bind *e;

	if (task->tgid == self_tgid || !read_sock_addrs(sk, &addrs))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(KESTREL_KIND_BIND, KESTREL_CTR_RINGBUF_FULL);
		return 0;
	}
	e->hdr.kind = KESTREL_KIND_BIND;
	e->hdr.reserved = 0;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = 0;
	e->fd = -1;
	/* The local end only, as a bind record has it. */
	__builtin_memset(&e->addrs, 0, sizeof(e->addrs));
	e->addrs.family = addrs.family;
	e->addrs.sport = addrs.sport;
	__builtin_memcpy(e->addrs.saddr, addrs.saddr, 16);
	e->protocol = IPPROTO_TCP;
	e->sock_type = SOCK_STREAM;
	e->reserved = 0;
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(KESTREL_KIND_BIND, KESTREL_CTR_SUBMITTED);
	return 0;
}

/* A SYN that was never answered, or answered by a reset: keep the local
 * end, which the kernel is about to release (in lean mode: the connect
 * and the listener themselves, above). Runs in whatever context
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

	/* The states first: they are arguments, the protocol a load. */
	if (lean_sockets) {
		/* The refused map is for the connect(2) program, not loaded. */
		if (oldstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP)
			return 0;
		if (newstate == TCP_SYN_SENT)
			return syn_sent((struct sock *)sk);
		if (newstate == TCP_LISTEN)
			return listening((struct sock *)sk);
		return 0;
	}
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

#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define IPPROTO_UDPLITE 136
#define TCP_ESTABLISHED 1

/* A UDP socket (by its inode number, which unlike its address is not
 * reused by the next socket) and a destination it sent to. */
struct udp_dest {
	__u64 ino;
	__u8 daddr[16];
	__u16 dport;
	__u16 family;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KESTREL_UDP_DESTS_MAX);
	__type(key, struct udp_dest);
	__type(value, __u8);
} udp_dests SEC(".maps");

/* The sock behind `fd` if it is a UDP one (IPv4 or IPv6). */
static __always_inline struct sock *udp_send_sock(struct task_struct *task, int fd, __u64 *ino)
{
	struct file *f = task_fd(task, fd);
	struct sock *sk = file_sock(f);
	struct inode *inode;
	__u16 family, type, proto;

	if (!sk)
		return NULL;
	inode = file_inode(f);
	if (typed()) {
		struct sock *s = bpf_core_cast(sk, struct sock);

		family = s->__sk_common.skc_family;
		type = s->sk_type;
		proto = s->sk_protocol;
		*ino = bpf_core_cast(inode, struct inode)->i_ino;
	} else {
		family = BPF_CORE_READ(sk, __sk_common.skc_family);
		type = BPF_CORE_READ(sk, sk_type);
		proto = BPF_CORE_READ(sk, sk_protocol);
		*ino = BPF_CORE_READ(inode, i_ino);
	}
	if ((family != AF_INET && family != AF_INET6) || type != SOCK_DGRAM ||
	    (proto != IPPROTO_UDP && proto != IPPROTO_UDPLITE))
		return NULL;
	return sk;
}

/* After sendto/sendmsg on descriptor `fd` with destination `uaddr`: the
 * first datagram from a UDP socket to an address it is not connected to
 * is reported like a connect. Every datagram would drown the consumer (a
 * DNS client, a flood), so each (socket, destination) pair is reported
 * once, with the result of its first send. */
static __always_inline int udp_sent(struct task_struct *task, long ret, int fd, struct sock *sk,
				    __u64 ino, void *uaddr, __u32 via)
{
	struct sockaddr_in6 sa = {};
	struct kestrel_sockaddrs local = {};
	struct kestrel_connect *e;
	struct udp_dest k = {};
	__u8 one = 1;

	k.ino = ino;
	if (bpf_probe_read_user(&sa, sizeof(sa), uaddr) &&
	    bpf_probe_read_user(&sa, sizeof(struct sockaddr_in), uaddr))
		return 0;
	k.family = sa.sin6_family;
	if (k.family != AF_INET && k.family != AF_INET6)
		return 0;
	k.dport = bpf_ntohs(sa.sin6_port);
	if (k.family == AF_INET)
		__builtin_memcpy(k.daddr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
	else
		__builtin_memcpy(k.daddr, &sa.sin6_addr, 16);
	/* The common case, a pair already reported, first. */
	if (bpf_map_lookup_elem(&udp_dests, &k))
		return 0;
	read_sock_addrs(sk, &local);
	/* To the peer it is connected to: its connect was reported. */
	if ((typed() ? bpf_core_cast(sk, struct sock)->__sk_common.skc_state
		     : BPF_CORE_READ(sk, __sk_common.skc_state)) == TCP_ESTABLISHED &&
	    local.family == k.family && local.dport == k.dport && same_addr(local.daddr, k.daddr))
		return 0;
	/* Two threads racing on the pair: only the one that added it reports. */
	if (bpf_map_update_elem(&udp_dests, &k, &one, BPF_NOEXIST))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(KESTREL_KIND_CONNECT, KESTREL_CTR_RINGBUF_FULL);
		/* Not reported: the next datagram tries again. */
		bpf_map_delete_elem(&udp_dests, &k);
		return 0;
	}
	e->hdr.kind = KESTREL_KIND_CONNECT;
	e->hdr.reserved = 0;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = ret < 0 ? ret : 0;
	e->fd = fd;
	__builtin_memset(&e->addrs, 0, sizeof(e->addrs));
	e->addrs.family = k.family;
	e->addrs.dport = k.dport;
	__builtin_memcpy(e->addrs.daddr, k.daddr, 16);
	if (local.family == k.family) {
		e->addrs.sport = local.sport;
		__builtin_memcpy(e->addrs.saddr, local.saddr, 16);
	}
	e->via = via;
	e->reserved = 0;
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(KESTREL_KIND_CONNECT, KESTREL_CTR_SUBMITTED);
	return 0;
}

/* sendto(fd, buf, len, flags, addr, addrlen). send(2) is sendto with no
 * address, so nearly every call leaves at the first test. */
KESTREL_SYSCALL_EXIT(sendto)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	void *uaddr = (void *)regs->r8;
	struct sock *sk;
	__u64 ino = 0;

	if (!uaddr || ret == -EBADF || ret == -ENOTSOCK || task->tgid == self_tgid)
		return 0;
	sk = udp_send_sock(task, (int)regs->di, &ino);
	if (!sk)
		return 0;
	return udp_sent(task, ret, (int)regs->di, sk, ino, uaddr, KESTREL_CONNECT_VIA_SENDTO);
}

/* sendmsg(fd, msg, flags): the socket is looked at first (kernel memory),
 * the caller's msghdr only for a UDP one. */
KESTREL_SYSCALL_EXIT(sendmsg)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;
	void *uaddr = NULL;
	struct sock *sk;
	__u64 ino = 0;

	if (ret == -EBADF || ret == -ENOTSOCK || task->tgid == self_tgid)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	sk = udp_send_sock(task, (int)regs->di, &ino);
	if (!sk)
		return 0;
	/* struct user_msghdr starts with msg_name. */
	if (bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)regs->si) || !uaddr)
		return 0;
	return udp_sent(task, ret, (int)regs->di, sk, ino, uaddr, KESTREL_CONNECT_VIA_SENDMSG);
}

/* What each message of a sendmmsg call needs (bpf_loop's context). */
struct mmsg_ctx {
	__u64 sk;
	__u64 ino;
	const void *vec;
	long res;
	int fd;
};

/* Message i of a sendmmsg call: struct mmsghdr is a user_msghdr, which
 * starts with msg_name, and a u32, 64 bytes in all. */
static long mmsg_one(__u64 i, struct mmsg_ctx *c)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct sock *sk;
	void *uaddr = NULL;

	if (bpf_probe_read_user(&uaddr, sizeof(uaddr), c->vec + i * 64) || !uaddr)
		return 0;
	sk = typed() ? bpf_core_cast((void *)c->sk, struct sock) : (struct sock *)c->sk;
	udp_sent(task, c->res, c->fd, sk, c->ino, uaddr, KESTREL_CONNECT_VIA_SENDMMSG);
	return 0;
}

/* sendmmsg(fd, msgvec, vlen, flags) returns how many messages it sent:
 * each of those is looked at (at most 1024, the kernel's own limit), or
 * the first when it failed outright. bpf_loop (Linux 5.17) verifies the
 * body once; without it only the first KESTREL_UDP_MMSG_OLD are. */
KESTREL_SYSCALL_EXIT(sendmmsg)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mmsg_ctx c = {};
	struct pt_regs *regs;
	struct sock *sk;
	__u32 n;

	if (ret == -EBADF || ret == -ENOTSOCK || ret == 0 || task->tgid == self_tgid)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	c.fd = (int)regs->di;
	sk = udp_send_sock(task, c.fd, &c.ino);
	if (!sk)
		return 0;
	c.sk = (__u64)sk;
	c.vec = (const void *)regs->si;
	c.res = ret < 0 ? ret : 0;
	n = ret < 0 ? 1 : (ret > 1024 ? 1024 : ret);
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop)) {
		bpf_loop(n, mmsg_one, &c, 0);
	} else {
		for (__u32 i = 0; i < KESTREL_UDP_MMSG_OLD && i < n; i++)
			mmsg_one(i, &c);
	}
	return 0;
}
