/* cow: private memory a fork tree shares copy-on-write, in several ways (tests/e2e_cow.rs):
 *
 *   R ── C1 ── G
 *     └─ C2
 *
 * R writes A (64 pages), Z (16 pages written with zeros: present, not the zero page) and
 * RO (8 pages, then made read-only), and forks C1. C1 writes A[0..8), drops A[8..12)
 * (MADV_DONTNEED: it reads zeros there, R keeps its data), maps and writes N (4 pages),
 * and forks G, which writes A[12]. R writes A[20] after C1 was forked and then forks
 * C2: C1 keeps the old A[20], R and C2 share the new one. Every process then waits:
 * the children in read() on a pipe, R on its stdin; R prints "ready" once all are set up.
 *
 * On a line "check", R sends each of the others a byte on that pipe; each checks every byte of
 * its memory against what it should hold and exits 0 if all is right, 1 otherwise (C1
 * also fails if G did). R prints "R ok" (or "R bad"), "C1 status N", "C2 status N" and
 * exits 0. */
#include "util.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096
enum { NA = 64, NZ = 16, NRO = 8, NN = 4 };

static unsigned char *A, *Z, *RO;
static int go[2], up[2];

/* What page i of A holds in each process. */
static int val_a(char who, int i)
{
	int orig = i % 200 + 1;
	switch (who) {
	case 'R':
	case '2':
		return i == 20 ? 0xee : orig;
	case 'G':
		if (i == 12)
			return 0x66;
		/* fall through */
	case '1':
		if (i < 8)
			return 0xc1;
		if (i < 12)
			return 0;
		return orig;
	}
	return -1;
}

static int page_is(const unsigned char *p, int v)
{
	for (int k = 0; k < PAGE; k++)
		if (p[k] != v)
			return 0;
	return 1;
}

static int check(char who, const unsigned char *n)
{
	int ok = 1;
	for (int i = 0; i < NA; i++)
		ok &= page_is(A + i * PAGE, val_a(who, i));
	for (int i = 0; i < NZ; i++)
		ok &= page_is(Z + i * PAGE, 0);
	for (int i = 0; i < NRO; i++)
		ok &= page_is(RO + i * PAGE, i + 101);
	for (int i = 0; n && i < NN; i++)
		ok &= page_is(n + i * PAGE, 0x4e);
	return ok;
}

static void *map(int pages)
{
	void *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	return p;
}

/* Write the 32 KiB of stack below the caller: the dump's injected calls write a signal
 * frame below each thread's stack pointer, which would give the thread its own copy of
 * a stack page there that it still shared with its parent or child (a change the dump
 * makes, not the restore; see README). */
__attribute__((noinline)) static void own_stack_below(void)
{
	volatile char buf[32 << 10];
	for (size_t i = 0; i < sizeof buf; i += 512)
		buf[i] = 1;
}

/* A child: say it is set up, wait for its byte, check, exit. */
static void child_wait(char who, const unsigned char *n, pid_t kid)
{
	char b = who;
	own_stack_below();
	if (write(up[1], &b, 1) != 1)
		die("write up");
	while (read(go[0], &b, 1) != 1)
		;
	int ok = check(who, n);
	if (kid > 0) {
		int st;
		if (waitpid(kid, &st, 0) != kid)
			die("wait for G");
		ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	_exit(ok ? 0 : 1);
}

int main(void)
{
	if (pipe(go) || pipe(up))
		die("pipe");
	A = map(NA);
	Z = map(NZ);
	RO = map(NRO);
	for (int i = 0; i < NA; i++)
		memset(A + i * PAGE, i % 200 + 1, PAGE);
	memset(Z, 0, NZ * PAGE);
	for (int i = 0; i < NRO; i++)
		memset(RO + i * PAGE, i + 101, PAGE);
	if (mprotect(RO, NRO * PAGE, PROT_READ))
		die("mprotect");

	pid_t c1 = fork();
	if (c1 < 0)
		die("fork");
	if (c1 == 0) {
		memset(A, 0xc1, 8 * PAGE);
		if (madvise(A + 8 * PAGE, 4 * PAGE, MADV_DONTNEED))
			die("madvise");
		unsigned char *n = map(NN);
		memset(n, 0x4e, NN * PAGE);
		pid_t g = fork();
		if (g < 0)
			die("fork G");
		if (g == 0) {
			memset(A + 12 * PAGE, 0x66, PAGE);
			child_wait('G', n, 0);
		}
		child_wait('1', n, g);
	}
	memset(A + 20 * PAGE, 0xee, PAGE);
	pid_t c2 = fork();
	if (c2 < 0)
		die("fork");
	if (c2 == 0)
		child_wait('2', NULL, 0);

	/* From here until "check", R writes no memory but its stack (plain system calls,
	 * no stdio), as the children do: a page R wrote after forking both children would
	 * be one they share with each other and not with R, which restore does not bring
	 * back (see README). */
	char b[8];
	own_stack_below();
	for (int i = 0; i < 3; i++)
		if (read(up[0], b, 1) != 1)
			die("read up");
	if (write(1, "ready\n", 6) != 6)
		die("write");
	if (read(0, b, 6) != 6 || memcmp(b, "check\n", 6))
		die("expected check");
	printf("R %s\n", check('R', NULL) ? "ok" : "bad");
	/* one byte each for C1, G and C2 */
	if (write(go[1], "xxx", 3) != 3)
		die("write go");
	int st;
	if (waitpid(c1, &st, 0) != c1)
		die("waitpid C1");
	printf("C1 status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	if (waitpid(c2, &st, 0) != c2)
		die("waitpid C2");
	printf("C2 status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}
