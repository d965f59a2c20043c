/* nsown STEPS [sleep=MS] [shm] [mq]
 *
 * A tree that makes UTS, IPC and time namespaces of its own (as `unshare --uts --ipc
 * --time` would, done here so that the root itself is in the time namespace): it
 * names the host and domain, lowers an IPC limit (kernel.msgmni), moves its monotonic
 * and boot clocks 10 days ahead, enters that time namespace, and forks a child that
 * shares them all. Every step the parent prints the names and the limit it sees and
 * whether both clocks went on from the previous step without jumping (between 0 and
 * 5 s later, and still more than 10 days); the child checks the same every step and
 * exits with a status the parent prints at the end. With `shm`, the parent also makes
 * a System V segment in its IPC namespace (attached by both) and counts in it every
 * step, printing its ID and the count. With `mq`, it makes a POSIX message queue
 * /ckpt-ns-q in its IPC namespace and closes it (only the namespace holds it). Nothing printed depends on the actual times. */
#include "util.h"
#include <fcntl.h>
#include <sched.h>
#include <mqueue.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define AHEAD (10L * 86400)

static long long now_ns(clockid_t c)
{
	struct timespec ts;
	if (clock_gettime(c, &ts) != 0)
		die("clock_gettime: %s", strerror(errno));
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	write_all(fd, text, strlen(text));
	close(fd);
}

static void get(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	ssize_t r = read(fd, buf, n - 1);
	close(fd);
	buf[r > 0 ? r : 0] = 0;
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = 0;
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

static int names_ok(void)
{
	char h[128], d[128], l[64];
	if (gethostname(h, sizeof h) != 0 || getdomainname(d, sizeof d) != 0)
		return 0;
	get("/proc/sys/kernel/msgmni", l, sizeof l);
	return strcmp(h, "ckpt-ns-host") == 0 && strcmp(d, "ckpt-ns-domain") == 0 && strcmp(l, "123") == 0;
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long ms = 40;
	int use_shm = 0, use_mq = 0;
	for (int i = 2; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strcmp(argv[i], "shm") == 0)
			use_shm = 1;
		else if (strcmp(argv[i], "mq") == 0)
			use_mq = 1;
	if (unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWTIME) != 0)
		die("unshare: %s", strerror(errno));
	char off[128];
	snprintf(off, sizeof off, "monotonic %ld 0\nboottime %ld 0\n", AHEAD, AHEAD);
	put("/proc/self/timens_offsets", off);
	int tfd = open("/proc/self/ns/time_for_children", O_RDONLY);
	if (tfd < 0 || setns(tfd, CLONE_NEWTIME) != 0)
		die("setns time_for_children: %s", strerror(errno));
	close(tfd);
	if (sethostname("ckpt-ns-host", 12) != 0 || setdomainname("ckpt-ns-domain", 14) != 0)
		die("sethostname: %s", strerror(errno));
	put("/proc/sys/kernel/msgmni", "123\n");
	if (use_mq) {
		mqd_t q = mq_open("/ckpt-ns-q", O_CREAT | O_RDWR, 0600, NULL);
		if (q == (mqd_t)-1)
			die("mq_open: %s", strerror(errno));
		mq_close(q);
	}
	int shmid = -1;
	volatile long *count = NULL;
	if (use_shm) {
		shmid = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
		if (shmid < 0)
			die("shmget: %s", strerror(errno));
		count = shmat(shmid, NULL, 0);
		if (count == (void *)-1)
			die("shmat: %s", strerror(errno));
	}
	long long m = now_ns(CLOCK_MONOTONIC), b = now_ns(CLOCK_BOOTTIME);
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		int ok = 1;
		for (long i = 0; i < steps + 5; i++) {
			if (!names_ok() || !clocks_ok(&m, &b))
				ok = 0;
			sleep_ms(ms);
		}
		_exit(ok ? 42 : 43);
	}
	out("started a child\n");
	for (long i = 0; i < steps; i++) {
		char h[128], d[128], l[64];
		gethostname(h, sizeof h);
		getdomainname(d, sizeof d);
		get("/proc/sys/kernel/msgmni", l, sizeof l);
		out("step %ld host=%s domain=%s msgmni=%s clocks=%s\n", i, h, d, l,
		    clocks_ok(&m, &b) ? "continuous" : "JUMPED");
		if (use_shm)
			out("shm id=%d count=%ld\n", shmid, ++*count);
		sleep_ms(ms);
	}
	int st;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
