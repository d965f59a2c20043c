/* counter: memory of every kind, mutated step by step, with a checksum per kind.
 *
 * usage: counter STEPS MAPFILE [heap=KIB] [sleep=MS] [sparse=KIB] [madv-guard]
 *
 * State: static data (.data, .bss), thread-local storage (fs_base), small heap objects
 * (brk), a large malloc (mmap'd by malloc), an anonymous mmap region, a sparse anonymous
 * region (every 16th page written, and the page 8 after each only read at first, so
 * that it maps the shared zero page until a later step writes it), a MAP_PRIVATE writable mapping of MAPFILE that
 * it writes into (copy-on-write: the file on disk never changes), a PROT_NONE guard page
 * between two writable pages, a PROT_NONE reservation, a written page kept PROT_NONE
 * between steps, and with `madv-guard`
 * MADV_GUARD_INSTALL guard pages. Each step mutates all of it, probes that the guard pages
 * still fault, checks that getpid() did not change, prints one line with the checksums,
 * then sleeps (nanosleep) so that a checkpoint usually lands mid-sleep.
 *
 * Exits with status 3, so that exit status propagation through `ckpt restore` shows. */
#include "util.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

static unsigned long sdata[256] = { 1, 2, 3, 5, 8, 13, 21, 34, 55, 89 };
static unsigned char sbss[16384];
static __thread unsigned long tls_val = 7;

struct node {
	struct node *next;
	unsigned long value;
};

static sigjmp_buf probe_jmp;
static volatile sig_atomic_t probing;

