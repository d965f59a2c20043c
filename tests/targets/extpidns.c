/* extpidns [squat ID]
 *
 * A tree inside a PID namespace made outside it, not as its init (started with
 * `nsenter -t HOLDER -p extpidns`, HOLDER the init of a namespace made by `unshare -p -f`):
 * the root R forks a child C and starts a thread T, then prints "ready" and answers
 * commands on stdin, one a line:
 *   check  R asks C (through a pipe) for its getpid() and getppid(), and T for its
 *          gettid(), and prints "check N: R pid=.. ppid=.. levels=.. | C pid=.. ppid=..
 *          child=same|other | T tid=..": R's getppid() is 0 (its parent is outside the
 *          namespace), `levels` the number of IDs in R's NSpid (the test's /proc is the
 *          host's), `child` whether C's getpid() is the ID fork gave R.
 *   exit   C is told to exit 0, R waits for it, prints "C exited S" and exits 0.
 * Between commands every task blocks in a read: the tree is at rest.
 *
 * hold: the init of a PID namespace (`unshare -p -f extpidns hold`), as a pod's pause
 * container is: print "holding" and reap every child it gets (orphans of the
 * namespace) until killed.
 *
 * squat ID: make a child with ID `ID` in this process's PID namespace (clone3 set_tid),
 * which sleeps until killed; print "squatting" and wait for it (for the test of a PID
 * taken in the namespace a restore is to use).
 *
 * Nothing printed depends on host PIDs. */
#include "util.h"
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int to_c[2], from_c[2], to_t[2], from_t[2];

static int levels(void)
{
	char buf[4096];
	FILE *f = fopen("/proc/self/status", "r");
	int n = 0;
	if (!f)
		return 0;
	while (fgets(buf, sizeof buf, f)) {
		if (strncmp(buf, "NSpid:", 6) == 0) {
			char *save = NULL;
			for (char *t = strtok_r(buf + 6, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
				n++;
		}
	}
	fclose(f);
	return n;
}

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *thread_main(void *arg)
{
	(void)arg;
	char c;
	while (read_full(to_t[0], &c, 1) == 0) {
		int tid = (int)syscall(SYS_gettid);
		write_all(from_t[1], (char *)&tid, sizeof tid);
	}
	return NULL;
}

static int squat(int id)
{
	pid_t tid = id;
	struct clone_args args;
	memset(&args, 0, sizeof args);
	args.exit_signal = SIGCHLD;
	args.set_tid = (uint64_t)(uintptr_t)&tid;
	args.set_tid_size = 1;
	long r = syscall(SYS_clone3, &args, sizeof args);
	if (r < 0) {
		printf("squat %d: %s\n", id, strerror(errno));
		return 1;
	}
	if (r == 0) {
		for (;;)
			pause();
	}
	printf("squatting\n");
	fflush(stdout);
	int st;
	waitpid((pid_t)r, &st, 0);
	return 0;
}

static int hold(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	printf("holding\n");
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		sigwaitinfo(&set, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc >= 2 && strcmp(argv[1], "hold") == 0)
		return hold();
	if (argc >= 3 && strcmp(argv[1], "squat") == 0)
		return squat(atoi(argv[2]));
	if (pipe(to_c) || pipe(from_c) || pipe(to_t) || pipe(from_t))
		return 2;
	pid_t c = fork();
	if (c < 0)
		return 3;
	if (c == 0) {
		char cmd;
		while (read_full(to_c[0], &cmd, 1) == 0 && cmd == '?') {
			int ids[2] = {getpid(), getppid()};
			write_all(from_c[1], (char *)ids, sizeof ids);
		}
		_exit(0);
	}
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL) != 0)
		return 4;
	printf("ready\n");
	char line[64];
	int round = 0;
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "check", 5) == 0) {
			int ids[2] = {0, 0}, tid = 0;
			write_all(to_c[1], "?", 1);
			if (read_full(from_c[0], ids, sizeof ids) != 0)
				ids[0] = ids[1] = -1;
			write_all(to_t[1], "?", 1);
			if (read_full(from_t[0], &tid, sizeof tid) != 0)
				tid = -1;
			round++;
			printf("check %d: R pid=%d ppid=%d levels=%d | C pid=%d ppid=%d child=%s | T tid=%d\n",
			       round, getpid(), getppid(), levels(), ids[0], ids[1],
			       ids[0] == c ? "same" : "other", tid);
		} else if (strncmp(line, "exit", 4) == 0) {
			write_all(to_c[1], "q", 1);
			int st = 0;
			if (waitpid(c, &st, 0) != c)
				st = -1;
			printf("C exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			return 0;
		}
	}
	return 5;
}
