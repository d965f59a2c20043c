/* zombieuser: a zombie of another user, with limits, dispositions and a name of its own.
 *
 * usage: zombieuser
 *
 * The child names itself "zuser", lowers its RLIMIT_NOFILE to 64:128, ignores SIGHUP,
 * catches SIGUSR2, blocks SIGWINCH, drops to groups 5,6, group IDs 100/101/102 and user
 * IDs 1000/1001/1002, and exits with status 7. The parent prints "ready" once the child
 * is a zombie (waitid WEXITED | WNOWAIT), waits for SIGUSR1 (in sigwaitinfo, at rest),
 * then reaps the child, prints its status and exits 0. Needs root. */
#include "util.h"

#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static void on_usr2(int sig)
{
	(void)sig;
}

int main(void)
{
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &usr1, NULL))
		die("sigprocmask: %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0) {
		prctl(PR_SET_NAME, "zuser", 0, 0, 0);
		struct rlimit rl = { 64, 128 };
		if (setrlimit(RLIMIT_NOFILE, &rl))
			die("setrlimit: %s", strerror(errno));
		signal(SIGHUP, SIG_IGN);
		signal(SIGUSR2, on_usr2);
		sigset_t winch;
		sigemptyset(&winch);
		sigaddset(&winch, SIGWINCH);
		sigprocmask(SIG_BLOCK, &winch, NULL);
		gid_t groups[] = { 5, 6 };
		if (setgroups(2, groups) || setresgid(100, 101, 102) || setresuid(1000, 1001, 1002))
			die("dropping privileges: %s", strerror(errno));
		exit(7);
	}
	siginfo_t si;
	while (waitid(P_PID, (id_t)c, &si, WEXITED | WNOWAIT) < 0)
		if (errno != EINTR)
			die("waitid: %s", strerror(errno));
	out("ready\n");
	while (sigwaitinfo(&usr1, NULL) < 0)
		if (errno != EINTR)
			die("sigwaitinfo: %s", strerror(errno));
	int st;
	if (waitpid(c, &st, 0) != c)
		die("waitpid: %s", strerror(errno));
	out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
