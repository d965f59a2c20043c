/* opath DIR STEPS [sleep=MS]
 *
 * O_PATH descriptors on a regular file (DIR/data.txt) and a directory (DIR/sub, holding
 * inner.txt), both made by the test and never written. Every step uses them the way
 * O_PATH descriptors are used: fstatat(AT_EMPTY_PATH) on the file's, openat() of
 * inner.txt relative to the directory's, a reopen through /proc/self/fd, and their
 * status flags (O_PATH must still be set, O_NOFOLLOW... kept). It prints what it saw. */
#include "util.h"
#include <fcntl.h>
#include <sys/stat.h>

static void slurp(int fd, char *buf, size_t len)
{
	ssize_t n = pread(fd, buf, len - 1, 0);
	if (n < 0)
		die("pread: %s", strerror(errno));
	buf[n] = 0;
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = '|';
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: opath DIR STEPS [sleep=MS]");
	const char *dir = argv[1];
	long steps = arg_long(argc, argv, 2, 30);
	long ms = 30;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);
	char path[4096];
	snprintf(path, sizeof path, "%s/data.txt", dir);
	int f = open(path, O_PATH | O_CLOEXEC);
	snprintf(path, sizeof path, "%s/sub", dir);
	int d = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW);
	if (f < 0 || d < 0)
		die("open O_PATH: %s", strerror(errno));
	out("holding O_PATH fds %d and %d\n", f, d);
	for (long i = 0; i < steps; i++) {
		struct stat st;
		if (fstatat(f, "", &st, AT_EMPTY_PATH) != 0)
			die("fstatat: %s", strerror(errno));
		int in = openat(d, "inner.txt", O_RDONLY | O_CLOEXEC);
		if (in < 0)
			die("openat: %s", strerror(errno));
		char inner[256], data[256];
		slurp(in, inner, sizeof inner);
		close(in);
		snprintf(path, sizeof path, "/proc/self/fd/%d", f);
		int re = open(path, O_RDONLY | O_CLOEXEC);
		if (re < 0)
			die("reopen: %s", strerror(errno));
		slurp(re, data, sizeof data);
		close(re);
		int ff = fcntl(f, F_GETFL), fd = fcntl(d, F_GETFL);
		int cf = fcntl(f, F_GETFD), cd = fcntl(d, F_GETFD);
		char buf[8];
		/* read(2) on an O_PATH descriptor must still fail with EBADF. */
		int rd = read(f, buf, sizeof buf) < 0 ? errno : 0;
		out("step %ld: file size %ld mode %o \"%s\"; inner \"%s\"; flags %o %o cloexec %d %d; "
		    "read errno %d\n",
		    i, (long)st.st_size, st.st_mode & 07777, data, inner, ff & ~O_LARGEFILE,
		    fd & ~O_LARGEFILE, cf, cd, rd);
		sleep_ms(ms);
	}
	out("done\n");
	return 0;
}
