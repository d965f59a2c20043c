/* A TCP connection closed on one side or both, held as descriptor 3, with a peer in
 * another process (the same program run as "peer", outside the dumped tree).
 *
 *   tcphalf peer MODE FAMILY     listens, prints "port N", accepts one connection and
 *                                plays the peer's part
 *   tcphalf MODE FAMILY PORT     connects to the peer and brings its end into the state
 *
 * FAMILY: 4 (127.0.0.1), 6 (::1) or mapped (an IPv6 socket to ::ffff:127.0.0.1).
 * MODE, the state of the program's end once it prints "ready":
 *   closewait     the peer sent "rest" and its FIN; nothing read yet
 *   closewaiteof  the same, "rest" and the end of file already read
 *   finwait2      it sent "bye" and its FIN; the peer read both (acknowledged)
 *   finwait1      it sent data the peer does not read (its window is closed) then its
 *                 FIN, which waits behind the data
 *   lastack       the peer's FIN came and was read; then as finwait1
 *   closing       as finwait1, then the peer's FIN came
 *   shutrd        established; the program shut its reading side down (SHUT_RD)
 *   backlog       (PORT 0) a listener, descriptor 3, that the peer (tcphalf peer
 *                 backlog FAMILY PORT) connects to twice, sending "early" on the
 *                 first; nothing accepted yet (dump refuses it); on "check" it accepts
 *                 both and reads
 *   synsent       a non-blocking connect in progress: the peer's accept queue is full
 *                 (its own connection fills it), so it drops the SYNs; on "check" it
 *                 accepts, the SYN sent again gets through and the connect completes
 * Both ends read commands on stdin ("check", then "exit"); see each mode's part below.
 * The only numbers printed are the port and the byte counts of the blocked modes (how
 * much the program wrote, how much the peer read: the test compares the two). */
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static const char *mode;

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		die("TCP_INFO");
	return ti.tcpi_state;
}

static const char *state_name(int s)
{
	static const char *n[] = { "?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",
				   "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK",
				   "LISTEN", "CLOSING" };
	return s >= 0 && s < 12 ? n[s] : "?";
}

static void wait_state(int fd, int want)
{
	for (int i = 0; i < 20000; i++) {
		if (state_of(fd) == want)
			return;
		usleep(1000);
	}
	die("%s: state %s, never %s", mode, state_name(state_of(fd)), state_name(want));
}

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt %d/%d", level, name);
}

static socklen_t addr(const char *fam, int port, struct sockaddr_storage *ss, int *domain)
{
	memset(ss, 0, sizeof *ss);
	if (!strcmp(fam, "4")) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*domain = AF_INET;
		return sizeof *a;
	}
	struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
	a->sin6_family = AF_INET6;
	a->sin6_port = htons(port);
	inet_pton(AF_INET6, strcmp(fam, "6") ? "::ffff:127.0.0.1" : "::1", &a->sin6_addr);
	*domain = AF_INET6;
	return sizeof *a;
}

/* Bytes of the blocked modes' stream: byte i is i % 251. */
static void fill(char *b, size_t n, size_t from)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)((from + i) % 251);
}

/* Write the pattern until the send buffer is full (the peer does not read); returns the
 * count. */
static size_t flood(int fd)
{
	size_t total = 0;
	char buf[4096];
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	for (int idle = 0; idle < 200;) {
		fill(buf, sizeof buf, total);
		ssize_t n = write(fd, buf, sizeof buf);
		if (n > 0) {
			total += (size_t)n;
			idle = 0;
		} else if (n < 0 && errno == EAGAIN) {
			idle++;
			usleep(1000);
		} else {
			die("flood");
		}
	}
	fcntl(fd, F_SETFL, fl);
	return total;
}

/* Read everything until end of file: the bytes (at most cap kept in keep), and the count. */
static size_t drain(int fd, char *keep, size_t cap, int pattern)
{
	size_t total = 0;
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("%s: read: %s", mode, strerror(errno));
		}
		if (n == 0)
			break;
		if (pattern) {
			char want[65536];
			fill(want, (size_t)n, total);
			if (memcmp(want, buf, (size_t)n))
				die("%s: bytes %zu.. are not the stream's", mode, total);
		}
		if (keep && total + (size_t)n < cap)
			memcpy(keep + total, buf, (size_t)n);
		total += (size_t)n;
	}
	if (keep)
		keep[total < cap ? total : cap - 1] = 0;
	return total;
}

/* Whether a read now gives end of file again (not data, not an error). */
static const char *eof_again(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
	return n == 0 ? "eof again" : n > 0 ? "DATA" : "error";
}

static int wait_line(const char *want)
{
	char line[64];
	for (;;) {
		if (!fgets(line, sizeof line, stdin))
			return 0;
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, want))
			return 1;
	}
}

static int blocked(void)
{
	return !strcmp(mode, "finwait1") || !strcmp(mode, "lastack") || !strcmp(mode, "closing");
}

