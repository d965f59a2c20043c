/* Pipes whose other end everybody closed, and pipe ends opened a second time: dumped
 * and restored, then asked how they behave.
 *
 *   halfpipe            sets up, starts a child (itself, as "halfpipe child": it holds
 *                       the descriptors that are not close-on-exec and waits in
 *                       pause()), prints "ready", then reads commands on stdin
 *
 * Set up (descriptor numbers fixed, so the output is deterministic):
 *   fd 10  the read end of pipe A, "queued without a writer\n" in it, write end closed
 *   fd 11  the write end of pipe B, "nobody reads this\n" in it, read end closed
 *   fd 12  the read end of pipe C (blocking), fd 13 its write end (blocking)
 *   fd 14  a second open file description of C's read end (through /proc/self/fd/12),
 *          non-blocking; fd 15 one of C's write end, with O_APPEND|O_NONBLOCK; fd 9
 *          one opened read-write (through /proc/self/fd/12), fd 8 another of the write
 *          end (numbered below the end pipe() made)
 *   "data in C\n" is queued in C.
 *   With the argument "sockets" also: fds 16 and 17 a unix stream socket pair, fd 18 a
 *   UDP socket bound to 127.0.0.1 (their inodes' owner is whoever ran the program).
 *
 * Commands (one per line):
 *   flags   prints each descriptor's status flags (F_GETFL, access mode and
 *           O_NONBLOCK/O_APPEND) and close-on-exec flag
 *   check   reads A to its end (prints what came and "eof"), writes to B (prints the
 *           error and whether SIGPIPE came), reads C through fd 14 (non-blocking: the
 *           data, then EAGAIN), writes to C through fd 15 and reads it back through 12
 *   exit    (or end of file) kills the child and exits 0 */
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

static void put_at(int fd, int want)
{
	if (fd == want)
		return;
	if (dup2(fd, want) != want)
		die("dup2 %d %d: %s", fd, want, strerror(errno));
	close(fd);
}

static int reopen(int fd, int flags)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int n = open(path, flags);
	if (n < 0)
		die("open %s: %s", path, strerror(errno));
	return n;
}

static void setup(void)
{
	int a[2], b[2], c[2];
	if (pipe(a) || pipe(b) || pipe(c))
		die("pipe: %s", strerror(errno));
	const char *qa = "queued without a writer\n", *qb = "nobody reads this\n";
	write_all(a[1], qa, strlen(qa));
	close(a[1]);
	write_all(b[1], qb, strlen(qb));
	close(b[0]);
	write_all(c[1], "data in C\n", 10);
	/* move everything above 20 first, then into place */
	int hi[4];
	hi[0] = fcntl(a[0], F_DUPFD, 20);
	hi[1] = fcntl(b[1], F_DUPFD, 20);
	hi[2] = fcntl(c[0], F_DUPFD, 20);
	hi[3] = fcntl(c[1], F_DUPFD, 20);
	close(a[0]);
	close(b[1]);
	close(c[0]);
	close(c[1]);
	put_at(hi[0], 10);
	put_at(hi[1], 11);
	put_at(hi[2], 12);
	put_at(hi[3], 13);
	put_at(reopen(12, O_RDONLY | O_NONBLOCK), 14);
	put_at(reopen(13, O_WRONLY | O_APPEND | O_NONBLOCK), 15);
	put_at(reopen(12, O_RDWR), 9);
	put_at(reopen(13, O_WRONLY), 8);
	/* close-on-exec on some of them: it is per descriptor */
	fcntl(11, F_SETFD, FD_CLOEXEC);
	fcntl(14, F_SETFD, FD_CLOEXEC);
}

static void sockets(void)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		die("socketpair: %s", strerror(errno));
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (u < 0 || bind(u, (struct sockaddr *)&a, sizeof a))
		die("udp socket: %s", strerror(errno));
	int hi[3] = { fcntl(sp[0], F_DUPFD, 30), fcntl(sp[1], F_DUPFD, 30), fcntl(u, F_DUPFD, 30) };
	close(sp[0]);
	close(sp[1]);
	close(u);
	put_at(hi[0], 16);
	put_at(hi[1], 17);
	put_at(hi[2], 18);
}

static void flags(void)
{
	static const int fds[] = { 8, 9, 10, 11, 12, 13, 14, 15 };
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
		int fd = fds[i];
		int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
		out("flags: fd %d access=%d nonblock=%d append=%d cloexec=%d\n", fd,
		    fl & O_ACCMODE, !!(fl & O_NONBLOCK), !!(fl & O_APPEND), !!(fdfl & FD_CLOEXEC));
	}
}

static void check(void)
{
	char buf[256];
	size_t got = 0;
	for (;;) {
		ssize_t r = read(10, buf + got, sizeof buf - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read A: %s", strerror(errno));
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = 0;
	out("A: %seof\n", buf);
	ssize_t w = write(11, "x", 1);
	out("B: write=%zd errno=%s sigpipe=%d\n", w, w < 0 ? strerror(errno) : "-", (int)sigpipes);
	ssize_t r = read(14, buf, sizeof buf - 1);
	buf[r > 0 ? r : 0] = 0;
	out("C via 14: %s", r > 0 ? buf : "(nothing)\n");
	r = read(14, buf, sizeof buf - 1);
	out("C via 14 again: %zd %s\n", r, r < 0 ? strerror(errno) : "-");
	write_all(15, "more in C\n", 10);
	r = read(12, buf, sizeof buf - 1);
	buf[r > 0 ? r : 0] = 0;
	out("C via 12: %s", r > 0 ? buf : "(nothing)\n");
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "child")) {
		for (;;)
			pause();
	}
	struct sigaction sa = { 0 };
	sa.sa_handler = on_sigpipe;
	if (sigaction(SIGPIPE, &sa, NULL))
		die("sigaction");
	setup();
	if (argc > 1 && !strcmp(argv[1], "sockets"))
		sockets();
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		/* a program of its own (no pages shared with the parent): it keeps the
		 * descriptors that are not close-on-exec */
		execl("/proc/self/exe", "halfpipe", "child", (char *)NULL);
		die("exec: %s", strerror(errno));
	}
	out("ready\n");
	char line[256];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(0, line + have, sizeof line - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
		line[have] = 0;
		char *nl;
		int quit = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (!strcmp(line, "flags"))
				flags();
			else if (!strcmp(line, "check"))
				check();
			else if (!strcmp(line, "exit"))
				quit = 1;
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, have - used + 1);
			have -= used;
		}
		if (quit)
			break;
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
