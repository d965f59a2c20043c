/* pidfds: holds process descriptors (pidfds) and uses them after its steps.
 *
 * usage: pidfds STEPS MODE [sleep=MS]
 * MODE tree: the process holds a non-blocking pidfd of itself, a pidfd of a child made
 *   with clone(CLONE_PIDFD) (and a dup of it), a pidfd of a second child that has exited
 *   (a zombie, not reaped), and the first child's eventfd taken with pidfd_getfd. Each
 *   step it adds 1 to that eventfd and signals itself through its own pidfd; at the end
 *   it tells the child to exit, waits for it with poll and waitid(P_PIDFD) on the pidfd
 *   (the child's exit code is what it counted), and reaps the zombie the same way.
 * MODE outside: the process holds a pidfd of its parent (outside the dumped tree).
 * MODE reaped: a pidfd of a child that exited and was reaped.
 * MODE thread: a pidfd of one of its threads (PIDFD_THREAD).
 * (Pidfds of a thread or a reaped child are restored: tests/e2e_pidgone.rs.)
 * Output: one "step N" line a step, then what the descriptors showed. */
#define _GNU_SOURCE
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

#define CHILD_EFD 40

static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static int pidfd_open(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

/* The first child: counts what comes through its eventfd until the count reaches 1000
 * or more, then exits with what it counted below that. */
static void counter_child(int sync)
{
	int e = eventfd(0, 0);
	if (e < 0 || dup2(e, CHILD_EFD) < 0)
		_exit(100);
	close(e);
	if (write(sync, "x", 1) != 1)
		_exit(101);
	close(sync);
	uint64_t total = 0;
	for (;;) {
		uint64_t v;
		if (read(CHILD_EFD, &v, sizeof v) != sizeof v)
			_exit(102);
		total += v;
		if (total >= 1000)
			_exit((int)((total - 1000) & 0x7f));
	}
}

static void wait_pidfd(int pfd, const char *what)
{
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			die("poll %s: %s", what, strerror(errno));
	siginfo_t si;
	memset(&si, 0, sizeof si);
	while (waitid(P_PIDFD, (id_t)pfd, &si, WEXITED) < 0)
		if (errno != EINTR)
			die("waitid %s: %s", what, strerror(errno));
	out("%s exited with code %d (poll revents %#x)\n", what, si.si_status, p.revents);
}

static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: pidfds STEPS MODE [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	const char *mode = argv[2];
	long sleep_each = 20;
	if (argc > 3) {
		if (strncmp(argv[3], "sleep=", 6))
			die("unknown option %s", argv[3]);
		sleep_each = strtol(argv[3] + 6, NULL, 0);
	}
	if (!strcmp(mode, "outside") || !strcmp(mode, "reaped") || !strcmp(mode, "thread")) {
		int pfd;
		if (!strcmp(mode, "outside")) {
			pfd = pidfd_open(getppid(), 0);
		} else if (!strcmp(mode, "reaped")) {
			pid_t c = fork();
			if (c == 0)
				_exit(3);
			pfd = pidfd_open(c, 0);
			if (waitpid(c, NULL, 0) != c)
				die("waitpid: %s", strerror(errno));
		} else {
			pthread_t th;
			if (pthread_create(&th, NULL, thread_main, NULL))
				die("pthread_create");
			while (!thread_tid)
				sleep_ms(1);
			pfd = pidfd_open(thread_tid, PIDFD_THREAD);
		}
		if (pfd < 0)
			die("pidfd_open(%s): %s", mode, strerror(errno));
		out("holding a pidfd (%s) as fd %d\n", mode, pfd);
		for (long step = 1; step <= steps; step++) {
			out("step %ld\n", step);
			sleep_ms(sleep_each);
		}
		out("done\n");
		return 0;
	}
	if (strcmp(mode, "tree"))
		die("unknown mode %s", mode);
	signal(SIGUSR1, on_usr1);
	int self = pidfd_open(getpid(), PIDFD_NONBLOCK);
	if (self < 0)
		die("pidfd_open(self): %s", strerror(errno));

	/* A child that exits at once: a zombie with a pidfd. */
	int zpd = -1;
	pid_t z = (pid_t)syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &zpd, 0, 0);
	if (z < 0)
		die("clone(CLONE_PIDFD): %s", strerror(errno));
	if (z == 0)
		_exit(7);
	struct pollfd zp = { .fd = zpd, .events = POLLIN };
	if (poll(&zp, 1, -1) != 1)
		die("poll the zombie's pidfd: %s", strerror(errno));

	int sync[2];
	if (pipe(sync))
		die("pipe: %s", strerror(errno));
	int cpd = -1;
	pid_t c = (pid_t)syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &cpd, 0, 0);
	if (c < 0)
		die("clone(CLONE_PIDFD): %s", strerror(errno));
	if (c == 0) {
		close(sync[0]);
		counter_child(sync[1]);
	}
	close(sync[1]);
	char b;
	if (read(sync[0], &b, 1) != 1)
		die("the child did not start");
	close(sync[0]);
	int cdup = dup(cpd);
	int taken = (int)syscall(SYS_pidfd_getfd, cpd, CHILD_EFD, 0);
	if (cdup < 0 || taken < 0)
		die("dup / pidfd_getfd: %s", strerror(errno));
	out("holding pidfds %d (self) %d %d (child) %d (zombie), eventfd %d\n", self, cpd, cdup,
	    zpd, taken);

	for (long step = 1; step <= steps; step++) {
		uint64_t one = 1;
		if (write(taken, &one, sizeof one) != sizeof one)
			die("write the child's eventfd: %s", strerror(errno));
		if (syscall(SYS_pidfd_send_signal, self, SIGUSR1, NULL, 0))
			die("pidfd_send_signal(self): %s", strerror(errno));
		if (syscall(SYS_pidfd_send_signal, cdup, 0, NULL, 0))
			die("pidfd_send_signal(child, 0): %s", strerror(errno));
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	out("SIGUSR1 through its own pidfd: %d\n", (int)usr1);
	out("own pidfd non-blocking: %d\n", (fcntl(self, F_GETFL) & O_NONBLOCK) != 0);
	/* A non-blocking pidfd of a live process: waitid says EAGAIN. */
	siginfo_t si;
	errno = 0;
	int r = waitid(P_PIDFD, (id_t)self, &si, WEXITED | WNOHANG);
	out("waitid on its own pidfd: %d %s\n", r, r ? strerror(errno) : "");
	uint64_t last = 1000;
	if (write(taken, &last, sizeof last) != sizeof last)
		die("write the child's eventfd: %s", strerror(errno));
	wait_pidfd(cpd, "child");
	wait_pidfd(zpd, "zombie");
	out("done\n");
	return 0;
}
