/* fsgone: holds a descriptor of a file-system object that changed under it, and counts.
 *
 * usage: fsgone KIND DIR STEPS [sleep=MS]   (works in DIR/PID, which it makes)
 * KIND: lease | wlease (a read or write lease on DIR/f, F_SETLEASE; F_GETLEASE printed
 *   at the end) | fifo (a FIFO DIR/p opened read-write,
 *   then removed) | hardlink (DIR/a opened, removed; still linked as DIR/b) | rmdir
 *   (DIR/d opened, then removed) | inotify (a watch on DIR/w for IN_DELETE_SELF and
 *   IN_CLOSE_WRITE, then the file removed while open)
 * Output: "holding KIND", one "step N" line a step, "done". */
#include "util.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: fsgone KIND DIR STEPS [sleep=MS]");
	const char *kind = argv[1];
	char dir[2048];
	snprintf(dir, sizeof dir, "%s/%d", argv[2], (int)getpid());
	if (mkdir(dir, 0755))
		die("mkdir %s: %s", dir, strerror(errno));
	long steps = arg_long(argc, argv, 3, 0);
	long sleep_each = 20;
	if (argc > 4) {
		if (strncmp(argv[4], "sleep=", 6))
			die("unknown option %s", argv[4]);
		sleep_each = strtol(argv[4] + 6, NULL, 0);
	}
	char a[4096], b[4096];
	int lease_fd = -1;
	if (!strcmp(kind, "lease") || !strcmp(kind, "wlease")) {
		int w = !strcmp(kind, "wlease");
		snprintf(a, sizeof a, "%s/f", dir);
		int fd = open(a, O_RDONLY | O_CREAT, 0644);
		if (fd < 0 || fcntl(fd, F_SETLEASE, w ? F_WRLCK : F_RDLCK))
			die("lease: %s", strerror(errno));
		lease_fd = fd;
	} else if (!strcmp(kind, "fifo")) {
		snprintf(a, sizeof a, "%s/p", dir);
		if (mkfifo(a, 0600) || open(a, O_RDWR) < 0 || unlink(a))
			die("fifo: %s", strerror(errno));
	} else if (!strcmp(kind, "hardlink")) {
		snprintf(a, sizeof a, "%s/a", dir);
		snprintf(b, sizeof b, "%s/b", dir);
		int fd = open(a, O_RDWR | O_CREAT, 0644);
		if (fd < 0 || write(fd, "data", 4) != 4 || link(a, b) || unlink(a))
			die("hardlink: %s", strerror(errno));
	} else if (!strcmp(kind, "rmdir")) {
		snprintf(a, sizeof a, "%s/d", dir);
		if (mkdir(a, 0755) || open(a, O_RDONLY | O_DIRECTORY) < 0 || rmdir(a))
			die("rmdir: %s", strerror(errno));
	} else if (!strcmp(kind, "inotify")) {
		snprintf(a, sizeof a, "%s/w", dir);
		int fd = open(a, O_RDWR | O_CREAT, 0644);
		int in = inotify_init1(IN_NONBLOCK);
		if (fd < 0 || in < 0 || inotify_add_watch(in, a, IN_DELETE_SELF | IN_CLOSE_WRITE) < 0)
			die("inotify: %s", strerror(errno));
		if (unlink(a))
			die("unlink: %s", strerror(errno));
	} else {
		die("unknown kind %s", kind);
	}
	out("holding %s\n", kind);
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	if (lease_fd >= 0)
		out("lease: %s\n", fcntl(lease_fd, F_GETLEASE) == F_RDLCK   ? "read"
				    : fcntl(lease_fd, F_GETLEASE) == F_WRLCK ? "write"
									     : "other");
	out("done\n");
	return 0;
}
