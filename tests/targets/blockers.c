/* Threads blocked in system calls that a checkpoint must not disturb.
 *
 * Usage: blockers [SLEEP_SECONDS [exact]]
 *        blockers handler MB (see handler_mode)
 *
 * One thread per blocking call, each made with syscall(2) so the call is exactly the one
 * named: epoll_wait without and with a timeout, epoll_pwait with a signal mask, poll
 * without and with a timeout, ppoll with a signal mask, select without and with a
 * timeout, nanosleep (SLEEP_SECONDS, default 6), read on a pipe, futex wait without and
 * with a relative timeout, FUTEX_WAIT_BITSET with an absolute one, rt_sigtimedwait (with
 * a timeout) for SIGUSR2, which every blocker thread keeps blocked. No signal handler is
 * installed and no other signal is sent:
 * none of the calls may fail with EINTR or return before it is fed.
 *
 * The main thread prints "ready" once every thread is about to block, then blocks in
 * read(0). On a line from stdin it checks that no call has returned yet, feeds every call
 * (a byte into its pipe, a futex wake, SIGUSR2 to the sigtimedwait thread), waits for
 * the threads and prints one line per call, in a fixed order: "NAME: ok" or what went
 * wrong. A thread that used a signal mask also checks that its mask is back to what it
 * was before the call. */
#include "util.h"

#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>

#define LONG_MS 120000 /* the timeouts: far longer than any test */

enum kind {
	EPOLL,
	EPOLL_TIMED,
	EPOLL_PWAIT,
	POLL,
	POLL_TIMED,
	PPOLL,
	SELECT,
	SELECT_TIMED,
	NANOSLEEP,
	READ,
	FUTEX,
	FUTEX_TIMED,
	SIGTIMEDWAIT,
	FUTEX_BITSET,
	NKINDS,
};

static const char *names[NKINDS] = {
	"epoll_wait", "epoll_wait timeout", "epoll_pwait sigmask", "poll", "poll timeout",
	"ppoll sigmask", "select", "select timeout", "nanosleep", "read", "futex",
	"futex timeout", "sigtimedwait", "futex bitset",
};

/* Calls not started (see main). */
static int skip[NKINDS];

struct blocker {
	enum kind kind;
	int pipe[2];  /* fed by the main thread (not for nanosleep and futex) */
	int epfd;
	uint32_t word; /* futex word */
	pid_t tid;
	volatile int done;
	char result[160];
};

static struct blocker b[NKINDS];
static long sleep_secs = 6;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(struct blocker *x, long r, int err)
{
	if (r < 0 && err == EINTR)
		snprintf(x->result, sizeof x->result, "EINTR");
	else if (r < 0)
		snprintf(x->result, sizeof x->result, "failed (errno %d)", err);
	else if (x->kind == SIGTIMEDWAIT)
		snprintf(x->result, sizeof x->result, r == SIGUSR2 ? "ok" : "returned %ld", r);
	else if (x->kind == NANOSLEEP || x->kind == FUTEX || x->kind == FUTEX_TIMED ||
		 x->kind == FUTEX_BITSET)
		snprintf(x->result, sizeof x->result, r == 0 ? "ok" : "returned %ld", r);
	else if (r == 0)
		snprintf(x->result, sizeof x->result, "timed out");
	else if (r != 1)
		snprintf(x->result, sizeof x->result, "returned %ld", r);
	else
		snprintf(x->result, sizeof x->result, "ok");
}

/* SIGUSR1 added to the mask by the calls that take one; the thread's own mask (before
 * and after the call) has SIGUSR2 blocked. */
static void masks(sigset_t *own, sigset_t *during)
{
	sigemptyset(own);
	sigaddset(own, SIGUSR2);
	*during = *own;
	sigaddset(during, SIGUSR1);
}

