/* Targets for the state oracle (tests/e2e_oracle.rs): each mode sets up one piece of
 * kernel state that ckpt is known to lose or that only the oracle can see, then the
 * program waits, quiescent, in epoll_wait on its stdin:
 *
 *   oracle MODE...     modes: nonblock oom noreserve droppable thp cow memfd deleted
 *                      clonefiles sigevthread sigevfast sockshut setown prctl
 *
 * It prints "ready" once set up. On a line "report" it prints its own view of what only
 * the task can tell (prctl values, how often epoll_wait failed with EINTR); on "exit" or
 * end of file it exits 0 (after its children). Children of the tree wait in pause(). */
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

static pid_t children[8];
static int nchildren;
static volatile int ticks;
static int use_epoll = 1;

static void child_wait(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;)
		pause();
}

static void spawn_child(unsigned long flags)
{
	pid_t c = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	if (c < 0)
		die("clone: %s", strerror(errno));
	if (c == 0)
		child_wait();
	children[nchildren++] = c;
}

static void tick(union sigval v)
{
	(void)v;
	ticks++;
}

static void setup(const char *m)
{
	if (!strcmp(m, "nonblock")) {
		/* a second open file description of the pipe's read end, non-blocking */
		int p[2];
		char path[64];
		if (pipe(p))
			die("pipe");
		snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
		if (open(path, O_RDONLY | O_NONBLOCK) < 0)
			die("open %s: %s", path, strerror(errno));
	} else if (!strcmp(m, "oom")) {
		int fd = open("/proc/self/oom_score_adj", O_WRONLY);
		if (fd < 0 || write(fd, "500", 3) != 3)
			die("oom_score_adj");
		close(fd);
	} else if (!strcmp(m, "noreserve") || !strcmp(m, "droppable")) {
		int extra = m[0] == 'n' ? MAP_NORESERVE : MAP_DROPPABLE;
		int type = m[0] == 'n' ? MAP_PRIVATE : 0;
		char *a = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, type | MAP_ANONYMOUS | extra,
			       -1, 0);
		if (a == MAP_FAILED)
			die("mmap %s: %s", m, strerror(errno));
		memset(a, 7, 4096);
	} else if (!strcmp(m, "thp")) {
		if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
			die("PR_SET_THP_DISABLE");
	} else if (!strcmp(m, "cow")) {
		/* 64 written private pages, then a child: the pages are shared copy-on-write */
		char *a = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (a == MAP_FAILED)
			die("mmap");
		for (int i = 0; i < 64; i++)
			memset(a + i * 4096, i + 1, 4096);
		spawn_child(0);
	} else if (!strcmp(m, "memfd")) {
		int fd = memfd_create("oracle", 0);
		if (fd < 0 || fchmod(fd, 0642) || write(fd, "memfd data\n", 11) != 11)
			die("memfd");
	} else if (!strcmp(m, "deleted")) {
		/* a file with a hole, owned by 1000:1000, deleted while open */
		int fd = open("oracle-deleted.bin", O_RDWR | O_CREAT | O_TRUNC, 0640);
		if (fd < 0 || pwrite(fd, "head", 4, 0) != 4 || pwrite(fd, "tail", 4, 1 << 20) != 4)
			die("deleted file");
		if (fchown(fd, 1000, 1000) || unlink("oracle-deleted.bin"))
			die("chown/unlink");
	} else if (!strcmp(m, "clonefiles")) {
		/* (no epoll instance in the shared table: ckpt refuses to restore that) */
		use_epoll = 0;
		spawn_child(CLONE_FILES);
	} else if (!strcmp(m, "sigevthread")) {
		/* a timer notifying through a thread (glibc: SIGEV_THREAD_ID and signal 32) */
		timer_t t;
		struct sigevent ev = { 0 };
		ev.sigev_notify = SIGEV_THREAD;
		ev.sigev_notify_function = tick;
		if (timer_create(CLOCK_MONOTONIC, &ev, &t))
			die("timer_create");
		struct itimerspec its = { { 3600, 0 }, { 3600, 0 } };
		if (timer_settime(t, 0, &its, NULL))
			die("timer_settime");
	} else if (!strcmp(m, "sigevfast")) {
		/* the same, firing every 20 ms: on "ticks" the program says whether it still
		 * runs its timer function */
		timer_t t;
		struct sigevent ev = { 0 };
		ev.sigev_notify = SIGEV_THREAD;
		ev.sigev_notify_function = tick;
		if (timer_create(CLOCK_MONOTONIC, &ev, &t))
			die("timer_create");
		struct itimerspec its = { { 0, 20000000 }, { 0, 20000000 } };
		if (timer_settime(t, 0, &its, NULL))
			die("timer_settime");
	} else if (!strcmp(m, "sockshut")) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || shutdown(sv[0], SHUT_WR))
			die("socketpair/shutdown");
	} else if (!strcmp(m, "setown")) {
		int p[2];
		if (pipe(p) || fcntl(p[0], F_SETOWN, getpid()) || fcntl(p[0], F_SETSIG, SIGUSR1))
			die("F_SETOWN/F_SETSIG");
	} else if (!strcmp(m, "prctl")) {
		if (prctl(PR_SET_NAME, "oracle-nm") || prctl(PR_SET_CHILD_SUBREAPER, 1) ||
		    prctl(PR_SET_PDEATHSIG, SIGUSR2) || prctl(PR_SET_TIMERSLACK, 123456) ||
		    prctl(PR_SET_SECUREBITS, 0x10 /* SECBIT_KEEP_CAPS */) ||
		    prctl(PR_SET_DUMPABLE, 0))
			die("prctl: %s", strerror(errno));
	} else {
		die("unknown mode %s", m);
	}
}

