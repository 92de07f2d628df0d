/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Sockets behind descriptors, and the addresses of their two ends.
 */
#ifndef KESTREL_LIB_SOCKETS_H
#define KESTREL_LIB_SOCKETS_H

#include "files.h"

#define AF_INET 2
#define AF_INET6 10

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

#endif /* KESTREL_LIB_SOCKETS_H */
