/* mntpid BASE STEPS [sleep=MS]
 *
 * Run under `unshare -m -p -f --mount-proc --propagation private`: PID 1 of a PID
 * namespace of its own, in a mount namespace of its own whose /proc is a proc of that
 * PID namespace. It mounts a tmpfs on BASE/t holding a file "f" ("start"), and every
 * step appends a line to it through a descriptor it keeps, then prints the file's
 * hash read by path, its PID, the PID /proc/self/stat and /proc/self show, and the
 * PIDs /proc lists. Nothing printed depends on BASE or times. */
#include "util.h"
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

static char base[512];

static const char *at(const char *rel)
{
	static char b[1024];
	snprintf(b, sizeof b, "%s/%s", base, rel);
	return b;
}

/* The PIDs /proc lists, ascending (a PID namespace's own start at 1). */
static void proc_pids(char *buf, size_t len)
{
	buf[0] = 0;
	DIR *d = opendir("/proc");
	if (!d) {
		snprintf(buf, len, "(no /proc: %s)", strerror(errno));
		return;
	}
	long pids[64];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 64) {
		if (isdigit((unsigned char)e->d_name[0]))
			pids[n++] = strtol(e->d_name, NULL, 10);
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (pids[j] < pids[i]) {
				long t = pids[i];
				pids[i] = pids[j];
				pids[j] = t;
			}
	size_t o = 0;
	for (int i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%ld", i ? "," : "", pids[i]);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: mntpid BASE STEPS [sleep=MS]");
	snprintf(base, sizeof base, "%s", argv[1]);
	long steps = arg_long(argc, argv, 2, 30);
	long ms = 50;
	for (int i = 3; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
	mkdir(at("t"), 0755);
	if (mount("ckpt-mntpid", at("t"), "tmpfs", 0, "size=1m,mode=0750") != 0)
		die("mount tmpfs: %s", strerror(errno));
	int fd = open(at("t/f"), O_WRONLY | O_CREAT | O_APPEND, 0640);
	if (fd < 0)
		die("open: %s", strerror(errno));
	write_all(fd, "start\n", 6);
	for (long i = 0; i < steps; i++) {
		char buf[512];
		int n = snprintf(buf, sizeof buf, "line %ld\n", i);
		write_all(fd, buf, (size_t)n);
		uint32_t h = FNV_INIT;
		int r = open(at("t/f"), O_RDONLY);
		ssize_t k;
		while (r >= 0 && (k = read(r, buf, sizeof buf)) > 0)
			h = fnv(h, buf, (size_t)k);
		if (r >= 0)
			close(r);
		long statpid = -1;
		FILE *st = fopen("/proc/self/stat", "r");
		if (st) {
			if (fscanf(st, "%ld", &statpid) != 1)
				statpid = -1;
			fclose(st);
		}
		char self[64] = "";
		k = readlink("/proc/self", self, sizeof self - 1);
		self[k > 0 ? k : 0] = 0;
		char pids[256];
		proc_pids(pids, sizeof pids);
		out("step %ld: f %08x pid %d stat %ld self %s proc %s\n", i, h, (int)getpid(),
		    statpid, self, pids);
		sleep_ms(ms);
	}
	out("done\n");
	return 0;
}
