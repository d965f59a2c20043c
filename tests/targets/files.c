/* files: file descriptors of every supported kind, and the process's cwd and umask.
 *
 * usage: files DIR STEPS [sleep=MS]
 *
 * chdir(DIR), umask(027), then holds:
 *   input.txt  O_RDONLY, read 16 bytes per step (the offset matters);
 *   input.txt  again, moved to fd 40 with FD_CLOEXEC, read 7 bytes per step (its own offset);
 *   log.txt    O_WRONLY|O_APPEND|O_CREAT, one line appended per step;
 *   data.bin   O_RDWR|O_CREAT|O_TRUNC, 4 bytes written per step at a moving offset;
 *   /dev/null  O_WRONLY, written every step;
 *   .          O_RDONLY|O_DIRECTORY, used with fstatat every step.
 * Each step prints what it read and every offset. At the end it prints getcwd(), the umask
 * and the fd table (F_GETFL flags, FD_CLOEXEC, offset, type, path) of fds 3..63. */
#include "util.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

static int must_open(const char *path, int flags, mode_t mode)
{
	int fd = open(path, flags, mode);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	return fd;
}

/* Printable copy of what was read: newlines and non-ASCII escaped. */
static void escape(char *dst, size_t dlen, const char *src, ssize_t n)
{
	size_t o = 0;
	for (ssize_t i = 0; i < n && o + 5 < dlen; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c == '\n') {
			dst[o++] = '\\';
			dst[o++] = 'n';
		} else if (c < 32 || c > 126 || c == '"' || c == '\\') {
			o += (size_t)snprintf(dst + o, dlen - o, "\\x%02x", c);
		} else {
			dst[o++] = (char)c;
		}
	}
	dst[o] = 0;
}

static long pos(int fd)
{
	return (long)lseek(fd, 0, SEEK_CUR);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: files DIR STEPS [sleep=MS]");
	long steps = arg_long(argc, argv, 2, 0);
	long sleep_each = 20;
	if (argc > 3) {
		if (strncmp(argv[3], "sleep=", 6))
			die("unknown option %s", argv[3]);
		sleep_each = strtol(argv[3] + 6, NULL, 0);
	}
	if (chdir(argv[1]))
		die("chdir %s: %s", argv[1], strerror(errno));
	umask(027);

	int in = must_open("input.txt", O_RDONLY, 0);
	int in2 = must_open("input.txt", O_RDONLY, 0);
	if (dup2(in2, 40) != 40)
		die("dup2: %s", strerror(errno));
	close(in2);
	if (fcntl(40, F_SETFD, FD_CLOEXEC))
		die("F_SETFD: %s", strerror(errno));
	int log = must_open("log.txt", O_WRONLY | O_APPEND | O_CREAT, 0666);
	int data = must_open("data.bin", O_RDWR | O_CREAT | O_TRUNC, 0666);
	int null = must_open("/dev/null", O_WRONLY, 0);
	int dir = must_open(".", O_RDONLY | O_DIRECTORY, 0);

	for (long step = 1; step <= steps; step++) {
		char buf[32], hi[32], e1[160], e2[160], line[64];
		ssize_t n = read(in, buf, 16);
		ssize_t m = read(40, hi, 7);
		if (n < 0 || m < 0)
			die("read: %s", strerror(errno));
		escape(e1, sizeof e1, buf, n);
		escape(e2, sizeof e2, hi, m);
		int len = snprintf(line, sizeof line, "log step %ld\n", step);
		write_all(log, line, (size_t)len);
		write_all(null, line, (size_t)len);
		if (lseek(data, step * 3, SEEK_SET) < 0)
			die("lseek: %s", strerror(errno));
		char d[4] = { 'd', (char)('0' + step % 10), (char)('a' + step % 26), '\n' };
		write_all(data, d, 4);
		struct stat st;
		if (fstatat(dir, "input.txt", &st, 0))
			die("fstatat: %s", strerror(errno));
		out("step %ld read=\"%s\" in@%ld hi=\"%s\" hi@%ld log@%ld data@%ld null@%ld input.size=%ld\n",
		    step, e1, pos(in), e2, pos(40), pos(log), pos(data), pos(null), (long)st.st_size);
		sleep_ms(sleep_each);
	}

	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		die("getcwd: %s", strerror(errno));
	mode_t um = umask(0);
	umask(um);
	out("cwd %s\n", cwd);
	out("umask %04o\n", (unsigned)um);
	for (int fd = 3; fd < 64; fd++) {
		int fdflags = fcntl(fd, F_GETFD);
		if (fdflags < 0)
			continue;
		int fl = fcntl(fd, F_GETFL);
		struct stat st;
		if (fstat(fd, &st))
			die("fstat %d: %s", fd, strerror(errno));
		const char *type = S_ISREG(st.st_mode)   ? "reg"
				   : S_ISDIR(st.st_mode) ? "dir"
				   : S_ISCHR(st.st_mode) ? "chr"
							 : "other";
		char link[64], path[PATH_MAX];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t pl = readlink(link, path, sizeof path - 1);
		if (pl < 0)
			pl = 0;
		path[pl] = 0;
		out("fd %d flags=%#o cloexec=%d off=%ld type=%s mode=%04o size=%ld path=%s\n", fd, fl,
		    (fdflags & FD_CLOEXEC) ? 1 : 0, pos(fd), type, (unsigned)(st.st_mode & 07777),
		    S_ISREG(st.st_mode) ? (long)st.st_size : 0L, path);
	}
	out("done\n");
	return 0;
}
