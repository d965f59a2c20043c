/* measure OUT CMD [ARGS...]: run CMD (stdin/out/err inherited), then append one line to
 * OUT: "wall_s=<s> maxrss_kb=<KiB> status=<exit code or 128+signal>". wall_s runs from
 * just before fork to the child's exit (it includes exec'ing CMD, well under 1 ms);
 * maxrss_kb is the child's peak resident set (wait4 rusage). Exits with CMD's status. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: measure OUT CMD [ARGS...]\n");
		return 2;
	}
	FILE *out = fopen(argv[1], "a");
	if (!out) {
		perror("measure: open OUT");
		return 2;
	}
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	pid_t pid = fork();
	if (pid < 0) {
		perror("measure: fork");
		return 2;
	}
	if (pid == 0) {
		fclose(out);
		execvp(argv[2], argv + 2);
		fprintf(stderr, "measure: exec %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	int st;
	struct rusage ru;
	while (wait4(pid, &st, 0, &ru) < 0) {
		if (errno != EINTR) {
			perror("measure: wait4");
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	fprintf(out, "wall_s=%.6f maxrss_kb=%ld status=%d\n",
		(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, ru.ru_maxrss, code);
	fclose(out);
	return code;
}
