/* A TCP listener with connections waiting to be accepted, from its own children (and
 * from a client outside, run separately).
 *
 *   tcpaccept FAMILY ORDER SHUT EXTERNAL [SIZES]   the server, one child per digit of ORDER
 *   tcpaccept client FAMILY PORT                   a client outside the server's tree
 *
 * FAMILY: 4 (127.0.0.1) or 6 (::1). The server listens (backlog 8) on descriptor 3,
 * prints "port N", forks child 0, 1, ... (one per digit of ORDER), then lets them
 * connect one by one in the order ORDER gives (e.g. "120": child 1 first, then 2, then
 * 0), each before the next, so the accept queue holds them in that order, not in the
 * children's order. Child SHUT (a digit, or "-" for none) shuts its writing side down
 * after connecting (its FIN waits on the listener's side). SIZES (comma-separated, by
 * child: "0,20000,5") gives how many bytes each child sends right after connecting
 * (before its shutdown), bytes of a pattern of its own, and waits until they are
 * acknowledged (they wait, unread, on the listener's side); nothing by default. Once
 * the queue holds every child's connection and EXTERNAL more (from `tcpaccept client`),
 * it prints "ready N waiting" (N from the listener's TCP_INFO).
 *
 * On "check" (stdin) the server accepts them all, one at a time: to each it writes
 * "go", then reads until end of file what the client answers ("hello I" from child I,
 * "hello x" from an external client; nothing from the one that shut down), and
 * prints "accepted K: 'ANSWER'", or "accepted K: 'ANSWER' after N bytes" when child I's
 * N bytes came first, each as its pattern has it ("accepted K: unexpected bytes" if
 * not). Each client, blocked reading its socket until then,
 * reads "go", answers (unless shut down) then shuts its writing side down, reads to
 * the end of file and prints "client I: got 'go'". On "exit" the server waits for its
 * children and exits 0 if they all did. */
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static int family;
static long sizes[10];

/* Byte J of what child I sends before it is accepted. */
static unsigned char pattern(int i, long j)
{
	return (unsigned char)(j * 31 + i * 101 + (j >> 8));
}

/* Whether BUF (LEN bytes) is child I's bytes then its answer (none if SHUT). */
static int from_child(const unsigned char *buf, size_t len, int i, int shut)
{
	size_t n = (size_t)sizes[i];
	char answer[16];
	if (i == shut)
		answer[0] = 0;
	else
		snprintf(answer, sizeof answer, "hello %d", i);
	if (len != n + strlen(answer) || memcmp(buf + n, answer, strlen(answer)))
		return 0;
	for (size_t j = 0; j < n; j++)
		if (buf[j] != pattern(i, (long)j))
			return 0;
	return 1;
}