static void check_mask_after(struct blocker *x, const sigset_t *own)
{
	sigset_t now_mask;
	pthread_sigmask(SIG_BLOCK, NULL, &now_mask);
	if (strcmp(x->result, "ok") != 0)
		return;
	if (sigismember(&now_mask, SIGUSR1) != sigismember(own, SIGUSR1) ||
	    sigismember(&now_mask, SIGUSR2) != sigismember(own, SIGUSR2))
		snprintf(x->result, sizeof x->result, "ok but its signal mask was not restored");
}

static void *run(void *arg)
{
	struct blocker *x = arg;
	struct epoll_event ev;
	struct pollfd pfd = {.fd = x->pipe[0], .events = POLLIN};
	fd_set rd;
	struct timeval tv = {.tv_sec = LONG_MS / 1000};
	struct timespec ts = {.tv_sec = LONG_MS / 1000}, rem = {0, 0};
	sigset_t own, during;
	char c;
	long r = -1;
	double t0;

	x->tid = (pid_t)syscall(SYS_gettid);
	masks(&own, &during);
	pthread_sigmask(SIG_SETMASK, &own, NULL);
	FD_ZERO(&rd);
	FD_SET(x->pipe[0], &rd);
	switch (x->kind) {
	case EPOLL:
		r = syscall(SYS_epoll_wait, x->epfd, &ev, 1, -1);
		break;
	case EPOLL_TIMED:
		r = syscall(SYS_epoll_wait, x->epfd, &ev, 1, LONG_MS);
		break;
	case EPOLL_PWAIT:
		r = syscall(SYS_epoll_pwait, x->epfd, &ev, 1, -1, &during, 8);
		break;
	case POLL:
		r = syscall(SYS_poll, &pfd, 1, -1);
		break;
	case POLL_TIMED:
		r = syscall(SYS_poll, &pfd, 1, LONG_MS);
		break;
	case PPOLL:
		r = syscall(SYS_ppoll, &pfd, 1, NULL, &during, 8);
		break;
	case SELECT:
		r = syscall(SYS_select, x->pipe[0] + 1, &rd, NULL, NULL, NULL);
		break;
	case SELECT_TIMED:
		r = syscall(SYS_select, x->pipe[0] + 1, &rd, NULL, NULL, &tv);
		break;
	case NANOSLEEP:
		ts.tv_sec = sleep_secs;
		t0 = now();
		r = syscall(SYS_nanosleep, &ts, &rem);
		if (r == 0 && now() - t0 < (double)sleep_secs - 0.01) {
			x->done = 1;
			snprintf(x->result, sizeof x->result, "woke up early");
			return NULL;
		}
		break;
	case READ:
		r = syscall(SYS_read, x->pipe[0], &c, 1);
		break;
	case FUTEX:
		r = syscall(SYS_futex, &x->word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		break;
	case FUTEX_TIMED:
		r = syscall(SYS_futex, &x->word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
		break;
	case FUTEX_BITSET:
		/* As glibc waits with a deadline: an absolute CLOCK_MONOTONIC timeout. */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += LONG_MS / 1000;
		r = syscall(SYS_futex, &x->word, FUTEX_WAIT_BITSET_PRIVATE, 0, &ts, NULL,
			    FUTEX_BITSET_MATCH_ANY);
		break;
	case SIGTIMEDWAIT:
		sigemptyset(&during);
		sigaddset(&during, SIGUSR2);
		r = syscall(SYS_rt_sigtimedwait, &during, NULL, &ts, 8);
		break;
	case NKINDS:
		break;
	}
	int err = errno;
	/* A futex wait that returns before the word changed was not woken by us. */
	if ((x->kind == FUTEX || x->kind == FUTEX_TIMED || x->kind == FUTEX_BITSET) && r == 0 &&
	    __atomic_load_n(&x->word, __ATOMIC_SEQ_CST) == 0)
		r = 1;
	report(x, r, err);
	if (x->kind == EPOLL_PWAIT || x->kind == PPOLL)
		check_mask_after(x, &own);
	__atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static volatile sig_atomic_t handled;

static void on_usr1(int sig)
{
	(void)sig;
	handled = 1;
}

/* "handler MB": one thread with a SIGUSR1 handler (without SA_RESTART) and MB megabytes
 * of data (to make dumps last), blocked in epoll_wait, then in poll, each on a pipe
 * nobody writes: a SIGUSR1 must end each call with EINTR, also when it arrives while a
 * dump holds the process. */
static int handler_mode(long mb)
{
	struct sigaction sa = {.sa_handler = on_usr1};
	struct epoll_event ev = {.events = EPOLLIN};
	int p[2], ep;
	long r;

	sigaction(SIGUSR1, &sa, NULL);
	size_t len = (size_t)mb << 20;
	unsigned char *data = malloc(len);
	if (!data || pipe(p) != 0 || (ep = epoll_create1(0)) < 0 ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
		die("setup: %s", strerror(errno));
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 7 + 1);
	out("ready\n");
	r = syscall(SYS_epoll_wait, ep, &ev, 1, -1);
	out("epoll_wait: %s\n", r < 0 && errno == EINTR && handled ? "EINTR after the handler" : "wrong");
	handled = 0;
	struct pollfd pfd = {.fd = p[0], .events = POLLIN};
	r = syscall(SYS_poll, &pfd, 1, -1);
	out("poll: %s\n", r < 0 && errno == EINTR && handled ? "EINTR after the handler" : "wrong");
	return data[len / 2] == 0; /* keep the data */
}

int main(int argc, char **argv)
{
	pthread_t th[NKINDS];
	char line[64];

	if (argc > 2 && strcmp(argv[1], "handler") == 0)
		return handler_mode(atol(argv[2]));
	if (argc > 1)
		sleep_secs = atol(argv[1]);
	/* "exact": only the calls a dump can leave in a state that any later image restores
	 * exactly (not poll and FUTEX_WAIT with a relative timeout, which the kernel resumes
	 * through restart_syscall once they were interrupted). */
	if (argc > 2 && strcmp(argv[2], "exact") == 0)
		skip[POLL_TIMED] = skip[FUTEX_TIMED] = 1;
	for (int i = 0; i < NKINDS; i++) {
		b[i].kind = (enum kind)i;
		if (pipe(b[i].pipe) != 0)
			die("pipe: %s", strerror(errno));
		if (i == EPOLL || i == EPOLL_TIMED || i == EPOLL_PWAIT) {
			struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
			b[i].epfd = epoll_create1(0);
			if (b[i].epfd < 0 || epoll_ctl(b[i].epfd, EPOLL_CTL_ADD, b[i].pipe[0], &ev) != 0)
				die("epoll: %s", strerror(errno));
		}
	}
	for (int i = 0; i < NKINDS; i++)
		if (!skip[i] && pthread_create(&th[i], NULL, run, &b[i]) != 0)
			die("pthread_create");
	out("ready\n");
	ssize_t n = read(0, line, sizeof line);
	if (n <= 0)
		die("read stdin: %zd (errno %d)", n, errno);
	for (int i = 0; i < NKINDS; i++) {
		if (!skip[i] && __atomic_load_n(&b[i].done, __ATOMIC_SEQ_CST) && i != NANOSLEEP) {
			out("%s: returned before it was fed (%s)\n", names[i], b[i].result);
			b[i].result[0] = 0;
		}
	}
	for (int i = 0; i < NKINDS; i++) {
		if (skip[i]) {
			continue;
		} else if (i == FUTEX || i == FUTEX_TIMED || i == FUTEX_BITSET) {
			__atomic_store_n(&b[i].word, 1, __ATOMIC_SEQ_CST);
			syscall(SYS_futex, &b[i].word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
		} else if (i == SIGTIMEDWAIT) {
			syscall(SYS_tgkill, getpid(), b[i].tid, SIGUSR2);
		} else if (i != NANOSLEEP) {
			write_all(b[i].pipe[1], "x", 1);
		}
	}
	for (int i = 0; i < NKINDS; i++) {
		if (skip[i])
			continue;
		pthread_join(th[i], NULL);
		if (b[i].result[0])
			out("%s: %s\n", names[i], b[i].result);
	}
	out("done\n");
	return 0;
}
