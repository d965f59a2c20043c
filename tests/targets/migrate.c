/* migrate: memory written all the time, for `ckpt migrate` (tests/e2e_migrate.rs,
 * bench/migrate).
 *
 *   migrate MIB RATE [areas]
 *
 * Maps an area of MIB MiB (private anonymous), fills every page with a pattern, prints
 * "ready", and from then on writes RATE pages per second (in 1 ms steps), in order,
 * round the area: step i stores i+1 in the first word of page i mod N. The memory at
 * any moment is thus a function of the step count alone. Commands, one per line on
 * stdin:
 *
 *   c   verify every page against the step count and answer
 *       "count C sum HEX ok" (or "... bad PAGE" at the first wrong page)
 *   q   exit 0
 *   f   (with "areas") change the side areas' flags and layout, answer "flags done"
 *   u   (with "churn") the next churn step (below), answer "churned N"
 * At end of input it exits 0.
 *
 * With "areas" it also maps AREAS side areas of 4 pages, written, each its own VMA
 * (PROT_NONE gaps between them), which "f" changes as a program may between two
 * rounds of a migration: MADV_HUGEPAGE, MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP
 * and mlock of whole areas (only VmFlags show these), mprotect read-only, mremap to
 * another place, and MADV_DONTNEED of two pages of the last one (which read back as
 * zero).
 *
 * With "churn" it maps CHURN areas of CPAGES pages, written, each its own VMA, which
 * "u" changes as a program may between two pre-copy rounds (tests/e2e_migstore.rs):
 * step N rewrites areas 0 to 3-N (at least area 0) with new bytes (fewer pages each
 * step, so that the rounds keep shrinking), unmaps area 4 and maps a new one at the
 * same address with only its first page written, moves area 5 elsewhere (mremap) and
 * writes one of its pages, unmaps area 6 for good (step 0) and the second half of
 * area 7 (step 1). "c" also checks every byte of the churn areas still mapped. */
#include "util.h"

#include <poll.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL

static uint64_t *area;
static unsigned long npages;
static unsigned long count;

#define AREAS 8
#define SIDE (4 * PAGE)
static char *side[AREAS];
static int side_changed;

/* The first side area whose bytes are not what they must be, or -1. */
static int side_bad(void)
{
	for (int i = 0; side[0] && i < AREAS; i++) {
		unsigned long len = (side_changed && i == 6) ? 2 * SIDE : SIDE;
		for (unsigned long b = 0; b < len; b++) {
			char want = (char)('a' + i);
			if (side_changed && ((i == 6 && b >= SIDE) || (i == 7 && b >= PAGE && b < 3 * PAGE)))
				want = 0;
			if (side[i][b] != want)
				return i;
		}
	}
	return -1;
}

