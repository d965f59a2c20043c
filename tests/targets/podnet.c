/* A container's TCP server for tests/e2e_podman_criu.rs (built static: the container's
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
 * With PEER_IP and PEER_PORT it is a relay: it connects once to another podnet there
 * (retrying for 30 s while that one starts), and passes each line a connection sends
 * on over that one connection, answering with the peer's answer as it came (so the
 * client sees "1 N L": N counting the lines of the relay's one connection to its peer,
 * which goes on intact or not). The relay's connection to its peer is the one a test
 * of two containers on one bridge checkpoints one end of; a reset or a lost byte on it
 * ends the relay ("peer: ...", exit 1), which closes the client's connection.
 *
 * Usage: podnet PORT [PEER_IP PEER_PORT] */
#include "util.h"

#include <arpa/inet.h>
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

/* The relay's connection to its peer (-1: none, it answers itself). */
static int peer = -1;
static char peer_buf[600];
static size_t peer_have;

static void connect_peer(const char *ip, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die("bad peer address %s", ip);
	for (int i = 0; i < 600; i++) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			die("socket: %s", strerror(errno));
		if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
			peer = s;
			return;
		}
		close(s);
		sleep_ms(50);
	}
	die("connect to the peer %s:%d: %s", ip, port, strerror(errno));
}

/* Pass `line` (without its newline) to the peer; its answer (with its newline) in
 * `ans`, at most `cap` bytes: the length. */
static size_t ask_peer(const char *line, char *ans, size_t cap)
{
	char req[520];
	int len = snprintf(req, sizeof req, "%s\n", line);
	write_all(peer, req, (size_t)len);
	for (;;) {
		char *nl = memchr(peer_buf, '\n', peer_have);
		if (nl != NULL) {
			size_t n = (size_t)(nl + 1 - peer_buf);
			if (n > cap)
				die("peer: answer too long");
			memcpy(ans, peer_buf, n);
			peer_have -= n;
			memmove(peer_buf, nl + 1, peer_have);
			return n;
		}
		if (peer_have == sizeof peer_buf)
			die("peer: answer too long");
		ssize_t got = read(peer, peer_buf + peer_have, sizeof peer_buf - peer_have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			die("peer: %s", got < 0 ? strerror(errno) : "closed the connection");
		peer_have += (size_t)got;
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: podnet PORT [PEER_IP PEER_PORT]");
	int port = atoi(argv[1]);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		for (;;)
			pause();
	}
	if (argc >= 4)
		connect_peer(argv[2], atoi(argv[3]));
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
				size_t len;
				if (peer >= 0)
					len = ask_peer(k->buf, ans, sizeof ans);
				else
					len = (size_t)snprintf(ans, sizeof ans, "%ld %ld %s\n", k->id, k->lines,
							       k->buf);
				write_all(k->fd, ans, len);
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
