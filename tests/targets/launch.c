/* launch PROG ARGS...
 *
 * A parent of another ABI's program, for mixed 32/64-bit trees: built 64-bit (launch64)
 * and 32-bit (launch32, gcc -m32). It does some work of its own (heap, x87
 * math) before it forks, fork+execs PROG with ARGS, waits for it (blocked in wait4, a
 * system call a checkpoint must restart), and then prints the child's exit status and
 * its own state again, computed from what it kept across the wait. The lines it prints
 * do not depend on its word size. */
#include "util.h"

#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: launch PROG ARGS...");
	const char *base = strrchr(argv[1], '/');
	base = base ? base + 1 : argv[1];

	uint32_t *heap = malloc(4096 * sizeof *heap);
	if (!heap)
		die("malloc failed");
	volatile long double x87 = 1.0L;
	for (uint32_t k = 0; k < 4096; k++) {
		heap[k] = k * 40503u ^ 0xdeadbeefu;
		if (k < 200) {
			x87 = x87 * 1.001L + 1.0L / (long double)(k + 1);
		}
	}
	uint32_t h = fnv(FNV_INIT, heap, 4096 * sizeof *heap);
	out("launcher: heap %08x x87 %.21Lg; starting %s\n", h, (long double)x87, base);

	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		execv(argv[1], argv + 1);
		die("exec %s: %s", argv[1], strerror(errno));
	}
	int st;
	pid_t r;
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		out("launcher: waitpid interrupted\n");
	if (r != pid)
		die("waitpid: %s", strerror(errno));
	if (WIFEXITED(st))
		out("launcher: %s exited with status %d\n", base, WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		out("launcher: %s killed by signal %d\n", base, WTERMSIG(st));
	else
		out("launcher: %s ended with raw status %#x\n", base, st);
	for (uint32_t k = 0; k < 4096; k++)
		heap[k] += (uint32_t)st;
	out("launcher: heap %08x x87 %.21Lg; done\n",
	    fnv(FNV_INIT, heap, 4096 * sizeof *heap), (long double)x87);
	return 0;
}
