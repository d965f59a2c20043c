/* nstree STEPS [sleep=MS] [show-pids]
 *
 * A parent and a child that each check, every step, that their PIDs are the ones they
 * had at the start: the parent remembers its getpid() and the child's PID from fork();
 * the child remembers its getpid() and getppid(). The parent prints, every step,
 * whether its own PID, its child's PID (kill(child, 0) succeeds and the child is still
 * ours: waitpid WNOHANG gives 0) are unchanged; the child exits with a status that says
 * whether its PID and its parent's were unchanged all along, which the parent prints at
 * the end. Nothing printed depends on the actual PID values, unless show-pids asks for
 * them on every step (for a tree in a PID namespace of its own, where they are known). */
#include "util.h"
#include <signal.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long ms = 40;
	int show = 0;
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strcmp(argv[i], "show-pids") == 0)
			show = 1;
	}
	pid_t me = getpid();
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		pid_t self = getpid(), parent = getppid();
		int ok = 1;
		for (long i = 0; i < steps + 5; i++) {
			if (getpid() != self || getppid() != parent)
				ok = 0;
			sleep_ms(ms);
		}
		_exit(ok ? 42 : 43);
	}
	out("started a child\n");
	for (long i = 0; i < steps; i++) {
		int st;
		pid_t w = waitpid(child, &st, WNOHANG);
		out("step %ld: pid unchanged: %d child pid unchanged: %d child still running: %d\n",
		    i, getpid() == me, kill(child, 0) == 0, w == 0);
		if (show)
			out("step %ld: pid %d child %d\n", i, (int)getpid(), (int)child);
		sleep_ms(ms);
	}
	int st;
	pid_t w = waitpid(child, &st, 0);
	out("reaped child: %d status %d\n", w == child, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
