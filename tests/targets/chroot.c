/* chroot STEPS ROOT [sleep=MS]
 *
 * Chroots into ROOT (prepared by the test: a copy of a static binary at /bin/prog, a
 * file /etc/marker and a directory /work), changes into /work, and then every step
 * prints its cwd, the size and mode of /bin/prog, the contents of /etc/marker (read by
 * absolute path) and of ../etc/marker (relative to the cwd), and whether a path that
 * only exists outside the root is visible. Each step also writes a file in the cwd. */
#include "util.h"
#include <fcntl.h>
#include <sys/stat.h>

static void read_file(const char *p, char *buf, size_t len)
{
	memset(buf, 0, len);
	int fd = open(p, O_RDONLY);
	if (fd < 0) {
		snprintf(buf, len, "<%s>", strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, len - 1);
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: chroot STEPS ROOT [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	long ms = 40;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);
	if (chroot(argv[2]) != 0 || chdir("/work") != 0)
		die("chroot %s: %s", argv[2], strerror(errno));
	out("chrooted\n");
	for (long i = 0; i < steps; i++) {
		char cwd[256] = { 0 };
		if (!getcwd(cwd, sizeof cwd))
			snprintf(cwd, sizeof cwd, "<%s>", strerror(errno));
		struct stat st;
		long size = stat("/bin/prog", &st) == 0 ? (long)st.st_size : -errno;
		char abs[128], rel[128];
		read_file("/etc/marker", abs, sizeof abs);
		read_file("../etc/marker", rel, sizeof rel);
		int outside = access("/proc/self", F_OK) == 0 || access("/usr/bin", F_OK) == 0;
		char name[32];
		snprintf(name, sizeof name, "step-%02ld", i % 4);
		int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			write_all(fd, name, strlen(name));
			close(fd);
		}
		out("tick %ld: cwd %s prog size %ld mode %o marker \"%s\" rel \"%s\" outside %d "
		    "wrote %s %d\n",
		    i, cwd, size, (unsigned)(st.st_mode & 07777), abs, rel, outside, name, fd >= 0);
		sleep_ms(ms);
	}
	return 0;
}
