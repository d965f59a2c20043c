/* attrs: process attributes that nothing in memory shows, which a restore that forgot
 * them would get wrong without the program noticing at once.
 *
 * usage: attrs STEPS PAUSE_STEP [sleep=MS]
 *
 * At start it sets, each to a value other than the one it inherited:
 *   - its name (PR_SET_NAME "ckpt-attrs") and its umask (027);
 *   - resource limits, soft and hard, lowered below what it inherited (RLIMIT_NOFILE,
 *     RLIMIT_FSIZE, RLIMIT_MSGQUEUE, RLIMIT_SIGPENDING);
 *   - its own process group (setpgid(0, 0)), staying in the session it was started in
 *     (a shell job: a group leader in a session led by a process outside the dump);
 * and maps a region of 4 pages per memory attribute: mlock'd (VM_LOCKED), mlock2
 * MLOCK_ONFAULT with one page touched (VM_LOCKONFAULT), and one per madvise advice
 * (DONTFORK, DONTDUMP, WIPEONFORK, HUGEPAGE, NOHUGEPAGE, RANDOM, SEQUENTIAL).
 * Run it under `setarch -R` for a personality other than the default (ADDR_NO_RANDOMIZE).
 *
 * Each step writes into every region and prints two lines: a checksum of the regions, and
 * the attributes as the kernel reports them (the regions' VmFlags from /proc/self/smaps,
 * VmLck, personality, limits, name, umask, process group and session, and checksums of
 * /proc/self/cmdline, environ and the exe link), so the output of a restored run differs
 * from an uninterrupted one if any of them was lost.
 *
 * After printing step PAUSE_STEP it reads one line from stdin (a stable moment to dump
 * it, restore it and dump it again), prints it and goes on. Exits 0. */
#include "util.h"

#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

struct region {
	const char *name;
	int advice; /* -1: none */
	unsigned char *p;
};

#define NPAGES 4

static struct region regions[] = {
	{ "mlock", -1, NULL },
	{ "mlock-onfault", -1, NULL },
	{ "dontfork", MADV_DONTFORK, NULL },
	{ "dontdump", MADV_DONTDUMP, NULL },
	{ "wipeonfork", MADV_WIPEONFORK, NULL },
	{ "hugepage", MADV_HUGEPAGE, NULL },
	{ "nohugepage", MADV_NOHUGEPAGE, NULL },
	{ "random", MADV_RANDOM, NULL },
	{ "sequential", MADV_SEQUENTIAL, NULL },
};
#define NREGIONS (sizeof regions / sizeof regions[0])

static const int limits[] = { RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_MSGQUEUE, RLIMIT_SIGPENDING };
static const char *const limit_names[] = { "nofile", "fsize", "msgqueue", "sigpending" };
static const rlim_t limit_hard[] = { 900, 1UL << 31, 23456, 2000 };
static const rlim_t limit_soft[] = { 700, 1UL << 30, 12345, 1000 };

static char *read_file(const char *path, size_t *len)
{
	/* On the heap, not in .bss: under ADDR_NO_RANDOMIZE the brk heap starts right
	 * after the program's anonymous .bss mapping, and a restore maps the two as one
	 * (see docs/ARCHITECTURE.md), which the image comparison would flag. */
	static char *buf;
	if (!buf && !(buf = malloc(1 << 20)))
		die("malloc");
	FILE *f = fopen(path, "r");
	if (!f)
		die("open %s: %s", path, strerror(errno));
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

/* The flags of interest among the VmFlags of the mapping that starts at `p`. */
static void vmflags(const void *p, char *out_flags, size_t outlen)
{
	static const char *const interesting[] = { "lo", "lf", "dc", "dd", "wf", "hg", "nh", "rr", "sr" };
	char *smaps = read_file("/proc/self/smaps", NULL);
	char head[32];
	snprintf(head, sizeof head, "%lx-", (unsigned long)p);
	char *at = NULL;
	for (char *l = smaps; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, head, strlen(head))) {
			at = l;
			break;
		}
	}
	if (!at)
		die("no mapping at %p in /proc/self/smaps", p);
	char *f = strstr(at, "VmFlags:");
	if (!f)
		die("no VmFlags for %p", p);
	char *end = strchr(f, '\n');
	if (end)
		*end = 0;
	out_flags[0] = 0;
	for (size_t i = 0; i < sizeof interesting / sizeof interesting[0]; i++) {
		char needle[8];
		snprintf(needle, sizeof needle, " %s", interesting[i]);
		char *h = strstr(f, needle);
		if (h && (h[3] == ' ' || h[3] == 0)) {
			if (out_flags[0])
				strncat(out_flags, "+", outlen - strlen(out_flags) - 1);
			strncat(out_flags, interesting[i], outlen - strlen(out_flags) - 1);
		}
	}
	if (!out_flags[0])
		snprintf(out_flags, outlen, "none");
}

