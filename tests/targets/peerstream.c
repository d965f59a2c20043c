/* peerstream: a TCP stream from a peer outside the tree, read while the peer keeps
 * sending (tests/e2e_peerstream.rs).
 *
 * usage: peerstream direct PORT | peerstream inflight PORT
 * Connects to 127.0.0.1:PORT. The peer sends 8-byte big-endian integers 0, 1, 2...
 * without pausing; the reader checks each is the next one (dies naming the first one out
 * of order) and writes every byte it read back on the connection. At the peer's end of
 * stream it prints "N integers in order", shuts its side down and exits 0.
 * direct: the process that connected reads; prints "ready" once connected.
 * inflight: the process forks C, sends the connection to it on a unix datagram pair
 * (SCM_RIGHTS) and closes its own copy, then prints "ready": the connection is held
 * only by the queued message until C reads a line "go" from stdin and takes it. The
 * parent exits with C's status. */
#include "util.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

static void stream(int s)
{
	unsigned char buf[65536 + 8];
	size_t have = 0;
	uint64_t next = 0;
	for (;;) {
		ssize_t n = read(s, buf + have, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read: %s", strerror(errno));
		if (n == 0)
			break;
		write_all(s, (const char *)buf + have, (size_t)n);
		have += (size_t)n;
		size_t off = 0;
		for (; have - off >= 8; off += 8) {
			uint64_t v = 0;
			for (int i = 0; i < 8; i++)
				v = v << 8 | buf[off + (size_t)i];
			if (v != next)
				die("integer %llu came where %llu was due",
				    (unsigned long long)v, (unsigned long long)next);
			next++;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	if (have)
		die("%zu bytes of a partial integer at the end of stream", have);
	out("%llu integers in order\n", (unsigned long long)next);
	if (shutdown(s, SHUT_WR))
		die("shutdown: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: peerstream direct|inflight PORT");
	long port = arg_long(argc, argv, 2, 0);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a))
		die("connect: %s", strerror(errno));
	if (!strcmp(argv[1], "direct")) {
		out("ready\n");
		stream(s);
		return 0;
	}
	if (strcmp(argv[1], "inflight"))
		die("unknown mode %s", argv[1]);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp))
		die("socketpair: %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0) {
		close(s);
		close(sp[0]);
		char line[16];
		size_t got = 0;
		while (got < sizeof line - 1) {
			ssize_t n = read(0, line + got, 1);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				die("C: stdin ended before go");
			if (line[got++] == '\n')
				break;
		}
		line[got] = 0;
		if (strcmp(line, "go\n"))
			die("C: expected go, got %s", line);
		char b;
		struct iovec iov = { &b, 1 };
		union {
			struct cmsghdr h;
			char space[CMSG_SPACE(sizeof(int))];
		} u;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.space,
				     .msg_controllen = sizeof u.space };
		if (recvmsg(sp[1], &mh, MSG_CMSG_CLOEXEC) != 1)
			die("C: recvmsg: %s", strerror(errno));
		struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
		if (!ch || ch->cmsg_type != SCM_RIGHTS)
			die("C: no descriptor came");
		int t;
		memcpy(&t, CMSG_DATA(ch), sizeof t);
		out("C: took the connection\n");
		stream(t);
		return 0;
	}
	char b = 't';
	struct iovec iov = { &b, 1 };
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.space,
			     .msg_controllen = sizeof u.space };
	struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(ch), &s, sizeof s);
	if (sendmsg(sp[0], &mh, 0) != 1)
		die("sendmsg: %s", strerror(errno));
	close(s);
	close(sp[1]);
	out("ready\n");
	int st;
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