static int peer(const char *fam)
{
	struct sockaddr_storage ss;
	int domain;
	socklen_t len = addr(fam, 0, &ss, &domain);
	if (!strcmp(fam, "mapped")) {
		/* the peer of a v4-mapped socket is plain IPv4 */
		len = addr("4", 0, &ss, &domain);
	}
	int l = socket(domain, SOCK_STREAM, 0);
	if (l < 0)
		die("socket");
	if (!strcmp(mode, "synsent")) {
		/* an accept queue of one, filled by a connection of its own */
		if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 0))
			die("bind/listen");
		socklen_t al = sizeof ss;
		getsockname(l, (struct sockaddr *)&ss, &al);
		int filler = socket(domain, SOCK_STREAM, 0);
		if (connect(filler, (struct sockaddr *)&ss, al))
			die("filler");
		usleep(50000);
		out("port %d\n", ntohs(domain == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						 : ((struct sockaddr_in6 *)&ss)->sin6_port));
		out("peer ready\n");
		if (!wait_line("check"))
			return 0;
		int a = accept(l, NULL, NULL);
		int c = accept(l, NULL, NULL);
		if (a < 0 || c < 0)
			die("accept");
		char got[16] = { 0 };
		if (read(c, got, 5) != 5)
			die("read");
		out("peer: accepted the connection; got '%s'\n", got);
		wait_line("exit");
		return 0;
	}
	/* A small window that the blocked modes fill (accepted sockets inherit it). */
	if (blocked())
		seti(l, SOL_SOCKET, SO_RCVBUF, 4096);
	if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 1))
		die("bind/listen");
	socklen_t al = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &al);
	out("port %d\n", ntohs(domain == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						 : ((struct sockaddr_in6 *)&ss)->sin6_port));
	int c = accept(l, NULL, NULL);
	if (c < 0)
		die("accept");
	close(l);
	char got[256];
	if (!strcmp(mode, "closewait") || !strcmp(mode, "closewaiteof") || !strcmp(mode, "lastack")) {
		if (!strcmp(mode, "lastack"))
			shutdown(c, SHUT_WR);
		else if (write(c, "rest", 4) != 4 || shutdown(c, SHUT_WR))
			die("write");
	}
	if (!strcmp(mode, "finwait2")) {
		drain(c, got, sizeof got, 0);
		out("peer: got '%s' then eof\n", got);
	}
	out("peer ready\n");
	if (!strcmp(mode, "closing")) {
		if (!wait_line("fin"))
			return 0;
		shutdown(c, SHUT_WR);
		out("peer: fin sent\n");
	}
	if (!wait_line("check"))
		return 0;
	if (blocked()) {
		size_t n = drain(c, NULL, 0, 1);
		out("peer: read %zu bytes of the stream then eof; %s\n", n, eof_again(c));
	} else if (!strcmp(mode, "finwait2")) {
		if (write(c, "late", 4) != 4 || shutdown(c, SHUT_WR))
			die("late");
		out("peer: sent 'late' and its fin\n");
	} else {
		drain(c, got, sizeof got, 0);
		out("peer: got '%s' then eof; %s\n", got, eof_again(c));
		if (!strcmp(mode, "shutrd"))
			shutdown(c, SHUT_WR);
	}
	if (!strcmp(mode, "finwait1")) {
		if (write(c, "late", 4) != 4 || shutdown(c, SHUT_WR))
			die("late");
		out("peer: sent 'late' and its fin\n");
	}
	wait_line("exit");
	return 0;
}

/* The peer of "backlog": two connections to the program's listener, "early" sent on the
 * first. */
static int backlog_peer(const char *fam, int port)
{
	struct sockaddr_storage ss;
	int domain;
	socklen_t len = addr(fam, port, &ss, &domain);
	int a = socket(domain, SOCK_STREAM, 0), b = socket(domain, SOCK_STREAM, 0);
	if (connect(a, (struct sockaddr *)&ss, len) || connect(b, (struct sockaddr *)&ss, len))
		die("connect: %s", strerror(errno));
	if (write(a, "early", 5) != 5)
		die("early");
	out("peer ready\n");
	wait_line("exit");
	return 0;
}