static long status_kib(const char *field)
{
	char *s = read_file("/proc/self/status", NULL);
	char *f = strstr(s, field);
	if (!f)
		die("no %s in /proc/self/status", field);
	return strtol(f + strlen(field), NULL, 10);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: attrs STEPS PAUSE_STEP [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	long pause_step = arg_long(argc, argv, 2, 0);
	long sleep_each = 10;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (prctl(PR_SET_NAME, "ckpt-attrs", 0, 0, 0))
		die("PR_SET_NAME: %s", strerror(errno));
	umask(027);
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		struct rlimit r;
		if (getrlimit(limits[i], &r))
			die("getrlimit: %s", strerror(errno));
		/* Only ever lower them (raising a hard limit needs CAP_SYS_RESOURCE). */
		rlim_t hard = r.rlim_max < limit_hard[i] ? r.rlim_max : limit_hard[i];
		rlim_t soft = hard < limit_soft[i] ? hard : limit_soft[i];
		struct rlimit n = { soft, hard };
		if (setrlimit(limits[i], &n))
			die("setrlimit %s: %s", limit_names[i], strerror(errno));
	}
	if (setpgid(0, 0))
		die("setpgid: %s", strerror(errno));

	for (size_t i = 0; i < NREGIONS; i++) {
		struct region *r = &regions[i];
		r->p = mmap(NULL, NPAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (r->p == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		if (!strcmp(r->name, "mlock")) {
			if (mlock(r->p, NPAGES * page))
				die("mlock: %s", strerror(errno));
		} else if (!strcmp(r->name, "mlock-onfault")) {
			if (syscall(SYS_mlock2, r->p, NPAGES * page, MLOCK_ONFAULT))
				die("mlock2: %s", strerror(errno));
		} else if (madvise(r->p, NPAGES * page, r->advice)) {
			die("madvise %s: %s", r->name, strerror(errno));
		}
		/* Touch the first page only (the others stay absent, unless locked). */
		r->p[0] = (unsigned char)(i + 1);
	}

	for (long step = 1; step <= steps; step++) {
		uint32_t h = FNV_INIT;
		for (size_t i = 0; i < NREGIONS; i++) {
			regions[i].p[(size_t)step % page] += (unsigned char)(step + (long)i);
			h = fnv(h, regions[i].p, page);
		}
		out("step %ld/%ld mem=%08x\n", step, steps, h);

		char line[2048] = "", flags[64];
		for (size_t i = 0; i < NREGIONS; i++) {
			vmflags(regions[i].p, flags, sizeof flags);
			snprintf(line + strlen(line), sizeof line - strlen(line), " %s=%s", regions[i].name, flags);
		}
		for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
			struct rlimit r;
			if (getrlimit(limits[i], &r))
				die("getrlimit: %s", strerror(errno));
			snprintf(line + strlen(line), sizeof line - strlen(line), " %s=%llu:%llu",
				 limit_names[i], (unsigned long long)r.rlim_cur, (unsigned long long)r.rlim_max);
		}
		char name[17] = "";
		prctl(PR_GET_NAME, name, 0, 0, 0);
		mode_t m = umask(0);
		umask(m);
		size_t clen = 0, elen = 0;
		const char *c = read_file("/proc/self/cmdline", &clen);
		uint32_t hc = fnv(FNV_INIT, c, clen);
		const char *e = read_file("/proc/self/environ", &elen);
		uint32_t he = fnv(FNV_INIT, e, elen);
		char exe[4096];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		exe[n < 0 ? 0 : n] = 0;
		const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
		out("step %ld attrs%s vmlck=%ldkB personality=%#x name=%s umask=%04o pgrp=%s "
		    "session=%s cmdline=%08x environ=%08x exe=%s\n",
		    step, line, status_kib("VmLck:"), personality(0xffffffff), name, (unsigned)m,
		    getpgrp() == getpid() ? "own" : "OTHER",
		    getsid(0) != getpid() && getsid(0) > 0 ? "outside" : "OWN", hc, he, base);

		if (step == pause_step) {
			char in[256];
			ssize_t r;
			while ((r = read(0, in, sizeof in - 1)) < 0 && errno == EINTR)
				;
			if (r < 0)
				die("read: %s", strerror(errno));
			in[r] = 0;
			out("read %s", r > 0 ? in : "(eof)\n");
		}
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