static void map_side(void)
{
	/* One reservation, every other 4 pages made writable: separate VMAs. */
	char *r = mmap(NULL, 2 * AREAS * SIDE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		exit(1);
	for (int i = 0; i < AREAS; i++) {
		side[i] = r + 2 * i * SIDE;
		if (mprotect(side[i], SIDE, PROT_READ | PROT_WRITE))
			exit(1);
		memset(side[i], 'a' + i, SIDE);
	}
}

static void change_side(void)
{
	int ok = !madvise(side[0], SIDE, MADV_HUGEPAGE) && !madvise(side[1], SIDE, MADV_DONTFORK) &&
		 !madvise(side[2], SIDE, MADV_WIPEONFORK) && !madvise(side[3], SIDE, MADV_DONTDUMP) &&
		 !mlock(side[4], SIDE) && !mprotect(side[5], SIDE, PROT_READ);
	/* Grown, it cannot stay where the gap after it is: it moves. */
	char *moved = mremap(side[6], SIDE, 2 * SIDE, MREMAP_MAYMOVE);
	if (moved == MAP_FAILED || moved == side[6])
		ok = 0;
	else
		side[6] = moved;
	side_changed = 1;
	ok = ok && !madvise(side[7] + PAGE, 2 * PAGE, MADV_DONTNEED);
	printf(ok ? "flags done\n" : "flags failed\n");
	fflush(stdout);
}

#define CHURN 8
#define CPAGES 16UL
static char *churn[CHURN];
/* The byte every byte of each page must hold, and whether the page is mapped. */
static char cwant[CHURN][CPAGES];
static char cmapped[CHURN][CPAGES];
static int churns;

static void map_churn(void)
{
	char *r = mmap(NULL, 2 * CHURN * CPAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		exit(1);
	for (int i = 0; i < CHURN; i++) {
		churn[i] = r + 2 * i * CPAGES * PAGE;
		if (mprotect(churn[i], CPAGES * PAGE, PROT_READ | PROT_WRITE))
			exit(1);
		for (unsigned long p = 0; p < CPAGES; p++) {
			cwant[i][p] = (char)('0' + i);
			cmapped[i][p] = 1;
			memset(churn[i] + p * PAGE, cwant[i][p], PAGE);
		}
	}
}

static void churn_write(int i, unsigned long p, char v)
{
	memset(churn[i] + p * PAGE, v, PAGE);
	cwant[i][p] = v;
}

static void churn_step(void)
{
	int n = churns++, ok = 1;
	for (int i = 0; i <= (n < 3 ? 3 - n : 0); i++)
		for (unsigned long p = 0; p < CPAGES; p++)
			churn_write(i, p, (char)('A' + n * 4 + i));
	/* Area 4 unmapped and mapped again: its old pages must not come back. */
	if (munmap(churn[4], CPAGES * PAGE) ||
	    mmap(churn[4], CPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) != churn[4])
		ok = 0;
	for (unsigned long p = 0; p < CPAGES; p++)
		cwant[4][p] = 0;
	churn_write(4, 0, (char)('m' + n));
	/* Area 5 moved to a new reservation. */
	char *to = mmap(NULL, CPAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *moved = to == MAP_FAILED ? MAP_FAILED
				       : mremap(churn[5], CPAGES * PAGE, CPAGES * PAGE,
						MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (moved == MAP_FAILED)
		ok = 0;
	else
		churn[5] = moved;
	churn_write(5, (unsigned long)n % CPAGES, (char)('r' + n));
	if (n == 0) {
		ok = ok && !munmap(churn[6], CPAGES * PAGE);
		memset(cmapped[6], 0, CPAGES);
	}
	if (n == 1) {
		ok = ok && !munmap(churn[7] + CPAGES / 2 * PAGE, CPAGES / 2 * PAGE);
		memset(cmapped[7] + CPAGES / 2, 0, CPAGES / 2);
	}
	printf(ok ? "churned %d\n" : "churn failed %d\n", n);
	fflush(stdout);
}

/* The first churn area with a byte that is not what it must be, or -1. */
static int churn_bad(void)
{
	for (int i = 0; churn[0] && i < CHURN; i++)
		for (unsigned long p = 0; p < CPAGES; p++)
			for (unsigned long b = 0; cmapped[i][p] && b < PAGE; b++)
				if (churn[i][p * PAGE + b] != cwant[i][p])
					return i;
	return -1;
}

static uint64_t pattern(unsigned long page, unsigned long word)
{
	return (page * 2654435761UL) ^ (word * 40503UL) ^ 0x5a5a5a5aUL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void step(void)
{
	unsigned long p = count % npages;
	area[p * (PAGE / 8)] = count + 1;
	count++;
}

static void verify(void)
{
	uint64_t sum = 0;
	long bad = -1;
	for (unsigned long p = 0; p < npages; p++) {
		uint64_t *w = area + p * (PAGE / 8);
		uint64_t want0 = 0;
		if (count > p)
			want0 = p + npages * ((count - 1 - p) / npages) + 1;
		if (w[0] != want0 || w[1] != pattern(p, 1) || w[PAGE / 8 - 1] != pattern(p, PAGE / 8 - 1)) {
			if (bad < 0)
				bad = (long)p;
		}
		for (unsigned long i = 0; i < PAGE / 8; i++)
			sum = sum * 31 + w[i];
	}
	int sb = side_bad();
	if (sb < 0 && churn_bad() >= 0)
		sb = 100 + churn_bad();
	if (bad < 0 && sb >= 0)
		printf("count %lu sum %016llx bad side %d\n", count, (unsigned long long)sum, sb);
	else if (bad < 0)
		printf("count %lu sum %016llx ok\n", count, (unsigned long long)sum);
	else
		printf("count %lu sum %016llx bad %ld\n", count, (unsigned long long)sum, bad);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	unsigned long mib = strtoul(argv[1], NULL, 10);
	unsigned long rate = strtoul(argv[2], NULL, 10);
	npages = mib * (1UL << 20) / PAGE;
	area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return 1;
	madvise(area, npages * PAGE, MADV_NOHUGEPAGE);
	for (unsigned long p = 0; p < npages; p++) {
		uint64_t *w = area + p * (PAGE / 8);
		w[0] = 0;
		for (unsigned long i = 1; i < PAGE / 8; i++)
			w[i] = pattern(p, i);
	}
	if (argc > 3 && !strcmp(argv[3], "areas"))
		map_side();
	if (argc > 3 && !strcmp(argv[3], "churn"))
		map_churn();
	printf("ready\n");
	fflush(stdout);
	uint64_t t0 = now_ms();
	unsigned long done_ms = 0;
	char line[64];
	size_t len = 0;
	for (;;) {
		struct pollfd pf = { .fd = 0, .events = POLLIN };
		int n = poll(&pf, 1, 1);
		uint64_t t = now_ms() - t0;
		/* Steps due since the last tick (at most one second's worth at once). */
		if (t > done_ms + 1000)
			done_ms = t - 1000;
		while (done_ms < t) {
			done_ms++;
			unsigned long due = rate * done_ms / 1000 - rate * (done_ms - 1) / 1000;
			for (unsigned long i = 0; i < due; i++)
				step();
		}
		if (n <= 0 || !(pf.revents & (POLLIN | POLLHUP)))
			continue;
		ssize_t r = read(0, line + len, sizeof(line) - 1 - len);
		if (r <= 0)
			return 0;
		len += (size_t)r;
		char *nl;
		while ((nl = memchr(line, '\n', len))) {
			*nl = 0;
			if (line[0] == 'c')
				verify();
			else if (line[0] == 'q')
				return 0;
			else if (line[0] == 'f' && side[0])
				change_side();
			else if (line[0] == 'u' && churn[0])
				churn_step();
			size_t used = (size_t)(nl - line) + 1;
			memmove(line, nl + 1, len - used);
			len -= used;
		}
		if (len == sizeof(line) - 1)
			len = 0;
	}
}
