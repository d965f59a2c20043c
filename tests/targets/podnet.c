/* A container's TCP server for tests/e2e_podman_net.rs (built static: the container's
 * rootfs has nothing but busybox and this). As PID 1 of the container it forks one child
 * that waits (so the tree has two processes in the container's namespaces), then listens
 * on 0.0.0.0:PORT and serves up to 16 connections at once. It answers each line L a
 * connection sends with "C N L": C the connection's number (1 for the first accepted),
 * N the line's number on that connection; so a client sees at once whether its byte
 * stream went on intact (nothing lost, nothing twice) and whether it still talks to the
 * same connection. A line "hold" makes the server leave that connection unread for
 * 1.5 s (what the client sends meanwhile waits in the server's receive queue); it is
 * answered first, "C N hold".
 *
 * Usage: podnet PORT */
#include "util.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#define MAX_CONNS 16

struct conn {
	int fd;
	long id;
	long lines;
	size_t have;
	struct timespec held_until;
	char buf[512];
};

static long ms_until(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: podnet PORT");
	int port = atoi(argv[1]);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		for (;;)
			pause();
	}
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 8) != 0)
		die("listen on port %d: %s", port, strerror(errno));
	out("listening\n");
	static struct conn conns[MAX_CONNS];
	for (int i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	long accepted = 0;
	for (;;) {
		struct pollfd pf[MAX_CONNS + 1];
		pf[0] = (struct pollfd){.fd = ls, .events = POLLIN};
		long wait_ms = -1;
		for (int i = 0; i < MAX_CONNS; i++) {
			int fd = conns[i].fd;
			if (fd >= 0) {
				long left = ms_until(&conns[i].held_until);
				if (left > 0) {
					fd = -1;
					if (wait_ms < 0 || left < wait_ms)
						wait_ms = left;
				}
			}
			pf[i + 1] = (struct pollfd){.fd = fd, .events = POLLIN};
		}
		int r = poll(pf, MAX_CONNS + 1, (int)wait_ms);
		if (r < 0 && errno != EINTR)
			die("poll");
		if (r <= 0)
			continue;
		if (pf[0].revents & POLLIN) {
			int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0) {
				int i = 0;
				while (i < MAX_CONNS && conns[i].fd >= 0)
					i++;
				if (i == MAX_CONNS) {
					close(c);
				} else {
					accepted++;
					conns[i] = (struct conn){.fd = c, .id = accepted};
				}
			}
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *k = &conns[i];
			if (k->fd < 0 || pf[i + 1].fd < 0 || !(pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t got = read(k->fd, k->buf + k->have, sizeof k->buf - 1 - k->have);
			if (got <= 0) {
				close(k->fd);
				k->fd = -1;
				continue;
			}
			k->have += (size_t)got;
			char *nl;
			while ((nl = memchr(k->buf, '\n', k->have)) != NULL) {
				*nl = 0;
				k->lines++;
				char ans[600];
				int len = snprintf(ans, sizeof ans, "%ld %ld %s\n", k->id, k->lines, k->buf);
				write_all(k->fd, ans, (size_t)len);
				int hold = strcmp(k->buf, "hold") == 0;
				k->have -= (size_t)(nl + 1 - k->buf);
				memmove(k->buf, nl + 1, k->have);
				if (hold) {
					clock_gettime(CLOCK_MONOTONIC, &k->held_until);
					k->held_until.tv_nsec += 500 * 1000000L;
					k->held_until.tv_sec += 1 + k->held_until.tv_nsec / 1000000000L;
					k->held_until.tv_nsec %= 1000000000L;
				}
			}
			if (k->have == sizeof k->buf - 1)
				k->have = 0;
		}
	}
}
