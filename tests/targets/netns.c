/* netns ADDR
 *
 * A two-process tree meant to run in a network namespace of its own (started by the
 * test under `unshare --net`, with lo up and ADDR, e.g. 10.77.0.1, on it). The parent
 * listens on TCP ADDR:7000, binds a UDP socket to 127.0.0.1:7001 and listens on the
 * abstract unix name @ckpt-netns; the child connects to both listeners (the parent
 * accepts), writes 3000 bytes on its TCP connection and sends one datagram, which the
 * parent leaves queued. Then the parent prints "ready" and waits for commands on stdin,
 * each answered on one line, quiescent in between:
 *   go     one round: the parent reads what was queued (first round), sends "R" on TCP;
 *          the child answers "pong" on TCP, a datagram, "uni" on the unix connection and
 *          a new TCP connection to the listener carrying "new"; the parent checks each.
 *   exit   the parent tells the child to exit, waits for it and exits 0.
 * Nothing printed depends on addresses the kernel picks. */
#include "util.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define QUEUED 3000

static void read_full(int fd, char *buf, size_t n, const char *what)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("read %s: %s", what, r == 0 ? "EOF" : strerror(errno));
		got += (size_t)r;
	}
}

static struct sockaddr_in inaddr(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die("bad address %s", ip);
	return a;
}

static struct sockaddr_un abstract(socklen_t *len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const char *name = "ckpt-netns";
	memcpy(a.sun_path + 1, name, strlen(name));
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	return a;
}

static int tcp_connect(const char *ip)
{
	struct sockaddr_in a = inaddr(ip, 7000);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0)
		die("connect %s:7000: %s", ip, strerror(errno));
	return s;
}

static void child(const char *ip)
{
	int t = tcp_connect(ip);
	socklen_t ul;
	struct sockaddr_un ua = abstract(&ul);
	int u = socket(AF_UNIX, SOCK_STREAM, 0);
	if (u < 0 || connect(u, (struct sockaddr *)&ua, ul) != 0)
		die("connect @ckpt-netns: %s", strerror(errno));
	int d = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in da = inaddr("127.0.0.1", 7001);
	if (d < 0 || connect(d, (struct sockaddr *)&da, sizeof da) != 0)
		die("connect udp: %s", strerror(errno));
	char blob[QUEUED];
	for (int i = 0; i < QUEUED; i++)
		blob[i] = (char)('a' + i % 26);
	write_all(t, blob, sizeof blob);
	if (send(d, "queued-dgram", 12, 0) != 12)
		die("send: %s", strerror(errno));
	for (;;) {
		char c;
		read_full(t, &c, 1, "child tcp");
		if (c == 'X')
			_exit(0);
		write_all(t, "pong", 4);
		if (send(d, "dgram", 5, 0) != 5)
			die("send: %s", strerror(errno));
		write_all(u, "uni", 3);
		int n = tcp_connect(ip);
		write_all(n, "new", 3);
		close(n);
	}
}

int main(int argc, char **argv)
{
	const char *ip = argc > 1 ? argv[1] : "127.0.0.1";
	int one = 1;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in la = inaddr(ip, 7000);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(l, (struct sockaddr *)&la, sizeof la) != 0 || listen(l, 8) != 0)
		die("listen %s:7000: %s", ip, strerror(errno));
	int d = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in da = inaddr("127.0.0.1", 7001);
	if (d < 0 || bind(d, (struct sockaddr *)&da, sizeof da) != 0)
		die("bind udp: %s", strerror(errno));
	socklen_t ul;
	struct sockaddr_un ua = abstract(&ul);
	int ul_s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (ul_s < 0 || bind(ul_s, (struct sockaddr *)&ua, ul) != 0 || listen(ul_s, 4) != 0)
		die("listen @ckpt-netns: %s", strerror(errno));
	pid_t kid = fork();
	if (kid < 0)
		die("fork: %s", strerror(errno));
	if (kid == 0) {
		close(l);
		close(d);
		close(ul_s);
		child(ip);
	}
	int t = accept(l, NULL, NULL);
	int u = accept(ul_s, NULL, NULL);
	if (t < 0 || u < 0)
		die("accept: %s", strerror(errno));
	/* Let the child's data and datagram arrive: they stay queued. */
	struct pollfd pf[2] = { { .fd = t, .events = POLLIN }, { .fd = d, .events = POLLIN } };
	for (int i = 0; i < 2; i++)
		if (poll(&pf[i], 1, 10000) != 1)
			die("nothing queued");
	sleep_ms(50);
	out("ready\n");
	int round = 0, first = 1;
	char line[64];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(0, line + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 1;
		if (line[n] != '\n' && n + 1 < sizeof line) {
			n++;
			continue;
		}
		line[n] = 0;
		n = 0;
		if (strcmp(line, "exit") == 0) {
			write_all(t, "X", 1);
			int st;
			if (waitpid(kid, &st, 0) != kid)
				die("waitpid: %s", strerror(errno));
			out("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
			return 0;
		}
		if (strcmp(line, "go") != 0)
			continue;
		round++;
		const char *queued = "-";
		char buf[QUEUED + 1];
		if (first) {
			first = 0;
			read_full(t, buf, QUEUED, "queued tcp");
			int ok = 1;
			for (int i = 0; i < QUEUED; i++)
				ok &= buf[i] == (char)('a' + i % 26);
			ssize_t g = recv(d, buf, sizeof buf, 0);
			ok &= g == 12 && memcmp(buf, "queued-dgram", 12) == 0;
			queued = ok ? "ok" : "BAD";
		}
		write_all(t, "R", 1);
		read_full(t, buf, 4, "pong");
		const char *tcp = memcmp(buf, "pong", 4) == 0 ? "ok" : "BAD";
		ssize_t g = recv(d, buf, sizeof buf, 0);
		const char *udp = g == 5 && memcmp(buf, "dgram", 5) == 0 ? "ok" : "BAD";
		read_full(u, buf, 3, "unix");
		const char *uni = memcmp(buf, "uni", 3) == 0 ? "ok" : "BAD";
		int a = accept(l, NULL, NULL);
		if (a < 0)
			die("accept: %s", strerror(errno));
		read_full(a, buf, 3, "new connection");
		const char *acc = memcmp(buf, "new", 3) == 0 ? "ok" : "BAD";
		close(a);
		out("round %d queued=%s tcp=%s udp=%s unix=%s accept=%s\n", round, queued, tcp, udp,
		    uni, acc);
	}
}
