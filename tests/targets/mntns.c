/* mntns BASE STEPS [sleep=MS] [overlay] [shared] [big]
 *
 * Run under `unshare -m --propagation private` (a mount namespace of its own, every
 * mount private). In BASE (a directory of the host, which holds host/h.txt) it mounts:
 * a tmpfs on BASE/t (size 8m, mode 0751) with files: "data" (text, an extended
 * attribute trusted.ckpt, a fixed modification time, a second name "data2"), "hole" (1
 * MiB of hole, then "end"), a symbolic link "link" -> data, a FIFO "fifo" (0640), a
 * directory "d" (0710, owned 1234:5678) holding "own" (0604, owned 1000:1000), a
 * character device "null" (1:3); then a read-only bind of BASE/t on BASE/ro, a bind of
 * the host directory BASE/host on BASE/hb, and a proc on BASE/p (nosuid, nodev,
 * noexec). Then, as a container masks paths: /dev/null bound over t/masked (a file
 * holding "secret"), and a read-only empty tmpfs on BASE/ms; a new devpts instance on
 * BASE/pts (ptmxmode 0666) and an mqueue on BASE/mq. It keeps descriptors open on t/log (appending), ro/data and hb/h.txt, and
 * works in t/d. With `overlay`, it also mounts an overlay of BASE/host (upper and work
 * directories in the tmpfs) on BASE/ov. With `shared`, it makes BASE/t shared, binds
 * it on BASE/s (a peer) and on BASE/sl (made a slave of it), and mounts a tmpfs on
 * t/pm, which propagates to both; at step 8 it mounts another tmpfs on t/pm2 and one on
 * sl/pm3, and every step prints which of t, s and sl show them (a mount on t reaches
 * its peer and its slave, one on the slave reaches neither). With `big`, the tmpfs is
 * 96m and holds a 65 MiB file of data (more than an image keeps).
 *
 * Every step it appends a line to t/log through its descriptor and prints what it sees:
 * the log's hash read through the read-only bind, whether writing there fails with
 * EROFS, the hole and its end, the link, the FIFO's and the directory's type, mode and
 * owner, the device, the attribute, the host file through its descriptor and by path,
 * its working directory, and how many mounts below BASE its mountinfo shows, with
 * their options. Nothing printed depends on BASE, times or IDs. */
#include "util.h"
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

static char base[512];

static const char *at(const char *rel)
{
	static char bufs[4][1024];
	static int k;
	char *b = bufs[k++ % 4];
	snprintf(b, 1024, "%s/%s", base, rel);
	return b;
}

static void put(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	write_all(fd, text, strlen(text));
	close(fd);
}

static void must(int r, const char *what)
{
	if (r != 0)
		die("%s: %s", what, strerror(errno));
}

