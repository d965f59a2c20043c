/* usernstc STEPS [sleep=MS] [cgroup=DIR] [child] [threads]
 *
 * A tree with a user namespace of its own that owns a cgroup and a time namespace of
 * its own, in the shape of `unshare -U -r -C -T` (run as root): with `cgroup=DIR` (a
 * cgroup v2 directory with a subgroup DIR/kid) it first moves itself into DIR; it
 * unshares CLONE_NEWUSER, denies setgroups and maps root inside to its own user and
 * group outside (one ID each); root in it, it unshares CLONE_NEWCGROUP and
 * CLONE_NEWTIME (so its user namespace owns both; the cgroup namespace is rooted at
 * DIR), moves its monotonic and boot clocks 10 days ahead and enters that time
 * namespace itself. With `child`, it forks a child that moves itself into DIR/kid
 * (`cgroup=` only) and checks every step that its cgroup as its namespace shows it, its
 * IDs, its capabilities and its clocks stay as they were, exiting 42 (43 if not); with
 * `threads`, it starts a thread that checks the same for itself every step.
 *
 * Every step the root prints its cgroup v2 line as its namespace shows it, its IDs and
 * effective capabilities as it sees them, and whether both clocks went on
 * from the previous step without jumping (between 0 and 5 s later, and still more than
 * 10 days). Nothing printed depends on the actual times. */
#include "util.h"
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>

#define AHEAD (10L * 86400)

static long ms = 40;
static long steps;

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	write_all(fd, text, strlen(text));
	close(fd);
}

static long long now_ns(clockid_t c)
{
	struct timespec ts;
	if (clock_gettime(c, &ts) != 0)
		die("clock_gettime: %s", strerror(errno));
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether the clocks went on from the previous reading (*m, *b), which is updated. */
static int clocks_ok(long long *m, long long *b)
{
	long long m2 = now_ns(CLOCK_MONOTONIC), b2 = now_ns(CLOCK_BOOTTIME);
	long long lim = 5000000000LL, ahead = AHEAD * 1000000000LL;
	int ok = m2 >= *m && m2 - *m < lim && b2 >= *b && b2 - *b < lim && m2 > ahead && b2 > ahead;
	*m = m2;
	*b = b2;
	return ok;
}

/* The calling thread's view: "cgroup=LINE uid=R,E,S gid=R,E,S capeff=HEX". */
static void view(char *buf, size_t n)
{
	char all[4096], cg[256] = "none";
	int fd = open("/proc/thread-self/cgroup", O_RDONLY);
	if (fd < 0)
		die("open /proc/thread-self/cgroup: %s", strerror(errno));
	ssize_t got = read(fd, all, sizeof all - 1);
	close(fd);
	all[got > 0 ? got : 0] = 0;
	/* The cgroup v2 line ("0::PATH"). */
	for (char *l = all; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, "0::", 3) == 0) {
			size_t k = strcspn(l, "\n");
			snprintf(cg, sizeof cg, "%.*s", (int)k, l);
			break;
		}
	uid_t r, e, s;
	gid_t gr, ge, gs;
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) != 0)
		die("capget: %s", strerror(errno));
	snprintf(buf, n, "cgroup=%s uid=%u,%u,%u gid=%u,%u,%u capeff=%08x%08x", cg, r, e, s, gr, ge,
		 gs, d[1].effective, d[0].effective);
}

static volatile int thread_ok = 1;

static void *thread_main(void *arg)
{
	(void)arg;
	char first[512], now[512];
	view(first, sizeof first);
	long long m = now_ns(CLOCK_MONOTONIC), b = now_ns(CLOCK_BOOTTIME);
	for (;;) {
		sleep_ms(ms);
		view(now, sizeof now);
		if (strcmp(first, now) != 0 || !clocks_ok(&m, &b))
			thread_ok = 0;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	steps = arg_long(argc, argv, 1, 40);
	const char *dir = NULL;
	int child = 0, threads = 0;
	for (int i = 2; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strncmp(argv[i], "cgroup=", 7) == 0)
			dir = argv[i] + 7;
		else if (strcmp(argv[i], "child") == 0)
			child = 1;
		else if (strcmp(argv[i], "threads") == 0)
			threads = 1;
	char path[4096], text[256];
	if (dir) {
		snprintf(path, sizeof path, "%s/cgroup.procs", dir);
		put(path, "0\n");
	}
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWUSER) != 0)
		die("unshare user: %s", strerror(errno));
	put("/proc/self/setgroups", "deny\n");
	snprintf(text, sizeof text, "0 %u 1\n", uid);
	put("/proc/self/uid_map", text);
	snprintf(text, sizeof text, "0 %u 1\n", gid);
	put("/proc/self/gid_map", text);
	if (unshare(CLONE_NEWCGROUP | CLONE_NEWTIME) != 0)
		die("unshare cgroup, time: %s", strerror(errno));
	snprintf(text, sizeof text, "monotonic %ld 0\nboottime %ld 0\n", AHEAD, AHEAD);
	put("/proc/self/timens_offsets", text);
	int tfd = open("/proc/self/ns/time_for_children", O_RDONLY);
	if (tfd < 0 || setns(tfd, CLONE_NEWTIME) != 0)
		die("setns time_for_children: %s", strerror(errno));
	close(tfd);
	long long m = now_ns(CLOCK_MONOTONIC), b = now_ns(CLOCK_BOOTTIME);
	pid_t kid = -1;
	if (child) {
		kid = fork();
		if (kid < 0)
			die("fork: %s", strerror(errno));
		if (kid == 0) {
			if (dir) {
				snprintf(path, sizeof path, "%s/kid/cgroup.procs", dir);
				put(path, "0\n");
			}
			char first[512], now[512];
			view(first, sizeof first);
			int ok = !dir || strncmp(first, "cgroup=0::/kid ", 15) == 0;
			for (long i = 0; i < steps + 5; i++) {
				sleep_ms(ms);
				view(now, sizeof now);
				if (strcmp(first, now) != 0 || !clocks_ok(&m, &b))
					ok = 0;
			}
			_exit(ok ? 42 : 43);
		}
		out("started a child\n");
	}
	if (threads) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL) != 0)
			die("pthread_create");
		out("started a thread\n");
	}
	for (long i = 0; i < steps; i++) {
		char v[512];
		view(v, sizeof v);
		out("step %ld %s clocks=%s%s\n", i, v, clocks_ok(&m, &b) ? "continuous" : "JUMPED",
		    threads ? (thread_ok ? " thread=ok" : " thread=BAD") : "");
		sleep_ms(ms);
	}
	if (child) {
		int st;
		if (waitpid(kid, &st, 0) != kid)
			die("waitpid: %s", strerror(errno));
		out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	return 0;
}
