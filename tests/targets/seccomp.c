/* seccomp: threads under seccomp filters, some shared (TSYNC), some their own.
 *
 * usage: seccomp MODE STEPS [sleep=MS]
 *
 * MODE "filters": the main thread sets no_new_privs and starts two threads, "shared" and
 * "solo"; then it installs, with SECCOMP_FILTER_FLAG_TSYNC (so every thread shares it),
 * a filter that makes getpid fail with EPERM, logs getppid (SECCOMP_RET_LOG) and kills
 * the process on uselib. Then "solo" installs a second filter of its own, with
 * SECCOMP_FILTER_FLAG_LOG, making getuid fail with EACCES. At every step the main thread
 * reports, then asks each thread in turn (through a pipe) to report: what getpid, getppid
 * (only whether it succeeds) and getuid give, and the Seccomp, Seccomp_filters and
 * NoNewPrivs lines of /proc/thread-self/status.
 * MODE "blockmunmap": as "filters", but the shared filter also kills the process on a
 * munmap of exactly 0x101000 bytes (which the program never does: the restore does).
 * MODE "strict": the "solo" thread enters strict mode (PR_SET_SECCOMP 1) and only reads
 * its pipe and writes "solo: strict" when asked; no filters. The main thread reports.
 * MODE "notif": as "filters", but the solo thread's filter hands getgid to a supervisor
 * (SECCOMP_RET_USER_NOTIF, SECCOMP_FILTER_FLAG_NEW_LISTENER); the program closes the
 * listener (so getgid would fail with ENOSYS; it never calls it).
 * Needs root (or no_new_privs, which it sets). Exits with status 0. */
#include "util.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define NTHREADS 2

static int ask[NTHREADS][2], done[NTHREADS][2];
static const char *names[NTHREADS] = { "shared", "solo" };
static int mode_strict, mode_blockmunmap, mode_notif;

static void status_lines(char *buf, size_t len)
{
	static const char *keys[] = { "Seccomp:", "Seccomp_filters:", "NoNewPrivs:" };
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
			used += (size_t)snprintf(buf + used, len - used, " %.*s=%s", (int)kl - 1,
						 keys[k], v);
			if (used >= len)
				die("status: buffer too small");
		}
	}
}

/* "value" or "-1/errno" of a raw system call without arguments. */
static void result(char *buf, size_t len, long nr, int value)
{
	errno = 0;
	long r = syscall(nr);
	if (r < 0)
		snprintf(buf, len, "-1/%d", errno);
	else if (value)
		snprintf(buf, len, "%ld", r);
	else
		snprintf(buf, len, "ok");
}

static void report(const char *who)
{
	char st[512], pid[32], ppid[32], uid[32];
	result(pid, sizeof pid, SYS_getpid, 0);
	result(ppid, sizeof ppid, SYS_getppid, 0);
	result(uid, sizeof uid, SYS_getuid, 1);
	status_lines(st, sizeof st);
	out("  %s: getpid=%s getppid=%s getuid=%s%s\n", who, pid, ppid, uid, st);
}

static void install(struct sock_filter *f, unsigned short n, unsigned long flags)
{
	struct sock_fprog prog = { n, f };
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (r)
		die("seccomp(flags %#lx): %ld %s", flags, r, strerror(errno));
}

#define LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, off)
#define RET(v) BPF_STMT(BPF_RET | BPF_K, v)

static void install_shared(void)
{
	struct sock_filter f[] = {
		LD(offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		RET(SECCOMP_RET_KILL_PROCESS),
		LD(offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpid, 0, 1),
		RET(SECCOMP_RET_ERRNO | EPERM),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		RET(SECCOMP_RET_LOG),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uselib, 0, 1),
		RET(SECCOMP_RET_KILL_PROCESS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 0, 3),
		LD(offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x101000, 0, 1),
		RET(SECCOMP_RET_KILL_PROCESS),
		RET(SECCOMP_RET_ALLOW),
	};
	/* Without the munmap rule: jump over it from its first instruction. */
	if (!mode_blockmunmap)
		f[10] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 3, 0, 0);
	install(f, sizeof f / sizeof f[0], SECCOMP_FILTER_FLAG_TSYNC);
}

static void install_solo(void)
{
	struct sock_filter f[] = {
		LD(offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getuid, 0, 1),
		RET(SECCOMP_RET_ERRNO | EACCES),
		RET(SECCOMP_RET_ALLOW),
	};
	if (mode_notif) {
		struct sock_filter g[] = {
			LD(offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getgid, 0, 1),
			RET(SECCOMP_RET_USER_NOTIF),
			RET(SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { sizeof g / sizeof g[0], g };
		long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				  SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
		if (fd < 0)
			die("seccomp(NEW_LISTENER): %s", strerror(errno));
		close((int)fd);
	}
	install(f, sizeof f / sizeof f[0], SECCOMP_FILTER_FLAG_LOG);
}

static void *worker(void *arg)
{
	long i = (long)arg;
	char c;
	if (prctl(PR_SET_NAME, names[i], 0, 0, 0))
		die("PR_SET_NAME: %s", strerror(errno));
	if (write(done[i][1], "x", 1) != 1)
		die("write: %s", strerror(errno));
	/* Wait for the shared filter. */
	if (read(ask[i][0], &c, 1) != 1)
		die("read: %s", strerror(errno));
	if (i == 1 && mode_strict) {
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
			die("PR_SET_SECCOMP: %s", strerror(errno));
	} else if (i == 1) {
		install_solo();
	}
	if (write(done[i][1], "x", 1) != 1)
		_exit(102);
	while (read(ask[i][0], &c, 1) == 1) {
		if (!mode_strict || i == 0)
			report(names[i]);
		else
			write_all(1, "  solo: strict\n", 15);
		if (write(done[i][1], "x", 1) != 1)
			_exit(103);
	}
	if (mode_strict && i == 1)
		syscall(SYS_exit, 0);
	return NULL;
}

static void ping(int i)
{
	char c;
	if (write(ask[i][1], "x", 1) != 1 || read(done[i][0], &c, 1) != 1)
		die("thread %d does not answer", i);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: seccomp filters|blockmunmap|strict STEPS [sleep=MS]");
	if (!strcmp(argv[1], "strict"))
		mode_strict = 1;
	else if (!strcmp(argv[1], "blockmunmap"))
		mode_blockmunmap = 1;
	else if (!strcmp(argv[1], "notif"))
		mode_notif = 1;
	else if (strcmp(argv[1], "filters"))
		die("unknown mode %s", argv[1]);
	long steps = arg_long(argc, argv, 2, 0);
	long sleep_each = 20;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++) {
		char c;
		if (pipe(ask[i]) || pipe(done[i]))
			die("pipe: %s", strerror(errno));
		if (pthread_create(&t[i], NULL, worker, (void *)i) || read(done[i][0], &c, 1) != 1)
			die("pthread_create failed");
	}
	if (!mode_strict)
		install_shared();
	for (int i = 0; i < NTHREADS; i++)
		ping(i);
	unsigned long sum = 0;
	for (long step = 1; step <= steps; step++) {
		sum = sum * 31 + (unsigned long)step;
		out("step %ld/%ld sum=%lx\n", step, steps, sum);
		report("main");
		for (int i = 0; i < NTHREADS; i++)
			ping(i);
		struct timespec ts = { sleep_each / 1000, (sleep_each % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	out("done\n");
	return 0;
}
