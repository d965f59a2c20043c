/* incr: memory written a little at a time, for incremental dumps (tests/e2e_incr.rs).
 *
 *   incr MIB [thp]
 *
 * Maps an area of MIB MiB (private anonymous; with "thp", aligned to 2 MiB and asking
 * for huge pages, else with MADV_NOHUGEPAGE), writes every page with a pattern, prints
 * "ready" and then obeys one command per line on stdin, answering one line each:
 *
 *   w FIRST COUNT STEP VAL  write byte VAL (1-255) over pages FIRST, FIRST+STEP, ...
 *                           (COUNT of them) of the area          -> "done"
 *   z FIRST COUNT           MADV_DONTNEED pages FIRST.. (they read zeros)  -> "done"
 *   m PAGES VAL             map a new private area and fill it   -> "done"
 *   u                       unmap the newest mapped area         -> "done"
 *   r                       move the newest mapped area elsewhere (mremap MAYMOVE|FIXED)
 *                           and grow it by a page written with 0x77  -> "done"
 *   s VAL                   write VAL over a shared anonymous area of 16 pages -> "done"
 *   f                       fork a child that writes 0x55 over the first page of the
 *                           area (its copy) and then waits on stdin's end  -> "done"
 *   c                       checksum of all the memory above (and the child's, asked
 *                           through a pipe)                       -> "sum HEX"
 * At end of input it exits 0. */
#include "util.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL

static unsigned char *area;
static unsigned long npages;
static unsigned char *shared;
enum { NSHARED = 16, MAXMAPS = 16 };
static unsigned char *maps[MAXMAPS];
static unsigned long mapsz[MAXMAPS];
static int nmaps;
static int child_pid = -1;
static int to_child[2], from_child[2];

static uint64_t fnv64(uint64_t h, const unsigned char *p, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t sum_all(void)
{
	uint64_t h = 1469598103934665603ULL;
	/* Fast enough for a few hundred MiB: one byte in 64 of each page, and all of the
	 * pages' first and last words. */
	for (unsigned long i = 0; i < npages; i++) {
		const unsigned char *p = area + i * PAGE;
		for (unsigned long k = 0; k < PAGE; k += 64)
			h = fnv64(h, p + k, 1);
		h = fnv64(h, p + PAGE - 8, 8);
	}
	h = fnv64(h, shared, NSHARED * PAGE);
	for (int m = 0; m < nmaps; m++)
		h = fnv64(h, maps[m], mapsz[m]);
	return h;
}

static void *map_anon(unsigned long len, int flags)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	return p;
}

static void child_loop(void)
{
	close(to_child[1]);
	close(from_child[0]);
	memset(area, 0x55, PAGE);
	char c;
	while (read(to_child[0], &c, 1) == 1) {
		uint64_t h = sum_all();
		write_all(from_child[1], (const char *)&h, sizeof h);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
	int thp = argc > 2 && !strcmp(argv[2], "thp");
	npages = mib * 256;
	unsigned long len = npages * PAGE;
	if (thp) {
		unsigned char *raw = map_anon(len + (2UL << 20), MAP_PRIVATE);
		unsigned long a = ((unsigned long)raw + (2UL << 20) - 1) & ~((2UL << 20) - 1);
		area = (unsigned char *)a;
		if (madvise(area, len, MADV_HUGEPAGE) != 0)
			die("madvise(MADV_HUGEPAGE): %s", strerror(errno));
	} else {
		area = map_anon(len, MAP_PRIVATE);
		madvise(area, len, MADV_NOHUGEPAGE);
	}
	for (unsigned long i = 0; i < npages; i++)
		memset(area + i * PAGE, (int)(i % 251) + 1, PAGE);
	shared = map_anon(NSHARED * PAGE, MAP_SHARED);
	memset(shared, 0x33, NSHARED * PAGE);
	out("ready\n");
	char line[256];
	size_t have = 0;
	for (;;) {
		char *nl = memchr(line, '\n', have);
		if (!nl) {
			ssize_t n = read(0, line + have, sizeof line - 1 - have);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			have += (size_t)n;
			continue;
		}
		*nl = 0;
		unsigned long a = 0, b = 0, c = 0, d = 0;
		switch (line[0]) {
		case 'w':
			sscanf(line + 1, "%lu %lu %lu %lu", &a, &b, &c, &d);
			for (unsigned long i = 0; i < b && a + i * c < npages; i++)
				memset(area + (a + i * c) * PAGE, (int)d, PAGE);
			out("done\n");
			break;
		case 'z':
			sscanf(line + 1, "%lu %lu", &a, &b);
			if (madvise(area + a * PAGE, b * PAGE, MADV_DONTNEED) != 0)
				die("madvise: %s", strerror(errno));
			out("done\n");
			break;
		case 'm':
			sscanf(line + 1, "%lu %lu", &a, &b);
			if (nmaps == MAXMAPS)
				die("too many maps");
			maps[nmaps] = map_anon(a * PAGE, MAP_PRIVATE);
			mapsz[nmaps] = a * PAGE;
			memset(maps[nmaps], (int)b, a * PAGE);
			nmaps++;
			out("done\n");
			break;
		case 'u':
			if (nmaps > 0) {
				nmaps--;
				munmap(maps[nmaps], mapsz[nmaps]);
			}
			out("done\n");
			break;
		case 'r': {
			if (nmaps == 0)
				die("nothing to move");
			int m = nmaps - 1;
			unsigned long nl2 = mapsz[m] + PAGE;
			void *to = map_anon(nl2 + PAGE, MAP_PRIVATE);
			munmap(to, nl2 + PAGE);
			void *p = mremap(maps[m], mapsz[m], nl2, MREMAP_MAYMOVE | MREMAP_FIXED, to);
			if (p == MAP_FAILED)
				die("mremap: %s", strerror(errno));
			maps[m] = p;
			memset(maps[m] + mapsz[m], 0x77, PAGE);
			mapsz[m] = nl2;
			out("done\n");
			break;
		}
		case 's':
			sscanf(line + 1, "%lu", &a);
			memset(shared, (int)a, NSHARED * PAGE);
			out("done\n");
			break;
		case 'f':
			if (pipe(to_child) || pipe(from_child))
				die("pipe: %s", strerror(errno));
			child_pid = fork();
			if (child_pid < 0)
				die("fork: %s", strerror(errno));
			if (child_pid == 0)
				child_loop();
			close(to_child[0]);
			close(from_child[1]);
			out("done\n");
			break;
		case 'c': {
			uint64_t h = sum_all();
			if (child_pid > 0) {
				uint64_t hc = 0;
				write_all(to_child[1], "c", 1);
				if (read(from_child[0], &hc, sizeof hc) != sizeof hc)
					die("child gone");
				h ^= hc * 31;
			}
			out("sum %016llx\n", (unsigned long long)h);
			break;
		}
		default:
			die("unknown command %s", line);
		}
		have -= (size_t)(nl + 1 - line);
		memmove(line, nl + 1, have);
	}
	if (child_pid > 0) {
		close(to_child[1]);
		waitpid(child_pid, NULL, 0);
	}
	return 0;
}
