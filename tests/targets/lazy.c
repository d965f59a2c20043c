/* lazy MODE MIB
 *
 * For `restore --lazy` (tests/e2e_lazy.rs): an area of MIB MiB of private anonymous
 * memory holding a known pattern (each 8-byte word a function of its place), plus a
 * few pages of zeros touched only by reading. It prints "ready" and then waits for a
 * line on standard input (the test dumps it there and restores it lazily); then, by
 * MODE:
 *   sum      reads the whole area and checks every word; prints "sum ok" or
 *            "sum BAD at OFFSET";
 *   threads  four threads check a quarter each, all at once (faults in parallel);
 *   read     read(2) from a pipe into the middle of a page of the area (the kernel
 *            faults the page in), then checks the bytes read and the rest of the page,
 *            then the whole area;
 *   fork     forks at once; the child checks the whole area and exits 0 if it was
 *            right, the parent checks it too and reports the child's status;
 *   remap    of the last three MiB, drops the first with MADV_DONTNEED (must read
 *            zeros), unmaps the second, moves the third with mremap elsewhere (must
 *            keep its pattern), then checks the rest.
 * It clears its parent-death signal first.
 * Each mode ends by waiting for another line ("end") and exits 0. */
#include "util.h"
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define MB (1024L * 1024)

static uint64_t *area;
static size_t words;

static uint64_t word(size_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ULL;
	return x ^ (x >> 29) ^ 0x5a5a5a5a12345678ULL;
}

/* Returns the index of the first wrong word in [from, to), or -1. */
static long check(size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (area[i] != word(i))
			return (long)i;
	return -1;
}

static void report(const char *what, long bad)
{
	if (bad < 0)
		out("%s ok\n", what);
	else
		out("%s BAD at %ld\n", what, bad * 8);
}

struct quarter {
	size_t from, to;
	long bad;
};

static pthread_barrier_t bar;

static void *run_quarter(void *p)
{
	struct quarter *q = p;
	pthread_barrier_wait(&bar);
	q->bad = check(q->from, q->to);
	return NULL;
}

static void wait_line(void)
{
	char buf[64];
	if (!fgets(buf, sizeof buf, stdin))
		die("stdin closed");
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: lazy MODE MIB");
	/* No parent-death signal (the test harness sets one): the restored program must
	 * not die with ckpt for that reason, only through ckpt's watcher. */
	prctl(PR_SET_PDEATHSIG, 0);
	const char *mode = argv[1];
	long mib = arg_long(argc, argv, 2, 64);
	size_t len = (size_t)mib * MB;
	area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	words = len / 8;
	for (size_t i = 0; i < words; i++)
		area[i] = word(i);
	setvbuf(stdout, NULL, _IONBF, 0);
	out("ready\n");
	wait_line();
	if (strcmp(mode, "sum") == 0) {
		report("sum", check(0, words));
	} else if (strcmp(mode, "threads") == 0) {
		pthread_t t[4];
		struct quarter q[4];
		pthread_barrier_init(&bar, NULL, 4);
		for (int i = 0; i < 4; i++) {
			q[i].from = words / 4 * i;
			q[i].to = i == 3 ? words : words / 4 * (i + 1);
			if (pthread_create(&t[i], NULL, run_quarter, &q[i]))
				die("pthread_create");
		}
		long bad = -1;
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			if (q[i].bad >= 0 && bad < 0)
				bad = q[i].bad;
		}
		report("threads", bad);
	} else if (strcmp(mode, "read") == 0) {
		int p[2];
		if (pipe(p))
			die("pipe: %s", strerror(errno));
		const char msg[] = "through the kernel";
		write_all(p[1], msg, sizeof msg);
		/* the middle of a page in the middle of the area */
		size_t off = len / 2 + 100;
		char *at = (char *)area + off;
		ssize_t n = read(p[0], at, sizeof msg);
		if (n != (ssize_t)sizeof msg || memcmp(at, msg, sizeof msg) != 0)
			out("read BAD (%zd)\n", n);
		else
			out("read ok\n");
		/* the rest of that page keeps its pattern */
		size_t w0 = (len / 2) / 8, w1 = w0 + 4096 / 8;
		long bad = -1;
		for (size_t i = w0; i < w1 && bad < 0; i++) {
			size_t b = i * 8;
			if (b + 8 <= off || b >= off + sizeof msg)
				if (area[i] != word(i))
					bad = (long)i;
		}
		report("page", bad);
		for (size_t i = w0; i < w1; i++)
			area[i] = word(i);
		report("sum", check(0, words));
	} else if (strcmp(mode, "fork") == 0) {
		pid_t c = fork();
		if (c < 0)
			die("fork: %s", strerror(errno));
		if (c == 0)
			_exit(check(0, words) < 0 ? 0 : 1);
		long bad = check(0, words);
		int st;
		if (waitpid(c, &st, 0) != c)
			die("waitpid: %s", strerror(errno));
		report("parent", bad);
		out("child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "BAD");
	} else if (strcmp(mode, "remap") == 0) {
		/* the last three MiB: the background copy goes from the lowest address up,
		 * so these are still missing */
		size_t mw = MB / 8, top = words - 3 * mw;
		char *a = (char *)&area[top];
		if (madvise(a, MB, MADV_DONTNEED))
			die("madvise: %s", strerror(errno));
		long bad = -1;
		for (size_t i = 0; i < mw; i++)
			if (area[top + i] != 0 && bad < 0)
				bad = (long)i;
		report("dropped", bad);
		if (munmap(a + MB, MB))
			die("munmap: %s", strerror(errno));
		void *to = mmap(NULL, 4 * MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		void *moved = mremap(a + 2 * MB, MB, MB, MREMAP_MAYMOVE | MREMAP_FIXED,
				     (char *)to + MB);
		if (moved == MAP_FAILED)
			die("mremap: %s", strerror(errno));
		bad = -1;
		for (size_t i = 0; i < mw; i++)
			if (((uint64_t *)moved)[i] != word(top + 2 * mw + i) && bad < 0)
				bad = (long)i;
		report("moved", bad);
		report("rest", check(0, top));
	} else {
		die("unknown mode %s", mode);
	}
	wait_line();
	return 0;
}
