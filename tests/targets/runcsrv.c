/* A container's program for tests/e2e_runc.rs (built static: the container's rootfs has
 * nothing but busybox and this). As PID 1 of the container it forks one child that
 * waits (so the tree has two processes in the container's namespaces), then counts:
 * every 50 ms the count goes to /tmp/count (the container's tmpfs), and every 10 counts
 * a line "tick N" to standard output. It listens on the unix socket /srv.sock (in the
 * rootfs, which the host reaches through the bundle) and answers each connection with
 * one line "count N host HOSTNAME" and closes it. Time it did not run (checkpointed) is
 * not caught up: the count goes on from where it was.
 *
 * With "echo" (a container with a terminal, tests/e2e_runc_criu.rs), it also reads
 * its standard input and answers each line L with "got L"; with "setsid" too, the
 * waiting child leaves the session first (keeping the terminal on 0-2).
 *
 * Usage: runcsrv [echo [setsid]] */
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>

static void put_count(long n)
{
	char buf[32];
	int len = snprintf(buf, sizeof buf, "%ld\n", n);
	int fd = open("/tmp/count.new", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open /tmp/count.new");
	write_all(fd, buf, (size_t)len);
	close(fd);
	if (rename("/tmp/count.new", "/tmp/count") != 0)
		die("rename /tmp/count");
}

int main(int argc, char **argv)
{
	int echo = argc > 1 && strcmp(argv[1], "echo") == 0;
	int leave = argc > 2 && strcmp(argv[2], "setsid") == 0;
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		if (leave && setsid() < 0)
			die("setsid");
		for (;;)
			pause();
	}
	char line[256];
	size_t have = 0;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strcpy(a.sun_path, "/srv.sock");
	unlink(a.sun_path);
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 8) != 0)
		die("listen on /srv.sock");
	out("start\n");
	long n = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long wait_ms = (next.tv_sec - now.tv_sec) * 1000 + (next.tv_nsec - now.tv_nsec) / 1000000;
		struct pollfd pf[2] = {{.fd = ls, .events = POLLIN}, {.fd = echo ? 0 : -1, .events = POLLIN}};
		struct pollfd *p = &pf[0];
		int r = poll(pf, 2, wait_ms > 0 ? (int)wait_ms : 0);
		if (r < 0 && errno != EINTR)
			die("poll");
		if (r > 0 && (pf[1].revents & (POLLIN | POLLHUP))) {
			ssize_t got = read(0, line + have, sizeof line - 1 - have);
			if (got <= 0) {
				echo = 0;
				continue;
			}
			have += (size_t)got;
			char *nl;
			while ((nl = memchr(line, '\n', have)) != NULL) {
				*nl = 0;
				out("got %s\n", line);
				have -= (size_t)(nl + 1 - line);
				memmove(line, nl + 1, have);
			}
			if (have == sizeof line - 1)
				have = 0;
			continue;
		}
		if (r > 0 && (p->revents & POLLIN)) {
			int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0) {
				struct utsname u;
				uname(&u);
				char buf[128];
				int len = snprintf(buf, sizeof buf, "count %ld host %s\n", n, u.nodename);
				write_all(c, buf, (size_t)len);
				close(c);
			}
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec ||
		    (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec)) {
			n++;
			put_count(n);
			if (n % 10 == 0)
				out("tick %ld\n", n);
			next.tv_nsec += 50 * 1000000L;
			if (next.tv_nsec >= 1000000000L) {
				next.tv_sec++;
				next.tv_nsec -= 1000000000L;
			}
			/* Far behind (the time it was not running, checkpointed): no burst of
			 * counts to catch up, the count goes on from where it was. */
			if (now.tv_sec > next.tv_sec + 1)
				next = now;
		}
	}
}