static socklen_t addr_of(struct sockaddr_storage *ss, int port)
{
	memset(ss, 0, sizeof *ss);
	if (family == 6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		return sizeof *a;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof *a;
}

static int sock(void)
{
	int s = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	return s;
}

/* What a client does once accepted: "go", its answer, then the rest to the end. */
static void client_part(int s, const char *who, int shut)
{
	char buf[64];
	size_t got = 0;
	for (;;) {
		ssize_t n = read(s, buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got >= 2)
			break;
	}
	buf[got] = 0;
	if (!shut) {
		char m[32];
		int l = snprintf(m, sizeof m, "hello %s", who);
		write_all(s, m, (size_t)l);
		shutdown(s, SHUT_WR);
	}
	char rest[16];
	while (read(s, rest, sizeof rest) > 0)
		;
	out("client %s: got '%s'\n", who, buf);
}

static int queued(int l)
{
	struct tcp_info ti;
	socklen_t n = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &n))
		die("TCP_INFO");
	return (int)ti.tcpi_unacked;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "client")) {
		family = atoi(argv[2]);
		int s = sock();
		struct sockaddr_storage ss;
		socklen_t len = addr_of(&ss, atoi(argv[3]));
		if (connect(s, (struct sockaddr *)&ss, len))
			die("connect");
		out("client connected\n");
		client_part(s, "x", 0);
		return 0;
	}
	if (argc != 5 && argc != 6)
		die("usage: tcpaccept FAMILY ORDER SHUT EXTERNAL [SIZES] | client FAMILY PORT");
	long total = 0;
	if (argc == 6) {
		char *p = argv[5];
		for (int i = 0; i < 10 && *p; i++) {
			sizes[i] = strtol(p, &p, 10);
			total += sizes[i];
			if (*p == ',')
				p++;
		}
	}
	family = atoi(argv[1]);
	const char *order = argv[2];
	int n = (int)strlen(order);
	int shut = argv[3][0] == '-' ? -1 : argv[3][0] - '0';
	int external = atoi(argv[4]);
	int l = sock();
	if (l != 3) {
		if (dup2(l, 3) < 0)
			die("dup2");
		close(l);
		l = 3;
	}
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_storage ss;
	socklen_t len = addr_of(&ss, 0);
	if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 8))
		die("listen");
	len = sizeof ss;
	if (getsockname(l, (struct sockaddr *)&ss, &len))
		die("getsockname");
	int port = family == 6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
			       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	out("port %d\n", port);
	/* go[i]: the parent tells child i to connect; done: each tells it did. */
	int go[10][2], done[2];
	pid_t kids[10];
	if (n > 10 || pipe(done))
		die("setup");
	for (int i = 0; i < n; i++) {
		if (pipe(go[i]))
			die("pipe");
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			close(l);
			char c;
			if (read(go[i][0], &c, 1) != 1)
				_exit(3);
			int s = sock();
			struct sockaddr_storage to;
			socklen_t tl = addr_of(&to, port);
			if (connect(s, (struct sockaddr *)&to, tl))
				die("connect");
			if (sizes[i] > 0) {
				char *d = malloc((size_t)sizes[i]);
				if (!d)
					die("malloc");
				for (long j = 0; j < sizes[i]; j++)
					d[j] = (char)pattern(i, j);
				write_all(s, d, (size_t)sizes[i]);
				free(d);
				int left = 1;
				while (left > 0) {
					if (ioctl(s, TIOCOUTQ, &left))
						die("SIOCOUTQ");
					if (left > 0)
						usleep(1000);
				}
			}
			if (i == shut && shutdown(s, SHUT_WR))
				die("shutdown");
			write_all(done[1], "c", 1);
			char who[4];
			snprintf(who, sizeof who, "%d", i);
			client_part(s, who, i == shut);
			_exit(0);
		}
	}
	for (int k = 0; k < n; k++) {
		int i = order[k] - '0';
		char c;
		write_all(go[i][1], "g", 1);
		if (read(done[0], &c, 1) != 1)
			die("child");
	}
	/* The shut-down client's FIN, and the external clients, come in their own time. */
	while (queued(l) < n + external)
		usleep(1000);
	usleep(20000);
	out("ready %d waiting\n", queued(l));
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (!strncmp(line, "check", 5)) {
			for (int k = 0; k < n + external; k++) {
				int a = accept(l, NULL, NULL);
				if (a < 0)
					die("accept");
				write_all(a, "go", 2);
				size_t cap = (size_t)total + 64, got = 0;
				unsigned char *buf = malloc(cap + 1);
				if (!buf)
					die("malloc");
				for (;;) {
					ssize_t r = read(a, buf + got, cap - got);
					if (r < 0 && errno == EINTR)
						continue;
					if (r <= 0)
						break;
					got += (size_t)r;
				}
				buf[got] = 0;
				close(a);
				int who = -1;
				for (int i = 0; i < n && who < 0; i++)
					if (sizes[i] > 0 && from_child(buf, got, i, shut))
						who = i;
				if (who >= 0)
					out("accepted %d: '%s' after %ld bytes\n", k,
					    (char *)buf + sizes[who], sizes[who]);
				else if (got < 64 && !memchr(buf, 0, got))
					out("accepted %d: '%s'\n", k, (char *)buf);
				else
					out("accepted %d: unexpected bytes\n", k);
				free(buf);
			}
		} else if (!strncmp(line, "exit", 4)) {
			break;
		}
	}
	int bad = 0;
	for (int i = 0; i < n; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
	}
	out("children %s\n", bad ? "failed" : "done");
	return bad;
}
