/* userns STEPS [sleep=MS] [wide] [base=N] [uts] [ipc] [net] [child] [dir=PATH] [threads]
 *
 * A tree that makes a user namespace of its own (run as root).
 *
 * Without `wide`, as `unshare -U -r` does: it unshares CLONE_NEWUSER, denies setgroups
 * and maps root inside to its own user and group IDs outside (one ID each).
 * With `wide`, a helper it forked before (still in the parent namespace, root there)
 * writes its maps once it has unshared: IDs 0-65535 inside are N-(N+65535) outside
 * (N: 123400 unless `base=N`),
 * for users and groups, setgroups allowed; then it becomes root inside (host 123400).
 *
 * Then, root in its namespace: with `uts`, `ipc`, `net` it unshares those namespaces
 * (so its user namespace owns them) and names the host "ckpt-userns" (uts), sets
 * kernel.msgmni to 77 (ipc); then (`wide` only) it takes groups 1000 and 5, group ID
 * 1000, user IDs (1000, 1000, 0) with keep-caps, and capabilities CAP_CHOWN and
 * CAP_NET_ADMIN permitted and effective, CAP_KILL inheritable. With `child`, it forks a
 * child that checks every step that its IDs are still those and exits 42 (43 if not);
 * with `threads`, it starts a thread that sleeps.
 *
 * Every step it prints its IDs, groups and capabilities as it sees them, its uid_map as
 * it reads it, the host name (uts) and msgmni (ipc); with `dir=PATH`, it creates the
 * file PATH/stepN and prints its owner as it sees it. Nothing printed depends on IDs
 * outside the namespace but the maps. */
#include "util.h"
#include "usermap.h"
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>

/* "a b c" of a text with runs of blanks and newlines. */
static void squeeze(char *s)
{
	char *w = s;
	int blank = 1;
	for (char *r = s; *r; r++) {
		if (*r == ' ' || *r == '\t' || *r == '\n') {
			if (!blank)
				*w++ = ' ';
			blank = 1;
		} else {
			*w++ = *r;
			blank = 0;
		}
	}
	if (w > s && w[-1] == ' ')
		w--;
	*w = 0;
}

static void caps(unsigned *eff, unsigned *prm, unsigned *inh)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) != 0)
		die("capget: %s", strerror(errno));
	*eff = d[0].effective;
	*prm = d[0].permitted;
	*inh = d[0].inheritable;
}

static void ids(char *buf, size_t n)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	gid_t groups[16];
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	int ng = getgroups(16, groups);
	unsigned ce, cp, ci;
	caps(&ce, &cp, &ci);
	int o = snprintf(buf, n, "uid=%u,%u,%u gid=%u,%u,%u groups=", r, e, s, gr, ge, gs);
	for (int i = 0; i < ng && o < (int)n; i++)
		o += snprintf(buf + o, n - o, "%s%u", i ? "," : "", groups[i]);
	snprintf(buf + o, n - o, " caps=%x/%x/%x", ce, cp, ci);
}

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		sleep_ms(1000);
	return NULL;
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long ms = 40;
	int wide = 0, uts = 0, ipc = 0, net = 0, child = 0, threads = 0;
	const char *dir = NULL;
	long base = 123400;
	for (int i = 2; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strncmp(argv[i], "base=", 5) == 0)
			base = strtol(argv[i] + 5, NULL, 10);
		else if (strncmp(argv[i], "dir=", 4) == 0)
			dir = argv[i] + 4;
		else if (strcmp(argv[i], "wide") == 0)
			wide = 1;
		else if (strcmp(argv[i], "uts") == 0)
			uts = 1;
		else if (strcmp(argv[i], "ipc") == 0)
			ipc = 1;
		else if (strcmp(argv[i], "net") == 0)
			net = 1;
		else if (strcmp(argv[i], "child") == 0)
			child = 1;
		else if (strcmp(argv[i], "threads") == 0)
			threads = 1;
	enter_user_ns(wide, base);
	int flags = (uts ? CLONE_NEWUTS : 0) | (ipc ? CLONE_NEWIPC : 0) | (net ? CLONE_NEWNET : 0);
	if (flags && unshare(flags) != 0)
		die("unshare(%#x): %s", flags, strerror(errno));
	if (uts && sethostname("ckpt-userns", 11) != 0)
		die("sethostname: %s", strerror(errno));
	if (ipc)
		put("/proc/sys/kernel/msgmni", "77\n");
	if (wide) {
		gid_t groups[2] = {1000, 5};
		if (setgroups(2, groups) != 0 || setresgid(1000, 1000, 1000) != 0)
			die("groups: %s", strerror(errno));
		if (prctl(PR_SET_KEEPCAPS, 1) != 0 || setresuid(1000, 1000, 0) != 0)
			die("user IDs: %s", strerror(errno));
		struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct d[2] = {{0}};
		unsigned want = (1u << CAP_CHOWN) | (1u << CAP_NET_ADMIN);
		d[0].effective = want;
		d[0].permitted = want;
		d[0].inheritable = 1u << CAP_KILL;
		if (syscall(SYS_capset, &h, d) != 0)
			die("capset: %s", strerror(errno));
	}
	char mine[256];
	ids(mine, sizeof mine);
	if (child) {
		pid_t c = fork();
		if (c < 0)
			die("fork: %s", strerror(errno));
		if (c == 0) {
			int ok = 1;
			for (long i = 0; i < steps + 5; i++) {
				char now[256];
				ids(now, sizeof now);
				if (strcmp(now, mine) != 0)
					ok = 0;
				sleep_ms(ms);
			}
			_exit(ok ? 42 : 43);
		}
	}
	if (threads) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle, NULL) != 0)
			die("pthread_create");
	}
	out("started\n");
	for (long i = 0; i < steps; i++) {
		char now[256], map[256], host[128] = "-", l[64] = "-", file[64] = "-";
		ids(now, sizeof now);
		get("/proc/self/uid_map", map, sizeof map);
		squeeze(map);
		if (uts)
			gethostname(host, sizeof host);
		if (ipc) {
			get("/proc/sys/kernel/msgmni", l, sizeof l);
			squeeze(l);
		}
		if (dir) {
			char path[4096];
			struct stat st;
			snprintf(path, sizeof path, "%s/step%ld", dir, i);
			int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
			if (fd < 0 || fstat(fd, &st) != 0)
				snprintf(file, sizeof file, "error %d", errno);
			else
				snprintf(file, sizeof file, "%u:%u", st.st_uid, st.st_gid);
			if (fd >= 0)
				close(fd);
		}
		out("step %ld %s map=[%s] host=%s msgmni=%s file=%s\n", i, now, map, host, l, file);
		sleep_ms(ms);
	}
	if (child) {
		int st;
		if (wait(&st) < 0)
			die("wait: %s", strerror(errno));
		out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	return 0;
}
