/* orphan CMD [ARG...]
 *
 * Runs CMD, a program that forks one child and waits for it (`unshare -U -r -p -m -f
 * --mount-proc PROG`), and takes that child over: it becomes a child subreaper, starts
 * CMD, waits until CMD has a child, kills CMD (SIGKILL) and reaps it, so that CMD's
 * child, reparented to it, is the only process left in the namespaces CMD made (a
 * rootless container's init whose runtime went away). Then it waits for its children
 * and exits with the status of the last one that ended (128 + signal if killed).
 * Prints nothing of its own; stdin, stdout and stderr are CMD's. */
#include "util.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

/* Whether process `pid` has a child (its main thread's children list). */
static int has_child(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	return buf[0] >= '0' && buf[0] <= '9';
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: orphan CMD [ARG...]");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	pid_t cmd = fork();
	if (cmd < 0)
		die("fork: %s", strerror(errno));
	if (cmd == 0) {
		execvp(argv[1], argv + 1);
		die("exec %s: %s", argv[1], strerror(errno));
	}
	for (int i = 0; !has_child(cmd); i++) {
		int st;
		if (waitpid(cmd, &st, WNOHANG) == cmd)
			die("%s ended before it forked", argv[1]);
		if (i > 20000)
			die("%s made no child", argv[1]);
		usleep(500);
	}
	kill(cmd, SIGKILL);
	if (waitpid(cmd, NULL, 0) != cmd)
		die("waitpid %s: %s", argv[1], strerror(errno));
	int code = 0;
	for (;;) {
		int st;
		pid_t p = wait(&st);
		if (p < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	return code;
}
