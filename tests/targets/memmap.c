/* memmap STEPS DIR [sleep=MS]
 *
 * Mapped memfds and mapped deleted files.
 *
 * A memfd "shm" (3 pages) is mapped MAP_SHARED twice, at A and B, and MAP_PRIVATE at E,
 * and its descriptor stays open. A file DIR/mapped.bin (2 pages) is mapped MAP_SHARED at C and MAP_PRIVATE
 * at D, then its descriptor is closed and it is deleted: only the mappings hold it. A
 * fork child keeps the memfd mapping A (its copy of the descriptor closed) and, in lock
 * step with the parent over two pipes, reports what its mapping shows in memfd page 2.
 *
 * Every step the parent writes through one view and reads through the others: A -> B and
 * the descriptor (page 0), the descriptor -> A (page 1), A -> the child's mapping -> B
 * (page 2), C -> the unwritten private page of D (page 1 of the file: a private page not
 * yet written shows the file), and D's written private page 0 must keep its own content
 * while C's page 0 keeps the file's; the same for E (its page 0 written privately, its
 * page 1 showing the descriptor's writes). It prints what it saw. */
#include "util.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096

static void put(char *at, const char *s)
{
	memcpy(at, s, strlen(s) + 1);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: memmap STEPS DIR [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	const char *dir = argv[2];
	long ms = 40;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);

	int m = memfd_create("shm", MFD_CLOEXEC);
	if (m < 0)
		die("memfd_create: %s", strerror(errno));
	if (ftruncate(m, 3 * PG) != 0)
		die("ftruncate: %s", strerror(errno));
	char *a = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	char *b = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	char *e = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, 0);
	if (a == MAP_FAILED || b == MAP_FAILED || e == MAP_FAILED)
		die("mmap memfd: %s", strerror(errno));

	char path[4096];
	snprintf(path, sizeof path, "%s/mapped.bin", dir);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (f < 0)
		die("open %s: %s", path, strerror(errno));
	if (ftruncate(f, 2 * PG) != 0)
		die("ftruncate file: %s", strerror(errno));
	if (pwrite(f, "file-page-0", 12, 0) != 12 || pwrite(f, "file-page-1", 12, PG) != 12)
		die("pwrite: %s", strerror(errno));
	char *c = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
	char *d = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
	if (c == MAP_FAILED || d == MAP_FAILED)
		die("mmap file: %s", strerror(errno));
	close(f);
	if (unlink(path) != 0)
		die("unlink: %s", strerror(errno));

	int p2c[2], c2p[2];
	if (pipe(p2c) != 0 || pipe(c2p) != 0)
		die("pipe: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(m);
		close(p2c[1]);
		close(c2p[0]);
		char x;
		while (read(p2c[0], &x, 1) == 1) {
			char seen[32] = { 0 };
			memcpy(seen, a, 16);
			char rep[64];
			snprintf(rep, sizeof rep, "child-saw-%s", seen);
			put(a + 2 * PG, rep);
			if (write(c2p[1], "k", 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	close(p2c[0]);
	close(c2p[1]);
	out("memfd mapped twice, %s mapped shared and private, closed and deleted\n",
	    "mapped.bin");

	for (long i = 0; i < steps; i++) {
		char s[32];
		/* page 0 of the memfd: written through A */
		snprintf(s, sizeof s, "A%02ld", i);
		put(a, s);
		char viafd[16] = { 0 };
		if (pread(m, viafd, 15, 0) < 0)
			die("pread memfd: %s", strerror(errno));
		/* page 1: written through the descriptor, read through A */
		snprintf(s, sizeof s, "fd%02ld", i);
		if (pwrite(m, s, strlen(s) + 1, PG) < 0)
			die("pwrite memfd: %s", strerror(errno));
		/* page 2: the child writes through its own mapping */
		char x;
		if (write(p2c[1], "g", 1) != 1 || read(c2p[0], &x, 1) != 1)
			die("child gone");
		/* the deleted file: C's page 1 shows in D's unwritten page 1 */
		snprintf(s, sizeof s, "C%02ld", i);
		put(c + PG, s);
		snprintf(s, sizeof s, "D%02ld", i);
		put(d, s);
		snprintf(s, sizeof s, "E%02ld", i);
		put(e, s);
		out("step %ld: B0 \"%s\" fd0 \"%s\" A1 \"%s\" B2 \"%s\" D1 \"%s\" D0 \"%s\" C0 \"%s\" "
		    "E0 \"%s\" E1 \"%s\" hash %08x\n",
		    i, b, viafd, a + PG, b + 2 * PG, d + PG, d, c, e, e + PG,
		    fnv(fnv(FNV_INIT, b, 3 * PG), c, 2 * PG));
		sleep_ms(ms);
	}
	close(p2c[1]);
	int st;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("child failed");
	out("done\n");
	return 0;
}
