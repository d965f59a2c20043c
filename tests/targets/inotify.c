/* inotify DIR STEPS [sleep=MS]
 *
 * An inotify instance watching DIR/a (IN_CREATE|IN_DELETE), DIR/b (IN_CLOSE_WRITE) and
 * DIR/d (IN_CREATE); a watch on DIR/c is added between b and d and removed again, so
 * the numbers are 1, 2 and 4 (3 is free). Every step it makes events of each kind in
 * those directories and reads them back (blocking), printing wd, mask and name; at
 * step STEPS/2 it adds a watch on DIR/e and prints the number it got. Between steps
 * it sleeps with no event queued. */
#include "util.h"
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>

static int ino;

static void expect_events(int n)
{
	char buf[4096] __attribute__((aligned(8)));
	int seen = 0;
	while (seen < n) {
		ssize_t len = read(ino, buf, sizeof buf);
		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			die("read inotify: %s", len ? strerror(errno) : "EOF");
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *e = (struct inotify_event *)p;
			out("  event wd %d mask %#x name %s\n", e->wd, e->mask, e->len ? e->name : "-");
			seen++;
			p += sizeof *e + e->len;
		}
	}
}

static int watch(const char *dir, const char *sub, uint32_t mask)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, sub);
	mkdir(path, 0755);
	int wd = inotify_add_watch(ino, path, mask);
	if (wd < 0)
		die("inotify_add_watch %s: %s", path, strerror(errno));
	return wd;
}

static void touch(const char *dir, const char *sub, const char *name, long i, int unlink_it)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s/%s-%ld", dir, sub, name, i);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	close(fd);
	if (unlink_it && unlink(path) != 0)
		die("unlink %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: inotify DIR STEPS [sleep=MS]");
	const char *dir = argv[1];
	long steps = arg_long(argc, argv, 2, 30);
	long ms = 30;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);
	ino = inotify_init1(IN_CLOEXEC);
	if (ino < 0)
		die("inotify_init1: %s", strerror(errno));
	int a = watch(dir, "a", IN_CREATE | IN_DELETE);
	int b = watch(dir, "b", IN_CLOSE_WRITE);
	int c = watch(dir, "c", IN_CREATE);
	int d = watch(dir, "d", IN_CREATE | IN_ONLYDIR);
	if (inotify_rm_watch(ino, c) != 0)
		die("inotify_rm_watch: %s", strerror(errno));
	out("watching a b d as %d %d %d (c was %d)\n", a, b, d, c);
	expect_events(1); /* IN_IGNORED of c */
	for (long i = 0; i < steps; i++) {
		out("step %ld\n", i);
		touch(dir, "a", "f", i, 1);
		touch(dir, "b", "g", i, 0);
		touch(dir, "d", "h", i, 0);
		expect_events(4);
		if (i == steps / 2)
			out("new watch on e: wd %d\n", watch(dir, "e", IN_CREATE));
		sleep_ms(ms);
	}
	out("done\n");
	return 0;
}