static void on_segv(int sig)
{
	if (probing)
		siglongjmp(probe_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* 1 if reading *addr faults, 0 if it reads fine. */
static int faults(const volatile char *addr)
{
	if (sigsetjmp(probe_jmp, 1)) {
		probing = 0;
		return 1;
	}
	probing = 1;
	(void)*addr;
	probing = 0;
	return 0;
}

static void *map_anon(size_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap %zu: %s", len, strerror(errno));
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: counter STEPS MAPFILE [heap=KIB] [sleep=MS] [sparse=KIB] [madv-guard]");
	long steps = arg_long(argc, argv, 1, 0);
	const char *mapfile = argv[2];
	long heap_kib = 256, sleep_each = 20, sparse_kib = 1024;
	int madv_guard = 0;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "heap=", 5))
			heap_kib = strtol(argv[i] + 5, NULL, 0);
		else if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else if (!strncmp(argv[i], "sparse=", 7))
			sparse_kib = strtol(argv[i] + 7, NULL, 0);
		else if (!strcmp(argv[i], "madv-guard"))
			madv_guard = 1;
		else
			die("unknown option %s", argv[i]);
	}
	if (heap_kib < 1 || sparse_kib < 64)
		die("heap must be >= 1 KiB and sparse >= 64 KiB");
	const pid_t start_pid = getpid();
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_segv;
	if (sigaction(SIGSEGV, &sa, NULL))
		die("sigaction: %s", strerror(errno));

	/* Small objects: malloc takes them from the brk heap. */
	struct node *list = NULL;
	for (int i = 0; i < 200; i++) {
		struct node *n = malloc(sizeof *n);
		if (!n)
			die("malloc");
		n->value = (unsigned long)i * 3;
		n->next = list;
		list = n;
	}

	/* One large allocation: malloc mmaps it when above its threshold (128 KiB). */
	const size_t heap_len = (size_t)heap_kib * 1024;
	unsigned char *heap = malloc(heap_len);
	if (!heap)
		die("malloc %zu", heap_len);
	for (size_t i = 0; i < heap_len; i++)
		heap[i] = (unsigned char)(i * 7);

	const size_t anon_len = 64 * 1024;
	unsigned char *anon = map_anon(anon_len, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < anon_len; i++)
		anon[i] = (unsigned char)(i ^ 0x5a);

	const size_t sparse_len = (size_t)sparse_kib * 1024;
	const size_t sparse_touched = sparse_len / page / 16;
	unsigned char *sparse = map_anon(sparse_len, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < sparse_touched; i++) {
		sparse[i * 16 * page + i % page] = (unsigned char)(i + 1);
		(void)*(volatile unsigned char *)(sparse + (i * 16 + 8) * page);
	}

	int fd = open(mapfile, O_RDONLY);
	if (fd < 0)
		die("open %s: %s", mapfile, strerror(errno));
	struct stat st;
	if (fstat(fd, &st))
		die("fstat: %s", strerror(errno));
	const size_t fsize = (size_t)st.st_size;
	if (fsize < 2 * page)
		die("%s must be at least two pages long", mapfile);
	unsigned char *fmap = mmap(NULL, fsize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (fmap == MAP_FAILED)
		die("mmap %s: %s", mapfile, strerror(errno));
	close(fd);
	const uint32_t file_at_start = fnv(FNV_INIT, fmap, fsize);

	/* Writable page, PROT_NONE guard page, writable page. */
	unsigned char *guard = map_anon(3 * page, PROT_READ | PROT_WRITE);
	if (mprotect(guard + page, page, PROT_NONE))
		die("mprotect: %s", strerror(errno));
	guard[0] = 1;
	guard[2 * page] = 2;
	/* A reservation: address space held with PROT_NONE. */
	unsigned char *resv = map_anon(16 * page, PROT_NONE);
	/* A written page kept PROT_NONE between steps: a page present that no one can read
	 * (ckpt reads it through /proc/PID/mem). Each step opens it, changes it, hashes it
	 * into guardmem and closes it again. */
	unsigned char *hidden = map_anon(page, PROT_READ | PROT_WRITE);
	hidden[0] = 5;
	if (mprotect(hidden, page, PROT_NONE))
		die("mprotect: %s", strerror(errno));

	/* MADV_GUARD_INSTALL (Linux 6.13+) on the middle two of four writable pages. */
	unsigned char *mguard = NULL;
	const char *mguard_state = "off";
	if (madv_guard) {
		mguard = map_anon(4 * page, PROT_READ | PROT_WRITE);
		mguard[0] = 3;
		mguard[3 * page] = 4;
		if (madvise(mguard + page, 2 * page, MADV_GUARD_INSTALL) == 0) {
			mguard_state = "installed";
		} else {
			mguard_state = "unsupported";
			mguard = NULL;
		}
		out("madv-guard %s\n", mguard_state);
	}

	volatile unsigned long stack_arr[512];
	for (int i = 0; i < 512; i++)
		stack_arr[i] = (unsigned long)i * i;
	double fp = 1.0;

	for (long step = 1; step <= steps; step++) {
		unsigned long s = (unsigned long)step;
		sdata[s % 256] += s;
		sbss[(s * 131) % sizeof sbss] ^= (unsigned char)s;
		tls_val = tls_val * 6364136223846793005UL + s;
		for (struct node *n = list; n; n = n->next)
			n->value += s;
		heap[(s * 4099) % heap_len] += (unsigned char)s;
		anon[(s * 577) % anon_len] += (unsigned char)s;
		sparse[(s % sparse_touched) * 16 * page + 7] += (unsigned char)s;
		if (s % 3 == 0) /* some read-only pages get written, the others stay zero */
			sparse[((s / 3) % sparse_touched * 16 + 8) * page + 5] += (unsigned char)s;
		fmap[(s * 37) % page] ^= (unsigned char)s; /* only the first page gets copied */
		guard[s % page] += 1;
		guard[2 * page + s % page] += 2;
		if (mguard) {
			mguard[s % page] += 1;
			mguard[3 * page + s % page] += 1;
		}
		stack_arr[s % 512] += s * s;
		fp = fp * 1.0001 + (double)step / 3.0;

		uint32_t h_static = fnv(fnv(FNV_INIT, sdata, sizeof sdata), sbss, sizeof sbss);
		uint32_t h_heap = fnv(FNV_INIT, heap, heap_len);
		for (struct node *n = list; n; n = n->next)
			h_heap = fnv(h_heap, &n->value, sizeof n->value);
		uint32_t h_anon = fnv(FNV_INIT, anon, anon_len);
		for (size_t i = 0; i < sparse_touched; i++) {
			h_anon = fnv(h_anon, sparse + i * 16 * page, page);
			h_anon = fnv(h_anon, sparse + (i * 16 + 8) * page, page);
		}
		uint32_t h_file = fnv(FNV_INIT, fmap, fsize);
		uint32_t h_guard = fnv(fnv(FNV_INIT, guard, page), guard + 2 * page, page);
		if (mprotect(hidden, page, PROT_READ | PROT_WRITE))
			die("mprotect: %s", strerror(errno));
		hidden[(s * 13) % page] += (unsigned char)s;
		h_guard = fnv(h_guard, hidden, page);
		if (mprotect(hidden, page, PROT_NONE))
			die("mprotect: %s", strerror(errno));
		uint32_t h_stack = fnv(FNV_INIT, (const void *)stack_arr, sizeof stack_arr);
		int guard_ok = !faults((char *)guard) && faults((char *)guard + page) &&
			       !faults((char *)guard + 2 * page) && faults((char *)resv) &&
			       faults((char *)resv + 15 * page);
		const char *mg = "n/a";
		if (mguard) {
			h_guard = fnv(fnv(h_guard, mguard, page), mguard + 3 * page, page);
			mg = (!faults((char *)mguard) && faults((char *)mguard + page) &&
			      faults((char *)mguard + 2 * page) && !faults((char *)mguard + 3 * page))
				     ? "ok"
				     : "BROKEN";
		}
		out("step %ld/%ld static=%08x tls=%016lx heap=%08x anon=%08x file=%08x "
		    "guardmem=%08x stack=%08x fp=%.4f guard=%s madv-guard=%s pid=%s\n",
		    step, steps, h_static, tls_val, h_heap, h_anon, h_file, h_guard, h_stack, fp,
		    guard_ok ? "ok" : "BROKEN", mg, getpid() == start_pid ? "same" : "CHANGED");
		sleep_ms(sleep_each);
	}

	/* The private mapping must never have reached the file. */
	fd = open(mapfile, O_RDONLY);
	if (fd < 0)
		die("reopen %s: %s", mapfile, strerror(errno));
	unsigned char *disk = malloc(fsize);
	if (!disk || read(fd, disk, fsize) != (ssize_t)fsize)
		die("read %s", mapfile);
	close(fd);
	out("file on disk %s\n", fnv(FNV_INIT, disk, fsize) == file_at_start ? "unchanged" : "CHANGED");
	out("done\n");
	return 3;
}
