/* sealed: holds one page sealed with mseal(2) (an area of its own) and counts.
 *
 * usage: sealed STEPS [sleep=MS] [pidfd] [resident=MIB]
 * pidfd: also hold a pidfd (a descriptor kind dump refuses too).
 * resident=MIB: also write MIB MiB of anonymous memory first.
 *
 * Used to check that `ckpt dump` refuses a sealed area by name, also when it would refuse
 * a descriptor met later and when the process is big enough for smaps to be read on a
 * second thread, and leaves the process running as before. Prints "mseal unsupported"
 * first (and counts on) on a kernel without mseal. */
#include "util.h"

#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef SYS_mseal
#define SYS_mseal 462
#endif

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: sealed STEPS [sleep=MS] [pidfd] [resident=MIB]");
	long steps = arg_long(argc, argv, 1, 0);
	long sleep_each = 20, mib = 0;
	int pidfd = 0;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else if (!strncmp(argv[i], "resident=", 9))
			mib = strtol(argv[i] + 9, NULL, 0);
		else if (!strcmp(argv[i], "pidfd"))
			pidfd = 1;
		else
			die("unknown option %s", argv[i]);
	}
	if (mib > 0) {
		size_t len = (size_t)mib << 20;
		unsigned char *big = mmap(NULL, len, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		for (size_t o = 0; o < len; o += 4096)
			big[o] = (unsigned char)(o >> 12) | 1;
	}
	/* Three pages, the middle one sealed. */
	char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	p[4096] = 1;
	if (syscall(SYS_mseal, p + 4096, 4096, 0)) {
		if (errno != ENOSYS)
			die("mseal: %s", strerror(errno));
		out("mseal unsupported\n");
	}
	if (pidfd && syscall(SYS_pidfd_open, getpid(), 0) < 0)
		die("pidfd_open: %s", strerror(errno));
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
