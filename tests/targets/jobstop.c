/* jobstop: processes stopped by job control in a running tree.
 *
 * usage: jobstop
 *
 * The root forks "c1", which starts a second thread (blocked in pause()) and stops itself with SIGTSTP (as Ctrl-Z would); the root
 * collects that stop (waitpid WUNTRACED) and prints it, then forks "c2", which forks
 * "g"; g stops itself with SIGSTOP, and c2, still running, sees that (waitid WNOWAIT)
 * but collects the stop only once it is sent SIGUSR1 (it waits for it in sigwaitinfo,
 * at rest). Each parent then prints the stop, waits for its child to be continued
 * (WCONTINUED), prints that, waits for it to exit and prints its status. A continued
 * child waits for SIGUSR1 before it prints a line and exits (c1 with 3, g with 4), so
 * that each line comes in the order the driver decides:
 *   SIGUSR1 to c2, SIGCONT to g, SIGUSR1 to g, SIGCONT to c1, SIGUSR1 to c1,
 * each once the previous line is out. Then the root waits for c2 and prints "done". */
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static sigset_t usr1;

static void name(const char *n)
{
	if (prctl(PR_SET_NAME, n, 0, 0, 0))
		die("PR_SET_NAME: %s", strerror(errno));
}

static void wait_usr1(void)
{
	while (sigwaitinfo(&usr1, NULL) < 0)
		if (errno != EINTR)
			die("sigwaitinfo: %s", strerror(errno));
}

static pid_t waitpid_eintr(pid_t pid, int *st, int flags)
{
	pid_t r;
	while ((r = waitpid(pid, st, flags)) < 0 && errno == EINTR)
		;
	if (r < 0)
		die("waitpid: %s", strerror(errno));
	return r;
}

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* A child that stops itself with `sig`, then, continued, waits for SIGUSR1, prints
 * that it was continued and exits with `code`. */
static pid_t stopping_child(const char *n, int sig, int code)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;
	name(n);
	if (!strcmp(n, "c1")) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle, NULL))
			die("pthread_create failed");
	}
	out("%s: stopping\n", n);
	raise(sig);
	wait_usr1();
	out("%s: continued\n", n);
	exit(code);
}

/* As the parent of `pid`, named `me`: collect its stop, then its continuation, then
 * its exit, printing each. */
static void follow(const char *me, const char *child, pid_t pid)
{
	int st;
	waitpid_eintr(pid, &st, WUNTRACED);
	if (!WIFSTOPPED(st))
		die("%s did not stop: status %#x", child, st);
	out("%s: %s stopped by signal %d\n", me, child, WSTOPSIG(st));
	if (!strcmp(me, "root"))
		return; /* the root goes on with c2 first */
	waitpid_eintr(pid, &st, WCONTINUED);
	if (!WIFCONTINUED(st))
		die("%s: expected a continued report, got status %#x", child, st);
	out("%s: %s continued\n", me, child);
	waitpid_eintr(pid, &st, 0);
	out("%s: %s exited %d\n", me, child, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(void)
{
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &usr1, NULL))
		die("sigprocmask: %s", strerror(errno));
	pid_t c1 = stopping_child("c1", SIGTSTP, 3);
	follow("root", "c1", c1);
	pid_t c2 = fork();
	if (c2 < 0)
		die("fork: %s", strerror(errno));
	if (c2 == 0) {
		name("c2");
		pid_t g = stopping_child("g", SIGSTOP, 4);
		/* Seen without collecting it (WNOWAIT): the stop stays to be collected. */
		siginfo_t si;
		while (waitid(P_PID, (id_t)g, &si, WSTOPPED | WNOWAIT) < 0)
			if (errno != EINTR)
				die("waitid: %s", strerror(errno));
		out("c2: g is stopped, waiting\n");
		wait_usr1();
		follow("c2", "g", g);
		exit(0);
	}
	int st;
	waitpid_eintr(c1, &st, WCONTINUED);
	if (!WIFCONTINUED(st))
		die("c1: expected a continued report, got status %#x", st);
	out("root: c1 continued\n");
	waitpid_eintr(c1, &st, 0);
	out("root: c1 exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	waitpid_eintr(c2, &st, 0);
	out("root: c2 exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	out("done\n");
	return 0;
}
