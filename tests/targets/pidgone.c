/* pidgone STEPS MODE [CGROUP]
 *
 * Pidfds restore used to refuse.
 *   thread  a pidfd of one of its threads (pidfd_open with PIDFD_THREAD, Linux 6.9) as
 *           fd 3, and a dup of it as fd 4. At the end: the pidfd's status flags, whether
 *           fdinfo's Pid is the thread's ID, what poll says while the thread lives, where
 *           a signal sent through it lands (pidfd_send_signal: to that thread), then the
 *           thread ends and poll says it (readable), and the dup is the same description.
 *   reaped  pidfds of two children that ended and were reaped: one exited with code 3
 *           (fd 3), one killed by SIGTERM (fd 4, opened non-blocking with PIDFD_THREAD).
 *           At the end, for each: status flags, fdinfo's Pid and NSpid, what poll says,
 *           what pidfd_send_signal and waitid(P_PIDFD) answer, and the exit status
 *           PIDFD_GET_INFO tells (Linux 6.15; "not told" before).
 *   reapedcg CGROUP  as reaped, the child that exits with code 3 first moving itself
 *           into cgroup v2 directory CGROUP; at the end also whether PIDFD_GET_INFO's
 *           cgroup ID of each is CGROUP's (its inode number).
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then the above. */
#include "pidinfo.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
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

static volatile pid_t thread_tid, got_in;
static volatile int stop;

static void on_usr1(int sig)
{
	(void)sig;
	got_in = (pid_t)syscall(SYS_gettid);
}

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	while (!stop)
		sleep_ms(5);
	return NULL;
}

static int revents(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 0) < 0)
		die("poll: %s", strerror(errno));
	return p.revents;
}

static const char *err(long r)
{
	return r < 0 ? strerrorname_np(errno) : "ok";
}

static const char *cgroup_dir;

static void show_reaped(int fd, const char *what)
{
	out("%s: flags %o, Pid %s, NSpid %s, poll %#x\n", what, fcntl(fd, F_GETFL) & ~O_LARGEFILE,
	    fdinfo(fd, "Pid"), fdinfo(fd, "NSpid"), revents(fd));
	out("%s: pidfd_send_signal %s\n", what,
	    err(syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0)));
	siginfo_t si;
	out("%s: waitid %s\n", what, err(waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG)));
	struct info in;
	memset(&in, 0, sizeof in);
	in.mask = INFO_EXIT | INFO_CGROUPID;
	int got = ioctl(fd, GET_INFO, &in) == 0;
	if (got && (in.mask & INFO_EXIT))
		out("%s: exit status %#x\n", what, in.exit_code);
	else
		out("%s: exit status not told\n", what);
	struct stat st;
	if (cgroup_dir && stat(cgroup_dir, &st) == 0)
		out("%s: cgroup ID is CGROUP's: %s\n", what,
		    got && (in.mask & INFO_CGROUPID) && in.cgroupid == (uint64_t)st.st_ino ? "yes" : "no");
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: pidgone STEPS MODE");
	long steps = arg_long(argc, argv, 1, 0);
	const char *mode = argv[2];
	pthread_t th;
	if (!strcmp(mode, "thread")) {
		signal(SIGUSR1, on_usr1);
		if (pthread_create(&th, NULL, thread_main, NULL))
			die("pthread_create");
		while (!thread_tid)
			sleep_ms(1);
		if (pidfd_open(thread_tid, PIDFD_THREAD) != 3 || dup(3) != 4)
			die("pidfd_open(thread): %s", strerror(errno));
	} else if (!strcmp(mode, "reaped") || !strcmp(mode, "reapedcg")) {
		if (!strcmp(mode, "reapedcg")) {
			if (argc < 4)
				die("usage: pidgone STEPS reapedcg CGROUP");
			cgroup_dir = argv[3];
		}
		/* Each child waits for its pidfd to exist before it ends. */
		int go[2];
		for (int k = 0; k < 2; k++) {
			if (pipe(go))
				die("pipe: %s", strerror(errno));
			pid_t c = fork();
			if (c < 0)
				die("fork: %s", strerror(errno));
			if (c == 0) {
				char b;
				close(go[1]);
				if (read(go[0], &b, 1) < 0)
					_exit(100);
				if (k == 0 && cgroup_dir) {
					char p[4096];
					snprintf(p, sizeof p, "%s/cgroup.procs", cgroup_dir);
					int f = open(p, O_WRONLY);
					if (f < 0 || write(f, "0", 1) != 1)
						_exit(101);
					close(f);
				}
				if (k == 1)
					kill(getpid(), SIGTERM);
				_exit(3);
			}
			close(go[0]);
			int fd = pidfd_open(c, k ? PIDFD_NONBLOCK | PIDFD_THREAD : 0);
			if (fd != 3 + k)
				die("pidfd_open(child): %d %s", fd, strerror(errno));
			close(go[1]);
			if (waitpid(c, NULL, 0) != c)
				die("waitpid: %s", strerror(errno));
		}
	} else {
		die("unknown mode %s", mode);
	}
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	if (strcmp(mode, "thread")) {
		show_reaped(3, "exited");
		show_reaped(4, "killed");
		out("done\n");
		return 0;
	}
	char pid_s[32];
	snprintf(pid_s, sizeof pid_s, "%d", (int)thread_tid);
	out("thread pidfd: flags %o, Pid is the thread's: %s, NSpid is the thread's: %s\n",
	    fcntl(3, F_GETFL) & ~O_LARGEFILE, strcmp(fdinfo(3, "Pid"), pid_s) ? "no" : "yes",
	    strcmp(fdinfo(3, "NSpid"), pid_s) ? "no" : "yes");
	out("while it runs: poll %#x\n", revents(3));
	if (syscall(SYS_pidfd_send_signal, 4, SIGUSR1, NULL, 0))
		die("pidfd_send_signal: %s", strerror(errno));
	while (!got_in)
		sleep_ms(1);
	out("the signal went to: %s\n", got_in == thread_tid ? "the thread" : "another thread");
	stop = 1;
	pthread_join(th, NULL);
	struct pollfd p = { .fd = 3, .events = POLLIN };
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			die("poll: %s", strerror(errno));
	out("once it ended: poll %#x, Pid %s\n", p.revents, fdinfo(3, "Pid"));
	out("the dup is the same description: %s\n",
	    syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 3, 4) == 0 ? "yes" : "no");
	out("done\n");
	return 0;
}
