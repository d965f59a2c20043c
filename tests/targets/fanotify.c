/* fanotify DIR STEPS [sleep=MS] [queued]
 *
 * DIR is the root of a mount of its own (the test mounts a tmpfs there). Two fanotify
 * groups:
 *   fd 3 (FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE, events
 *   opened O_RDONLY | O_LARGEFILE), and a dup of it as fd 5, with an inode mark on
 *   DIR/watched (FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE), a mount mark on DIR
 *   (FAN_MODIFY | FAN_CLOSE_WRITE) and an inode mark on DIR/other that only ignores
 *   FAN_MODIFY (FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY);
 *   fd 4 (FAN_REPORT_DFID_NAME | FAN_NONBLOCK) with a filesystem mark on DIR's
 *   filesystem (FAN_CREATE | FAN_DELETE).
 * Each step it appends a byte to DIR/watched and to DIR/other, creates DIR/n-STEP and
 * removes it, then reads both groups until they are empty and prints every event: its
 * mask and the file it names (group 1: the event descriptor's name under DIR; group 2:
 * the name in its info record). Then "step N", and it sleeps with nothing queued.
 * At the end "done". With "queued", it never reads the groups: the events of each
 * step stay queued. */
#include "util.h"
#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>

static const char *dir;

static void append(const char *name, long i)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	char c = (char)('a' + i % 26);
	if (write(fd, &c, 1) != 1)
		die("write %s: %s", path, strerror(errno));
	close(fd);
}

static void drain_group1(int g)
{
	char buf[8192] __attribute__((aligned(8)));
	for (;;) {
		ssize_t len = read(g, buf, sizeof buf);
		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0 && errno == EAGAIN)
			return;
		if (len <= 0)
			die("read group 1: %s", len ? strerror(errno) : "EOF");
		struct fanotify_event_metadata *m = (void *)buf;
		for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
			char link[64], path[4096] = "?";
			snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
			ssize_t n = readlink(link, path, sizeof path - 1);
			path[n > 0 ? n : 0] = 0;
			size_t dl = strlen(dir);
			const char *name = strncmp(path, dir, dl) ? path : path + dl;
			out("  g1 mask %#llx file %s\n", (unsigned long long)m->mask, name);
			close(m->fd);
		}
	}
}

static void drain_group2(int g)
{
	char buf[8192] __attribute__((aligned(8)));
	for (;;) {
		ssize_t len = read(g, buf, sizeof buf);
		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0 && errno == EAGAIN)
			return;
		if (len <= 0)
			die("read group 2: %s", len ? strerror(errno) : "EOF");
		struct fanotify_event_metadata *m = (void *)buf;
		for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
			const char *name = "-";
			struct fanotify_event_info_fid *fid = (void *)(m + 1);
			if (m->event_len > sizeof *m &&
			    fid->hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) {
				struct file_handle *fh = (void *)fid->handle;
				name = (const char *)fh->f_handle + fh->handle_bytes;
			}
			out("  g2 mask %#llx name %s\n", (unsigned long long)m->mask, name);
		}
	}
}

static void mark(int g, unsigned flags, uint64_t mask, const char *sub)
{
	char path[4096];
	snprintf(path, sizeof path, "%s%s%s", dir, *sub ? "/" : "", sub);
	if (fanotify_mark(g, FAN_MARK_ADD | flags, mask, AT_FDCWD, path))
		die("fanotify_mark %s %#x: %s", path, flags, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: fanotify DIR STEPS [sleep=MS]");
	dir = argv[1];
	long steps = arg_long(argc, argv, 2, 0);
	long sleep_each = 20;
	int queued = 0;
	for (int a = 3; a < argc; a++) {
		if (!strncmp(argv[a], "sleep=", 6))
			sleep_each = strtol(argv[a] + 6, NULL, 0);
		else if (!strcmp(argv[a], "queued"))
			queued = 1;
		else
			die("unknown option %s", argv[a]);
	}
	int g1 = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
			       O_RDONLY | O_LARGEFILE);
	if (g1 != 3)
		die("fanotify_init 1: %d %s", g1, strerror(errno));
	int g2 = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK, O_RDONLY);
	if (g2 != 4)
		die("fanotify_init 2: %d %s", g2, strerror(errno));
	if (dup2(g1, 5) != 5)
		die("dup2: %s", strerror(errno));
	append("watched", 0);
	append("other", 0);
	mark(g1, 0, FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE, "watched");
	mark(g1, FAN_MARK_MOUNT, FAN_MODIFY | FAN_CLOSE_WRITE, "");
	mark(g1, FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, "other");
	mark(g2, FAN_MARK_FILESYSTEM, FAN_CREATE | FAN_DELETE, "");
	out("holding two fanotify groups\n");
	for (long i = 1; i <= steps; i++) {
		append("watched", i);
		append("other", i);
		char path[4096];
		snprintf(path, sizeof path, "%s/n-%ld", dir, i);
		int fd = open(path, O_RDONLY | O_CREAT, 0600);
		if (fd < 0)
			die("create %s: %s", path, strerror(errno));
		close(fd);
		if (unlink(path))
			die("unlink %s: %s", path, strerror(errno));
		if (!queued) {
			drain_group1(5);
			drain_group2(g2);
		}
		out("step %ld\n", i);
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