static void setup(int overlay, int shared, int big)
{
	const char *dirs[] = { "t", "ro", "hb", "p", "ov", "s", "sl", "ms", "pts", "mq" };
	for (unsigned i = 0; i < sizeof dirs / sizeof *dirs; i++)
		if (mkdir(at(dirs[i]), 0755) != 0 && errno != EEXIST)
			die("mkdir %s: %s", dirs[i], strerror(errno));
	must(mount("ckpt-mnt", at("t"), "tmpfs", 0, big ? "size=96m,mode=0751" : "size=8m,mode=0751"),
	     "mount tmpfs");
	if (big) {
		static char chunk[1 << 20];
		memset(chunk, 'b', sizeof chunk);
		int fd = open(at("t/big"), O_WRONLY | O_CREAT, 0600);
		for (int i = 0; fd >= 0 && i < 65; i++)
			write_all(fd, chunk, sizeof chunk);
		if (fd < 0)
			die("big: %s", strerror(errno));
		close(fd);
	}
	put(at("t/data"), "tmpfs data\n", 0644);
	must(setxattr(at("t/data"), "trusted.ckpt", "v1", 2, 0), "setxattr");
	struct timespec tm[2] = { { 1000000000, 0 }, { 1000000000, 123 } };
	must(utimensat(AT_FDCWD, at("t/data"), tm, 0), "utimensat");
	must(link(at("t/data"), at("t/data2")), "link");
	int h = open(at("t/hole"), O_WRONLY | O_CREAT, 0600);
	if (h < 0 || pwrite(h, "end", 3, 1 << 20) != 3)
		die("hole: %s", strerror(errno));
	close(h);
	must(symlink("data", at("t/link")), "symlink");
	must(mkfifo(at("t/fifo"), 0640), "mkfifo");
	must(chmod(at("t/fifo"), 0640), "chmod fifo");
	must(mkdir(at("t/d"), 0710), "mkdir d");
	must(chmod(at("t/d"), 0710), "chmod d");
	must(chown(at("t/d"), 1234, 5678), "chown d");
	put(at("t/d/own"), "own\n", 0604);
	must(chmod(at("t/d/own"), 0604), "chmod own");
	must(chown(at("t/d/own"), 1000, 1000), "chown own");
	must(mknod(at("t/null"), S_IFCHR | 0666, makedev(1, 3)), "mknod");
	must(chmod(at("t/null"), 0666), "chmod null");
	must(mount(at("t"), at("ro"), NULL, MS_BIND, NULL), "bind ro");
	must(mount(NULL, at("ro"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL), "remount ro");
	must(mount(at("host"), at("hb"), NULL, MS_BIND, NULL), "bind host");
	must(mount("proc", at("p"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount proc");
	put(at("t/masked"), "secret\n", 0600);
	must(mount("/dev/null", at("t/masked"), NULL, MS_BIND, NULL), "mask a file");
	must(mount("ckpt-ms", at("ms"), "tmpfs", MS_RDONLY, "size=4k,mode=0555"), "mask a directory");
	must(mount("devpts", at("pts"), "devpts", MS_NOSUID | MS_NOEXEC,
		   "newinstance,ptmxmode=0666,mode=0620"),
	     "mount devpts");
	must(mount("mqueue", at("mq"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
	     "mount mqueue");
	if (overlay) {
		must(mkdir(at("t/up"), 0755), "mkdir up");
		must(mkdir(at("t/work"), 0755), "mkdir work");
		char opts[2048];
		snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", at("host"),
			 at("t/up"), at("t/work"));
		must(mount("overlay", at("ov"), "overlay", 0, opts), "mount overlay");
	}
	if (shared) {
		const char *pm[] = { "t/pm", "t/pm2", "t/pm3" };
		for (unsigned i = 0; i < 3; i++)
			must(mkdir(at(pm[i]), 0755), "mkdir pm");
		must(mount(NULL, at("t"), NULL, MS_SHARED, NULL), "make t shared");
		must(mount(at("t"), at("s"), NULL, MS_BIND, NULL), "bind s");
		must(mount(at("t"), at("sl"), NULL, MS_BIND, NULL), "bind sl");
		must(mount(NULL, at("sl"), NULL, MS_SLAVE, NULL), "make sl a slave");
		must(mount("ckpt-pm", at("t/pm"), "tmpfs", 0, "size=1m"), "mount pm");
	}
}

/* Whether REL (below BASE) is a mount point: another device than its parent's. */
static int mounted(const char *rel)
{
	char parent[1024];
	snprintf(parent, sizeof parent, "%s/..", at(rel));
	struct stat a, b;
	return stat(at(rel), &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* The mounts below BASE in our mountinfo: their count, and a hash of their mount
 * points (below BASE), per-mount options and types. */
static void mounts(int *n, uint32_t *hash)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		die("mountinfo: %s", strerror(errno));
	char line[4096];
	size_t bl = strlen(base);
	*n = 0;
	*hash = FNV_INIT;
	while (fgets(line, sizeof line, f)) {
		char point[1024], opts[512], type[64];
		if (sscanf(line, "%*s %*s %*s %*s %1023s %511s", point, opts) != 2)
			continue;
		char *dash = strstr(line, " - ");
		if (!dash || sscanf(dash + 3, "%63s", type) != 1)
			continue;
		if (strncmp(point, base, bl) != 0 || point[bl] != '/')
			continue;
		(*n)++;
		*hash = fnv(*hash, point + bl, strlen(point + bl));
		*hash = fnv(*hash, opts, strlen(opts));
		*hash = fnv(*hash, type, strlen(type));
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: mntns BASE STEPS [sleep=MS] [overlay]");
	snprintf(base, sizeof base, "%s", argv[1]);
	long steps = arg_long(argc, argv, 2, 30);
	long ms = 50;
	int overlay = 0, shared = 0, big = 0;
	for (int i = 3; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strcmp(argv[i], "overlay") == 0)
			overlay = 1;
		else if (strcmp(argv[i], "shared") == 0)
			shared = 1;
		else if (strcmp(argv[i], "big") == 0)
			big = 1;
	}
	setup(overlay, shared, big);
	int log = open(at("t/log"), O_WRONLY | O_CREAT | O_APPEND, 0600);
	int rodata = open(at("ro/data"), O_RDONLY);
	int host = open(at("hb/h.txt"), O_RDONLY);
	if (log < 0 || rodata < 0 || host < 0)
		die("open: %s", strerror(errno));
	must(chdir(at("t/d")), "chdir");
	for (long i = 0; i < steps; i++) {
		char buf[256];
		int n = snprintf(buf, sizeof buf, "line %ld\n", i);
		write_all(log, buf, (size_t)n);

		/* The log through the read-only bind. */
		uint32_t lh = FNV_INIT;
		int fd = open(at("ro/log"), O_RDONLY);
		ssize_t r;
		while (fd >= 0 && (r = read(fd, buf, sizeof buf)) > 0)
			lh = fnv(lh, buf, (size_t)r);
		if (fd >= 0)
			close(fd);
		int w = open(at("ro/new"), O_WRONLY | O_CREAT, 0600);
		int erofs = w < 0 && errno == EROFS;
		if (w >= 0)
			close(w);

		char hole[4] = "???", zero = 1;
		fd = open(at("t/hole"), O_RDONLY);
		if (fd >= 0) {
			if (pread(fd, &zero, 1, 4096) != 1)
				zero = 1;
			if (pread(fd, hole, 3, 1 << 20) != 3)
				memcpy(hole, "???", 3);
			close(fd);
		}
		struct stat hs;
		int hole_sparse = stat(at("t/hole"), &hs) == 0 && hs.st_blocks < 64;

		char link[64] = "";
		r = readlink(at("t/link"), link, sizeof link - 1);
		link[r > 0 ? r : 0] = 0;

		struct stat fs, ds, os, ns, d2;
		int fifo = stat(at("t/fifo"), &fs) == 0 && S_ISFIFO(fs.st_mode);
		int dir = stat(at("t/d"), &ds) == 0 && S_ISDIR(ds.st_mode);
		int own = stat("own", &os) == 0;
		int dev = stat(at("t/null"), &ns) == 0 && S_ISCHR(ns.st_mode) &&
			  ns.st_rdev == makedev(1, 3);
		int nw = open(at("t/null"), O_WRONLY);
		dev = dev && nw >= 0 && write(nw, "x", 1) == 1;
		if (nw >= 0)
			close(nw);
		struct stat da;
		int hard = stat(at("t/data2"), &d2) == 0 && stat(at("t/data"), &da) == 0 &&
			   d2.st_ino == da.st_ino && da.st_nlink == 2;

		char xv[16] = "";
		r = getxattr(at("t/data"), "trusted.ckpt", xv, sizeof xv - 1);
		xv[r > 0 ? r : 0] = 0;

		char hd[64] = "", hp[64] = "", rd[64] = "";
		r = pread(host, hd, sizeof hd - 1, 0);
		hd[r > 0 ? r - 1 : 0] = 0;
		fd = open(at("hb/h.txt"), O_RDONLY);
		r = fd >= 0 ? read(fd, hp, sizeof hp - 1) : -1;
		hp[r > 0 ? r - 1 : 0] = 0;
		if (fd >= 0)
			close(fd);
		r = pread(rodata, rd, sizeof rd - 1, 0);
		rd[r > 0 ? r - 1 : 0] = 0;

		char cwd[1024] = "";
		const char *rel = "?";
		if (getcwd(cwd, sizeof cwd) && strncmp(cwd, base, strlen(base)) == 0)
			rel = cwd + strlen(base);
		int selfp = access(at("p/self/stat"), R_OK) == 0;
		char sec[16] = "";
		fd = open(at("t/masked"), O_RDONLY);
		r = fd >= 0 ? read(fd, sec, sizeof sec - 1) : -1;
		if (fd >= 0)
			close(fd);
		int msw = open(at("ms/x"), O_WRONLY | O_CREAT, 0600);
		int ms_ro = msw < 0 && errno == EROFS;
		if (msw >= 0)
			close(msw);
		struct stat mss;
		int ms_mode = stat(at("ms"), &mss) == 0 ? (int)(mss.st_mode & 07777) : -1;
		struct stat pt;
		int ptmx = stat(at("pts/ptmx"), &pt) == 0 ? (int)(pt.st_mode & 07777) : -1;
		out("masked=%zd ms=%d:%o ptmx=%o\n", r, ms_ro, ms_mode, ptmx);

		if (shared && i == 8) {
			must(mount("ckpt-pm2", at("t/pm2"), "tmpfs", 0, "size=1m"), "mount pm2");
			must(mount("ckpt-pm3", at("sl/pm3"), "tmpfs", 0, "size=1m"), "mount pm3");
		}
		if (shared) {
			char seen[64];
			snprintf(seen, sizeof seen, "prop=%d%d%d,%d%d%d,%d%d%d\n", mounted("t/pm"),
				 mounted("s/pm"), mounted("sl/pm"), mounted("t/pm2"), mounted("s/pm2"),
				 mounted("sl/pm2"), mounted("t/pm3"), mounted("s/pm3"), mounted("sl/pm3"));
			write_all(1, seen, strlen(seen));
		}

		int nm;
		uint32_t mh;
		mounts(&nm, &mh);
		out("step %ld log=%08x erofs=%d hole=%s,%d,%d link=%s fifo=%d:%o dir=%d:%o:%u:%u "
		    "own=%d:%o:%u:%u dev=%d hard=%d xattr=%s data=%s mtime=%ld.%ld host=%s/%s "
		    "cwd=%s proc=%d mounts=%d:%08x\n",
		    i, lh, erofs, hole, zero, hole_sparse, link, fifo, fs.st_mode & 07777, dir,
		    ds.st_mode & 07777, ds.st_uid, ds.st_gid, own, os.st_mode & 07777, os.st_uid,
		    os.st_gid, dev, hard, xv, rd, (long)da.st_mtim.tv_sec, da.st_mtim.tv_nsec, hd,
		    hp, rel, selfp, nm, mh);
		sleep_ms(ms);
	}
	return 0;
}
