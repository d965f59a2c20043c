/* apart: adjacent private anonymous areas of equal attributes that the kernel keeps
 * apart (each has its own anon_vma, so it cannot merge them), for tests/e2e_cow.rs:
 *
 *   L | M | R     three areas of 4 pages each, made one after the other elsewhere,
 *                 written (M then dropped with MADV_DONTNEED: no page, an anon_vma all
 *                 the same) and moved side by side with mremap
 *   B | H         B written, then H mapped right after it by mmap: the kernel merges H
 *                 into B (one area in /proc/PID/maps): restore must not split it
 *
 * It prints "ready" and the addresses, then waits for a line "check" on stdin, checks
 * every byte, prints "ok" or "bad" and exits 0. */
#include "util.h"

#include <sys/mman.h>

#define PAGE 4096

static unsigned char *anon(void *at, size_t len)
{
	void *p = mmap(at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
	if (p == MAP_FAILED || (at && p != at))
		die("mmap: %s", strerror(errno));
	return p;
}

static int page_is(const unsigned char *p, size_t len, int v)
{
	for (size_t k = 0; k < len; k++)
		if (p[k] != v)
			return 0;
	return 1;
}

int main(void)
{
	/* a hole of 24 pages to put them in, with a page of gap on both sides */
	unsigned char *hole = mmap(NULL, 26 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (hole == MAP_FAILED)
		die("mmap");
	unsigned char *base = hole + PAGE;
	if (munmap(base, 24 * PAGE))
		die("munmap");
	for (int i = 0; i < 3; i++) {
		unsigned char *a = anon(NULL, 4 * PAGE);
		memset(a, 0x10 + i, 4 * PAGE);
		if (i == 1 && madvise(a, 4 * PAGE, MADV_DONTNEED))
			die("madvise");
		if (mremap(a, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, base + i * 4 * PAGE) !=
		    base + i * 4 * PAGE)
			die("mremap: %s", strerror(errno));
	}
	unsigned char *b = anon(base + 14 * PAGE, 4 * PAGE);
	memset(b, 0x20, 4 * PAGE);
	unsigned char *h = anon(base + 18 * PAGE, 4 * PAGE);
	memset(h, 0x21, 4 * PAGE);

	char line[64];
	int n = snprintf(line, sizeof line, "ready %p\n", (void *)base);
	if (write(1, line, n) != n)
		die("write");
	if (read(0, line, 6) != 6 || memcmp(line, "check\n", 6))
		die("expected check");
	int ok = page_is(base, 4 * PAGE, 0x10) && page_is(base + 4 * PAGE, 4 * PAGE, 0) &&
		 page_is(base + 8 * PAGE, 4 * PAGE, 0x12) && page_is(b, 4 * PAGE, 0x20) &&
		 page_is(h, 4 * PAGE, 0x21);
	n = snprintf(line, sizeof line, "%s\n", ok ? "ok" : "bad");
	if (write(1, line, n) != n)
		die("write");
	return 0;
}
