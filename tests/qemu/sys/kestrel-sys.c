// SPDX-License-Identifier: GPL-2.0-only
/*
 * TEST-ONLY. The syscalls busybox cannot make, for the hook-backend guest
 * test (tests/qemu/backends-guest.sh): each subcommand does one behaviour
 * Kestrel reports, naming TAG in what it touches so that the test finds
 * its events. Built static by tests/qemu/backends.sh; never installed.
 *
 *   kestrel-sys TAG ptrace|memfd|mprotect|bpf|dns|udp|openat2|execveat|fchmod|mknod|accept
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int do_ptrace(void)
{
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		pause();
		_exit(0);
	}
	if (ptrace(PTRACE_ATTACH, c, 0, 0))
		die("ptrace attach");
	waitpid(c, NULL, 0);
	ptrace(PTRACE_DETACH, c, 0, 0);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	return 0;
}

static int do_memfd(const char *tag)
{
	char name[64];
	snprintf(name, sizeof(name), "kbk-%s", tag);
	int fd = syscall(SYS_memfd_create, name, 0);
	if (fd < 0)
		die("memfd_create");
	if (write(fd, "x", 1) != 1)
		die("write");
	return 0;
}

static int do_mprotect(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	memset(p, 0xc3, 16);
	if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
		die("mprotect");
	return 0;
}

static int do_bpf(const char *tag)
{
	/* r0 = 0; exit: a socket filter that drops everything. */
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (unsigned long)insns;
	a.insn_cnt = 2;
	a.license = (unsigned long)"GPL";
	/* Program names take [A-Za-z0-9_.] only. */
	snprintf(a.prog_name, sizeof(a.prog_name), "kbk_%.10s", tag);
	for (char *c = a.prog_name; *c; c++)
		if (*c == '-')
			*c = '_';
	int fd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (fd < 0)
		die("bpf");
	return 0;
}

static struct sockaddr_in lo(int port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };
	s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return s;
}

/* A DNS query for kbk-TAG.example. answered by a server on 127.0.0.1:53
 * in this process, and the answer read with recvfrom. */
static int do_dns(const char *tag)
{
	unsigned char q[300], r[512];
	int srv = socket(AF_INET, SOCK_DGRAM, 0), cli = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = lo(53), from;
	socklen_t fl = sizeof(from);
	char label[64];
	int n = 0, len, ln;

	if (srv < 0 || cli < 0)
		die("socket");
	if (bind(srv, (struct sockaddr *)&sa, sizeof(sa)))
		die("bind 53");
	memcpy(q, "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
	n = 12;
	ln = snprintf(label, sizeof(label), "kbk-%s", tag);
	q[n++] = ln;
	memcpy(q + n, label, ln);
	n += ln;
	q[n++] = 7;
	memcpy(q + n, "example", 7);
	n += 7;
	q[n++] = 0;
	memcpy(q + n, "\x00\x01\x00\x01", 4);
	n += 4;
	if (sendto(cli, q, n, 0, (struct sockaddr *)&sa, sizeof(sa)) != n)
		die("sendto");
	len = recvfrom(srv, r, sizeof(r), 0, (struct sockaddr *)&from, &fl);
	if (len < 12)
		die("recvfrom server");
	/* The answer: the question, then one A record 127.0.0.7. */
	r[2] = 0x81;
	r[3] = 0x80;
	r[7] = 1;
	memcpy(r + len, "\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x07", 16);
	len += 16;
	if (sendto(srv, r, len, 0, (struct sockaddr *)&from, fl) != len)
		die("sendto answer");
	/* With the sender's address, as resolvers read answers. */
	fl = sizeof(from);
	if (recvfrom(cli, r, sizeof(r), 0, (struct sockaddr *)&from, &fl) < 0)
		die("recvfrom");
	return 0;
}

static int do_udp(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = lo(9);
	if (s < 0)
		die("socket");
	sendto(s, "kbk", 3, 0, (struct sockaddr *)&sa, sizeof(sa));
	return 0;
}

static int do_openat2(const char *tag)
{
	char path[128];
	struct open_how how = { .flags = O_CREAT | O_WRONLY, .mode = 0600 };
	snprintf(path, sizeof(path), "/tmp/kbk-%s-openat2", tag);
	int fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (fd < 0)
		die("openat2");
	return 0;
}

static int do_execveat(const char *tag)
{
	char arg[64];
	snprintf(arg, sizeof(arg), "kbk-%s-execveat", tag);
	char *argv[] = { "true", arg, NULL };
	char *envp[] = { NULL };
	syscall(SYS_execveat, AT_FDCWD, "/bin/busybox", argv, envp, 0);
	die("execveat");
	return 1;
}

static int do_fchmod(const char *tag)
{
	char path[128];
	snprintf(path, sizeof(path), "/tmp/kbk-%s-fchmod", tag);
	int fd = open(path, O_CREAT | O_WRONLY, 0755);
	if (fd < 0)
		die("open");
	if (fchmod(fd, 04755))
		die("fchmod");
	return 0;
}

static int do_mknod(const char *tag)
{
	char path[128];
	snprintf(path, sizeof(path), "/tmp/kbk-%s-fifo", tag);
	if (mknodat(AT_FDCWD, path, S_IFIFO | 0600, 0))
		die("mknodat");
	return 0;
}

/* bind, listen, connect and accept on 127.0.0.1:7070. */
static int do_accept(void)
{
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = lo(7070);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1))
		die("bind/listen");
	if (connect(c, (struct sockaddr *)&sa, sizeof(sa)))
		die("connect");
	if (accept4(l, NULL, NULL, 0) < 0)
		die("accept4");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: kestrel-sys TAG WHAT\n");
		return 2;
	}
	const char *tag = argv[1], *w = argv[2];
	if (!strcmp(w, "ptrace")) return do_ptrace();
	if (!strcmp(w, "memfd")) return do_memfd(tag);
	if (!strcmp(w, "mprotect")) return do_mprotect();
	if (!strcmp(w, "bpf")) return do_bpf(tag);
	if (!strcmp(w, "dns")) return do_dns(tag);
	if (!strcmp(w, "udp")) return do_udp();
	if (!strcmp(w, "openat2")) return do_openat2(tag);
	if (!strcmp(w, "execveat")) return do_execveat(tag);
	if (!strcmp(w, "fchmod")) return do_fchmod(tag);
	if (!strcmp(w, "mknod")) return do_mknod(tag);
	if (!strcmp(w, "accept")) return do_accept();
	fprintf(stderr, "kestrel-sys: unknown %s\n", w);
	return 2;
}
