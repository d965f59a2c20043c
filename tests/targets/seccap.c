/* seccap: seccomp filters installed while the program still had CAP_SYS_ADMIN, without
 * no_new_privs, then CAP_SYS_ADMIN dropped -- what runc does for every container under
 * a default seccomp profile (Docker's, Podman's).
 *
 * usage: seccap MODE        (as root)
 *
 * The main thread starts a "worker" thread, then installs, with SECCOMP_FILTER_FLAG_TSYNC
 * (every thread shares it), a filter that kills the process on a foreign architecture,
 * makes uname fail with EPERM and mknodat with EACCES, and allows the rest. The worker
 * then installs a filter of its own making getppid fail with EACCES. Then each thread
 * drops its privileges itself (raw system calls: each changes only its own thread):
 * MODE "capdrop": stays root; drops CAP_SYS_ADMIN from its bounding set, then from its
 *   effective and permitted sets (capset).
 * MODE "user": keep_caps on, setgroups to {1000, 27}, setresgid and setresuid to 1000,
 *   then capset to CAP_KILL and CAP_NET_BIND_SERVICE (effective and permitted); its
 *   bounding set loses CAP_SYS_ADMIN before the ID change.
 * MODE "denycapset": the shared filter also makes capset fail with EPERM; each thread
 *   drops everything by setresgid/setresuid to 1000 (the kernel clears its capabilities).
 * MODE "solo": as "capdrop", without the worker thread (one thread, one filter).
 * No thread ever has no_new_privs. Prints "ready" once done; then, for every line
 * "report" on stdin, one line per thread "report: WHO uname=.. getppid=.. getpid=..
 * mknod=.. Seccomp=.. Seccomp_filters=.. NoNewPrivs=.. CapEff=.. CapPrm=.. CapBnd=..
 * Uid=.."; "exit" (or end of file) ends it with status 0. */
#include "util.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

static int ask[2], done[2];
static const char *mode;

static void status_lines(char *buf, size_t len)
{
	static const char *keys[] = { "Seccomp:", "Seccomp_filters:", "NoNewPrivs:", "CapEff:",
				      "CapPrm:",  "CapBnd:",	       "Uid:" };
	char text[8192];
	FILE *f = fopen("/proc/thread-self/status", "r");
	if (!f)
		die("open /proc/thread-self/status: %s", strerror(errno));
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = 0;
	size_t used = 0;
	buf[0] = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			size_t kl = strlen(keys[k]);
			if (strncmp(line, keys[k], kl))
				continue;
			char *v = line + kl;
			while (*v == ' ' || *v == '\t')
				v++;
			for (char *c = v; *c; c++)
				if (*c == '\t')
					*c = ',';
			used += (size_t)snprintf(buf + used, len - used, " %.*s=%s", (int)kl - 1,
						 keys[k], v);
			if (used >= len)
				die("status: buffer too small");
		}
	}
}

static void result(char *buf, size_t len, long r)
{
	if (r < 0)
		snprintf(buf, len, "-1/%d", errno);
	else
		snprintf(buf, len, "ok");
}

static void report(const char *who)
{
	char un[32], pp[32], gp[32], mk[32], st[1024];
	struct utsname u;
	errno = 0;
	result(un, sizeof un, syscall(SYS_uname, &u));
	errno = 0;
	result(pp, sizeof pp, syscall(SYS_getppid));
	errno = 0;
	result(gp, sizeof gp, syscall(SYS_getpid));
	/* (Without the filter: ENOENT.) */
	errno = 0;
	result(mk, sizeof mk,
	       syscall(SYS_mknodat, AT_FDCWD, "/nonexistent-seccap/fifo", S_IFIFO | 0600, 0));
	status_lines(st, sizeof st);
	out("report: %s uname=%s getppid=%s getpid=%s mknod=%s%s\n", who, un, pp, gp, mk, st);
}

#define ARCH_CHECK                                                                          \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),            \
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),               \
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),                        \
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))

