/* zombie STEPS_BEFORE STEPS_AFTER GO_FILE [sleep=MS]
 *
 *   R ── Z    exits at once with status 42
 *     └─ P ── Z2   killed by SIGTERM at once
 *
 * Neither zombie is reaped until GO_FILE exists. R peeks at Z without reaping it
 * (waitid WNOWAIT) every step and prints what it sees, counts its SIGCHLDs in a handler,
 * prints STEPS_BEFORE steps, then polls (silently) for GO_FILE. Once it exists, R sends
 * SIGUSR1 to P (which waits for it in sigtimedwait); P reaps Z2, prints how it ended and
 * how much of its alarm(100) is left, and exits; R waits for P, then reaps Z, prints
 * both statuses and its SIGCHLD count, and prints STEPS_AFTER more steps. The test dumps
 * while both zombies exist and creates GO_FILE after the restore: the statuses are
 * collected by the restored processes. */
#include "util.h"
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t chld;

static void on_chld(int s)
{
	(void)s;
	chld++;
}

static void wait_go(const char *go)
{
	for (int i = 0; access(go, F_OK) != 0; i++) {
		if (i > 4000) {
			out("R: gave up waiting for %s\n", go);
			exit(9);
		}
		sleep_ms(5);
	}
}

static const char *describe(int st)
{
	static char buf[64];
	if (WIFEXITED(st))
		snprintf(buf, sizeof buf, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof buf, "killed by signal %d", WTERMSIG(st));
	else
		snprintf(buf, sizeof buf, "raw status %#x", st);
	return buf;
}

int main(int argc, char **argv)
{
	long before = arg_long(argc, argv, 1, 20);
	long after = arg_long(argc, argv, 2, 10);
	if (argc < 4)
		die("usage: zombie STEPS_BEFORE STEPS_AFTER GO_FILE [sleep=MS]");
	const char *go = argv[3];
	long ms = 20;
	for (int i = 4; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = atol(argv[i] + 6);
		else
			die("unknown option %s", argv[i]);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_chld;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);

	pid_t z = fork();
	if (z < 0)
		die("fork: %s", strerror(errno));
	if (z == 0)
		_exit(42);
	/* Wait for Z to be a zombie, without reaping it. */
	siginfo_t si;
	memset(&si, 0, sizeof si);
	while (waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT) != 0)
		if (errno != EINTR)
			die("waitid: %s", strerror(errno));
	/* The SIGCHLD was queued before waitid woke up; it is handled by now. */
	out("Z is a zombie: code %d status %d, SIGCHLD x%d\n", si.si_code == CLD_EXITED,
	    si.si_status, (int)chld);

	pid_t p = fork();
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		signal(SIGCHLD, SIG_DFL);
		sigset_t usr1;
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr1, NULL);
		alarm(100);
		pid_t z2 = fork();
		if (z2 < 0)
			die("P: fork: %s", strerror(errno));
		if (z2 == 0) {
			signal(SIGTERM, SIG_DFL);
			raise(SIGTERM);
			_exit(1);
		}
		for (int waited = 0;;) {
			struct timespec sec = { 1, 0 };
			if (sigtimedwait(&usr1, NULL, &sec) == SIGUSR1)
				break;
			if (errno == EAGAIN && ++waited > 20) {
				out("P: gave up waiting for SIGUSR1\n");
				_exit(9);
			}
		}
		int st;
		if (waitpid(z2, &st, 0) != z2)
			die("P: waitpid: %s", strerror(errno));
		unsigned left = alarm(0);
		out("P: Z2 %s; alarm left in [50,100]: %d\n", describe(st), left >= 50 && left <= 100);
		_exit(3);
	}

	for (long i = 0; i < before; i++) {
		memset(&si, 0, sizeof si);
		int r = waitid(P_PID, (id_t)z, &si, WEXITED | WNOHANG | WNOWAIT);
		out("step %ld: Z waitable %d, code exited %d, status %d, SIGCHLD x%d\n", i,
		    r == 0 && si.si_pid == z, si.si_code == CLD_EXITED, si.si_status, (int)chld);
		sleep_ms(ms);
	}
	wait_go(go);
	if (kill(p, SIGUSR1) != 0)
		die("kill P: %s", strerror(errno));
	int st;
	if (waitpid(p, &st, 0) != p)
		die("waitpid P: %s", strerror(errno));
	out("R: P %s\n", describe(st));
	if (waitpid(z, &st, 0) != z)
		die("waitpid Z: %s", strerror(errno));
	out("R: Z %s; SIGCHLD x%d\n", describe(st), (int)chld);
	int left = waitpid(-1, &st, WNOHANG);
	out("R: no children left %d\n", left < 0 && errno == ECHILD);
	for (long i = 0; i < after; i++) {
		out("after %ld\n", i);
		sleep_ms(ms);
	}
	return 0;
}
