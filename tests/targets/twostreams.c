/* twostreams STEPS [sleep=MS]
 *
 * Writes numbered lines alternately to stdout and stderr, one write(2) each. Run as
 * `twostreams ... >FILE 2>&1`, fds 1 and 2 share one open file description (one
 * offset), so the file gets every line once, in order. Were fds 1 and 2 given separate
 * offsets after a restore, the two streams would overwrite each other in the file. */
#include "util.h"

static void line(int fd, const char *fmt, long a, long b)
{
	char buf[128];
	int n = snprintf(buf, sizeof buf, fmt, a, b);
	write_all(fd, buf, (size_t)n);
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long sleep_each = 20;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	uint32_t h = FNV_INIT;
	for (long step = 1; step <= steps; step++) {
		h = fnv(h, &step, sizeof step);
		line(1, "out %ld: %08lx ........................\n", step, (long)h);
		line(2, "err %ld: %08lx ~~~~~~~~~~~~~~~~~~~~\n", step, (long)(h ^ 0xffff));
		sleep_ms(sleep_each);
	}
	line(1, "done after %ld steps, hash %08lx\n", steps, (long)h);
	return 0;
}