static void report(int eintr)
{
	char name[17] = { 0 };
	int subreaper = -1, pdeathsig = -1;
	prctl(PR_GET_NAME, name);
	prctl(PR_GET_CHILD_SUBREAPER, &subreaper);
	prctl(PR_GET_PDEATHSIG, &pdeathsig);
	out("report: name=%s dumpable=%d subreaper=%d pdeathsig=%d securebits=%#x thp_disable=%d "
	    "no_new_privs=%d seccomp=%d timerslack=%d epoll_eintr=%d\n",
	    name, prctl(PR_GET_DUMPABLE), subreaper, pdeathsig, prctl(PR_GET_SECUREBITS),
	    prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
	    prctl(PR_GET_SECCOMP), prctl(PR_GET_TIMERSLACK), eintr);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		setup(argv[i]);
	int ep = use_epoll ? epoll_create1(EPOLL_CLOEXEC) : -1;
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = 0 };
	if (use_epoll && (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev)))
		die("epoll");
	out("ready\n");
	int eintr = 0;
	char line[256];
	size_t have = 0;
	for (;;) {
		struct epoll_event got;
		int n = use_epoll ? epoll_wait(ep, &got, 1, -1) : 1;
		if (n < 0 && errno == EINTR) {
			eintr++;
			continue;
		}
		if (n < 0)
			die("epoll_wait: %s", strerror(errno));
		ssize_t r = read(0, line + have, sizeof line - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
		line[have] = 0;
		char *nl;
		int quit = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (!strcmp(line, "report"))
				report(eintr);
			else if (!strcmp(line, "exit"))
				quit = 1;
			else if (!strcmp(line, "ticks")) {
				int from = ticks;
				for (int w = 0; w < 200 && ticks < from + 3; w++)
					usleep(10000);
				out(ticks >= from + 3 ? "ticking\n" : "not ticking\n");
			}
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, have - used + 1);
			have -= used;
		}
		if (quit)
			break;
	}
	for (int i = 0; i < nchildren; i++) {
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
	}
	out("bye\n");
	return 0;
}
