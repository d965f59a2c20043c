/* ioctx: holds one kernel I/O object dump refuses, and counts.
 *
 * usage: ioctx KIND STEPS [sleep=MS]
 * KIND: uring (an io_uring instance with its
 *       rings mapped) | fanotify (a fanotify group with a permission mark, FAN_OPEN_PERM,
 *       on a file of its own in /tmp, removed at the end)
 * Output: "holding KIND", one "step N" line a step, "done". */
#include "util.h"

#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* a file to remove at the end */
static char gone[64];

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ioctx KIND STEPS [sleep=MS]");
	const char *kind = argv[1];
	long steps = arg_long(argc, argv, 2, 0);
	long sleep_each = 20;
	if (argc > 3) {
		if (strncmp(argv[3], "sleep=", 6))
			die("unknown option %s", argv[3]);
		sleep_each = strtol(argv[3] + 6, NULL, 0);
	}
	if (!strcmp(kind, "uring")) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		int fd = (int)syscall(SYS_io_uring_setup, 4, &p);
		if (fd < 0)
			die("io_uring_setup: %s", strerror(errno));
		size_t len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
		if (mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			 IORING_OFF_SQ_RING) == MAP_FAILED)
			die("mmap the SQ ring: %s", strerror(errno));
	} else if (!strcmp(kind, "fanotify")) {
		/* a permission mark on a file of its own, removed at the end: nothing else
		 * opens it (and blocks on the permission event no one answers) */
		int fd = fanotify_init(FAN_CLASS_CONTENT, O_RDONLY);
		if (fd < 0)
			die("fanotify_init: %s", strerror(errno));
		char path[64];
		snprintf(path, sizeof path, "/tmp/ioctx-fanotify-%d", (int)getpid());
		int f = open(path, O_RDONLY | O_CREAT | O_EXCL, 0600);
		if (f < 0)
			die("create %s: %s", path, strerror(errno));
		if (fanotify_mark(fd, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, path))
			die("fanotify_mark: %s", strerror(errno));
		close(f);
		snprintf(gone, sizeof gone, "%s", path);
	} else {
		die("unknown kind %s", kind);
	}
	out("holding %s\n", kind);
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	if (gone[0])
		unlink(gone);
	out("done\n");
	return 0;
}