static void install(struct sock_filter *insns, unsigned short n, unsigned int flags)
{
	struct sock_fprog prog = { .len = n, .filter = insns };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) != 0)
		die("seccomp: %s", strerror(errno));
}

static void install_shared(int deny_capset)
{
	struct sock_filter f[] = {
		ARCH_CHECK,
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mknodat, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_capset, 0, 1),
		BPF_STMT(BPF_RET | BPF_K,
			 deny_capset ? (SECCOMP_RET_ERRNO | EPERM) : SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	install(f, sizeof f / sizeof f[0], SECCOMP_FILTER_FLAG_TSYNC);
}

static void install_own(void)
{
	struct sock_filter f[] = {
		ARCH_CHECK,
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	install(f, sizeof f / sizeof f[0], 0);
}

static void set_caps(unsigned long long caps)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (unsigned)caps, (unsigned)caps, 0 },
		{ (unsigned)(caps >> 32), (unsigned)(caps >> 32), 0 },
	};
	if (syscall(SYS_capset, &h, d) != 0)
		die("capset: %s", strerror(errno));
}

static void check(long r, const char *what)
{
	if (r != 0)
		die("%s: %s", what, strerror(errno));
}

/* Drop this thread's privileges as MODE says (raw calls: this thread only). */
static void drop(void)
{
	if (!strcmp(mode, "capdrop") || !strcmp(mode, "solo")) {
		check(prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0), "PR_CAPBSET_DROP");
		struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct d[2];
		check(syscall(SYS_capget, &h, d), "capget");
		unsigned long long prm = d[0].permitted | ((unsigned long long)d[1].permitted << 32);
		set_caps(prm & ~(1ULL << CAP_SYS_ADMIN));
	} else if (!strcmp(mode, "user")) {
		gid_t groups[2] = { 1000, 27 };
		check(prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0), "PR_CAPBSET_DROP");
		check(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS");
		check(syscall(SYS_setgroups, 2, groups), "setgroups");
		check(syscall(SYS_setresgid, 1000, 1000, 1000), "setresgid");
		check(syscall(SYS_setresuid, 1000, 1000, 1000), "setresuid");
		set_caps((1ULL << CAP_KILL) | (1ULL << CAP_NET_BIND_SERVICE));
	} else {
		check(syscall(SYS_setresgid, 1000, 1000, 1000), "setresgid");
		check(syscall(SYS_setresuid, 1000, 1000, 1000), "setresuid");
	}
}

static void *worker(void *arg)
{
	(void)arg;
	char c;
	/* 's': set up (own filter, drop); 'r': report. */
	while (read(ask[0], &c, 1) == 1) {
		if (c == 's') {
			install_own();
			drop();
		} else {
			report("worker");
		}
		write_all(done[1], "k", 1);
	}
	return NULL;
}

static void in_worker(char c)
{
	write_all(ask[1], &c, 1);
	char k;
	if (read(done[0], &k, 1) != 1)
		die("worker gone");
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: seccap capdrop|user|denycapset|solo");
	mode = argv[1];
	if (strcmp(mode, "capdrop") && strcmp(mode, "user") && strcmp(mode, "denycapset") &&
	    strcmp(mode, "solo"))
		die("seccap: unknown mode %s", mode);
	int solo = !strcmp(mode, "solo");
	if (pipe(ask) || pipe(done))
		die("pipe: %s", strerror(errno));
	pthread_t t;
	if (!solo && pthread_create(&t, NULL, worker, NULL))
		die("pthread_create");
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0)
		die("started with no_new_privs");
	install_shared(!strcmp(mode, "denycapset"));
	if (!solo)
		in_worker('s');
	drop();
	out("ready\n");
	char line[64];
	size_t n = 0;
	char c;
	while (read(0, &c, 1) == 1) {
		if (c != '\n') {
			if (n < sizeof line - 1)
				line[n++] = c;
			continue;
		}
		line[n] = 0;
		n = 0;
		if (!strcmp(line, "report")) {
			report("main");
			if (!solo)
				in_worker('r');
		} else if (!strcmp(line, "exit")) {
			break;
		}
	}
	return 0;
}
