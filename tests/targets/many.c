/* many MIB
 *
 * For `restore --lazy=touch --new-pidns` (tests/e2e_many.rs, scripts/many-bench): a
 * "warmed-up" process: an area of MIB MiB of private anonymous memory holding a known
 * pattern (each 8-byte word a function of its place), and a counter in it. It prints
 * "ready", then obeys one command per line of standard input:
 *   tick      adds one to the counter (kept in the area's first word, beside the
 *             pattern) and prints "count N";
 *   touch K   reads one word in each of K pages spread over the area, checks them,
 *             prints "touched ok" (or "touched BAD at OFFSET");
 *   sum       checks every word of the area; prints "sum ok" or "sum BAD at OFFSET";
 *   end       exits 0.
 * It clears its parent-death signal first (the restored copy must die only through
 * ckpt's watcher or its PID namespace's end). */
#include "util.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#define MB (1024L * 1024)

static uint64_t *area;
static size_t words;

static uint64_t word(size_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ULL;
	return x ^ (x >> 29) ^ 0x5a5a5a5a12345678ULL;
}

static void report(const char *what, long bad)
{
	if (bad < 0)
		out("%s ok\n", what);
	else
		out("%s BAD at %ld\n", what, bad * 8);
}

int main(int argc, char **argv)
{
	prctl(PR_SET_PDEATHSIG, 0);
	long mib = argc > 1 ? atol(argv[1]) : 64;
	if (mib < 1)
		die("usage: many MIB");
	size_t len = (size_t)mib * MB;
	area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	words = len / 8;
	for (size_t i = 0; i < words; i++)
		area[i] = word(i);
	/* the counter: word 0 (checked as word(0) + count) */
	out("ready\n");
	char line[64];
	for (;;) {
		ssize_t n = 0;
		/* one line, read byte by byte (nothing kept in a buffer across a dump) */
		while (n < (ssize_t)sizeof line - 1) {
			ssize_t r = read(0, line + n, 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				die("stdin closed");
			if (line[n++] == '\n')
				break;
		}
		line[n] = 0;
		if (strncmp(line, "tick", 4) == 0) {
			area[0]++;
			out("count %lu\n", (unsigned long)(area[0] - word(0)));
		} else if (strncmp(line, "touch ", 6) == 0) {
			long k = atol(line + 6);
			size_t pages = len / 4096;
			if (k < 1)
				k = 1;
			long bad = -1;
			for (long j = 0; j < k && bad < 0; j++) {
				size_t i = ((size_t)j * pages / (size_t)k) * 512 + 7;
				if (i < words && area[i] != word(i))
					bad = (long)i;
			}
			report("touched", bad);
		} else if (strncmp(line, "sum", 3) == 0) {
			long bad = -1;
			for (size_t i = 1; i < words && bad < 0; i++)
				if (area[i] != word(i))
					bad = (long)i;
			report("sum", bad);
		} else if (strncmp(line, "end", 3) == 0) {
			return 0;
		} else {
			die("unknown command %s", line);
		}
	}
}