static int backlog_listener(const char *fam)
{
	struct sockaddr_storage ss;
	int domain;
	socklen_t len = addr(fam, 0, &ss, &domain);
	int l = socket(domain, SOCK_STREAM, 0);
	if (l != 3 || bind(l, (struct sockaddr *)&ss, len) || listen(l, 8))
		die("listen");
	socklen_t al = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &al);
	out("port %d\n", ntohs(domain == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					 : ((struct sockaddr_in6 *)&ss)->sin6_port));
	struct tcp_info ti;
	for (int i = 0; i < 20000; i++) {
		socklen_t tl = sizeof ti;
		getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &tl);
		if (ti.tcpi_unacked == 2)
			break;
		usleep(1000);
	}
	out("ready %u waiting\n", ti.tcpi_unacked);
	if (!wait_line("check"))
		return 0;
	int a = accept(l, NULL, NULL), b = accept(l, NULL, NULL);
	char got[16] = { 0 };
	if (a < 0 || b < 0 || read(a, got, 5) != 5)
		die("accept");
	out("check: accepted 2; got '%s'\n", got);
	wait_line("exit");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "peer") && !strcmp(argv[2], "backlog")) {
		mode = argv[2];
		return backlog_peer(argv[3], atoi(argv[4]));
	}
	if (argc == 4 && !strcmp(argv[1], "backlog")) {
		mode = argv[1];
		return backlog_listener(argv[2]);
	}
	if (argc == 4 && !strcmp(argv[1], "peer")) {
		mode = argv[2];
		return peer(argv[3]);
	}
	if (argc != 4)
		die("usage: tcphalf MODE FAMILY PORT | tcphalf peer MODE FAMILY");
	mode = argv[1];
	struct sockaddr_storage ss;
	int domain;
	socklen_t len = addr(argv[2], atoi(argv[3]), &ss, &domain);
	int s = socket(domain, SOCK_STREAM, 0);
	if (s != 3)
		die("the socket should be descriptor 3, not %d", s);
	if (domain == AF_INET6)
		seti(s, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	seti(s, SOL_SOCKET, SO_SNDBUF, 8192);
	seti(s, IPPROTO_TCP, TCP_NODELAY, 1);
	if (strcmp(mode, "synsent") && connect(s, (struct sockaddr *)&ss, len))
		die("connect: %s", strerror(errno));
	size_t sent = 0;
	char got[256];
	if (!strcmp(mode, "closewait")) {
		wait_state(s, TCP_CLOSE_WAIT);
	} else if (!strcmp(mode, "shutrd")) {
		if (shutdown(s, SHUT_RD))
			die("SHUT_RD");
	} else if (!strcmp(mode, "closewaiteof")) {
		wait_state(s, TCP_CLOSE_WAIT);
		drain(s, got, sizeof got, 0);
		out("read '%s' then eof\n", got);
	} else if (!strcmp(mode, "finwait2")) {
		if (write(s, "bye", 3) != 3 || shutdown(s, SHUT_WR))
			die("bye");
		wait_state(s, TCP_FIN_WAIT2);
	} else if (!strcmp(mode, "finwait1") || !strcmp(mode, "closing")) {
		sent = flood(s);
		shutdown(s, SHUT_WR);
		wait_state(s, TCP_FIN_WAIT1);
		if (!strcmp(mode, "closing")) {
			out("fin sent\n");
			wait_state(s, TCP_CLOSING);
		}
	} else if (!strcmp(mode, "lastack")) {
		wait_state(s, TCP_CLOSE_WAIT);
		drain(s, got, sizeof got, 0);
		sent = flood(s);
		shutdown(s, SHUT_WR);
		wait_state(s, TCP_LAST_ACK);
	} else if (!strcmp(mode, "synsent")) {
		fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
		if (connect(s, (struct sockaddr *)&ss, len) == 0 || errno != EINPROGRESS)
			die("connect: %s", strerror(errno));
		wait_state(s, TCP_SYN_SENT);
	} else {
		die("unknown mode %s", mode);
	}
	out("ready %s\n", state_name(state_of(s)));
	if (!wait_line("check"))
		return 0;
	/* The peer has done its part (see the test): the rest of the stream and the end. */
	if (!strcmp(mode, "synsent")) {
		struct pollfd p = { .fd = s, .events = POLLOUT };
		int r = poll(&p, 1, 30000);
		int err = -1;
		socklen_t l = sizeof err;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
		out("check: poll %d, SO_ERROR %d, state %s\n", r, err, state_name(state_of(s)));
		if (write(s, "hello", 5) != 5)
			die("hello");
		out("sent 0\n");
		wait_line("exit");
		return 0;
	}
	if (!strcmp(mode, "closewait") || !strcmp(mode, "closewaiteof") || !strcmp(mode, "shutrd")) {
		drain(s, got, sizeof got, 0);
		out("check: read '%s' then eof; %s\n", got, eof_again(s));
		if (write(s, "reply", 5) != 5 || shutdown(s, SHUT_WR))
			die("reply");
		wait_state(s, TCP_CLOSE);
	} else if (!strcmp(mode, "finwait2") || !strcmp(mode, "finwait1")) {
		drain(s, got, sizeof got, 0);
		out("check: read '%s' then eof; %s\n", got, eof_again(s));
		wait_state(s, TCP_CLOSE);
	} else {
		/* lastack, closing: the peer has read everything; our FIN is acknowledged */
		out("check: %s\n", eof_again(s));
		wait_state(s, TCP_CLOSE);
	}
	out("check: closed after sending %s bytes\n", sent ? "the flooded" : "no flooded");
	out("sent %zu\n", sent);
	wait_line("exit");
	return 0;
}
