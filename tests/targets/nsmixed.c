/* nsmixed STEPS [sleep=MS]
 *
 * A tree whose processes are in different UTS namespaces: the root (started in one of
 * its own, named ckpt-root by the test) forks a child that makes a UTS namespace of its
 * own, names it ckpt-kid and forks a grandchild, which shares it. Every step the root
 * prints the host name it sees; the child and the grandchild check theirs every step
 * (the grandchild exits 42 if it always read ckpt-kid, else 43; the child the same, and
 * 44 if its child did not exit 42), and the root prints the child's status at the end. */
#include "util.h"
#include <sched.h>
#include <sys/wait.h>

static int named(const char *want)
{
	char h[128];
	return gethostname(h, sizeof h) == 0 && strcmp(h, want) == 0;
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long ms = 40;
	for (int i = 2; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
	pid_t kid = fork();
	if (kid < 0)
		die("fork: %s", strerror(errno));
	if (kid == 0) {
		if (unshare(CLONE_NEWUTS) != 0 || sethostname("ckpt-kid", 8) != 0)
			die("unshare: %s", strerror(errno));
		pid_t gk = fork();
		if (gk < 0)
			die("fork: %s", strerror(errno));
		int ok = 1;
		for (long i = 0; i < steps + 5; i++) {
			ok &= named("ckpt-kid");
			sleep_ms(ms);
		}
		if (gk == 0)
			_exit(ok ? 42 : 43);
		int st;
		if (waitpid(gk, &st, 0) != gk)
			_exit(45);
		_exit(!ok ? 43 : WIFEXITED(st) && WEXITSTATUS(st) == 42 ? 42 : 44);
	}
	out("started a child\n");
	for (long i = 0; i < steps; i++) {
		char h[128];
		gethostname(h, sizeof h);
		out("step %ld host=%s\n", i, h);
		sleep_ms(ms);
	}
	int st;
	if (waitpid(kid, &st, 0) != kid)
		die("waitpid: %s", strerror(errno));
	out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
