/* TCP sockets in the states restore brings back besides connections: created and not
 * connected, bound but not listening, listening, over IPv4, IPv6 and IPv4-mapped IPv6,
 * each with options set (linger, keepalive and its timing, buffer sizes, TCP_NODELAY,
 * TCP_CORK, reuse, IP_TOS/IPV6_TCLASS, timeouts, TCP_CONGESTION, SO_BINDTODEVICE...); a
 * listener with a connection it
 * accepted on the same port; a UDP socket with options of the same kind.
 *
 * It prints "ready" once set up. On "report" it prints the options and whether each
 * socket still has the address it had (never a port: they differ between runs). On
 * "check" it uses every socket: the bound ones listen on their port and take a
 * connection, the new one connects to the dual-stack listener through IPv4, the
 * IPv4-mapped one too, the connection carries data both ways; it prints what it saw.
 * On "exit" or end of file it exits 0.
 *
 * With the argument "closewait" it holds instead, as descriptor 3, a TCP socket in
 * CLOSE_WAIT (its peer closed; data still queued) and the listener; with "ended", as
 * descriptor 3, a socket whose peer reset the connection: restore brings the first back,
 * dump refuses the second. On "check" it reads the rest and the end of file from the CLOSE_WAIT
 * socket and writes to it. */
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int plain, bound4, bound6, mapped, listen6, listen4, client, server, udp;
static struct sockaddr_storage addr_of[64];

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt %d/%d", level, name);
}

static int geti(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static void remember(int fd)
{
	socklen_t l = sizeof addr_of[fd];
	if (getsockname(fd, (struct sockaddr *)&addr_of[fd], &l))
		die("getsockname");
}

static const char *same_addr(int fd)
{
	struct sockaddr_storage now;
	socklen_t l = sizeof now;
	memset(&now, 0, sizeof now);
	if (getsockname(fd, (struct sockaddr *)&now, &l))
		return "error";
	return memcmp(&now, &addr_of[fd], l) ? "changed" : "same";
}

static void bind6(int fd, const char *ip)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, ip, &a.sin6_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof a))
		die("bind %s", ip);
	remember(fd);
}

static void bind4(int fd)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(fd, (struct sockaddr *)&a, sizeof a))
		die("bind 127.0.0.1");
	remember(fd);
}

static void setup(void)
{
	plain = socket(AF_INET, SOCK_STREAM, 0);
	struct linger lg = { 1, 7 };
	if (plain < 0 || setsockopt(plain, SOL_SOCKET, SO_LINGER, &lg, sizeof lg))
		die("plain");
	seti(plain, SOL_SOCKET, SO_KEEPALIVE, 1);
	seti(plain, IPPROTO_TCP, TCP_KEEPIDLE, 33);
	seti(plain, IPPROTO_TCP, TCP_KEEPINTVL, 11);
	seti(plain, IPPROTO_TCP, TCP_KEEPCNT, 4);
	seti(plain, SOL_SOCKET, SO_SNDBUF, 65536);
	seti(plain, SOL_SOCKET, SO_RCVBUF, 98304);
	seti(plain, IPPROTO_TCP, TCP_NODELAY, 1);
	seti(plain, SOL_SOCKET, SO_REUSEADDR, 1);
	seti(plain, SOL_SOCKET, SO_REUSEPORT, 1);
	seti(plain, IPPROTO_IP, IP_TOS, 0x10);
	seti(plain, IPPROTO_TCP, TCP_USER_TIMEOUT, 5000);
	seti(plain, SOL_SOCKET, SO_PRIORITY, 3);
	if (setsockopt(plain, IPPROTO_TCP, TCP_CONGESTION, "reno", 4))
		die("TCP_CONGESTION");
	struct timeval tv = { 2, 500000 };
	if (setsockopt(plain, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv))
		die("SO_RCVTIMEO");

	bound4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	seti(bound4, SOL_SOCKET, SO_REUSEADDR, 1);
	seti(bound4, IPPROTO_TCP, TCP_CORK, 1);
	if (setsockopt(bound4, SOL_SOCKET, SO_BINDTODEVICE, "lo", 2))
		die("SO_BINDTODEVICE");
	bind4(bound4);

	bound6 = socket(AF_INET6, SOCK_STREAM, 0);
	seti(bound6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	seti(bound6, IPPROTO_IPV6, IPV6_TCLASS, 0x20);
	bind6(bound6, "::1");

	mapped = socket(AF_INET6, SOCK_STREAM, 0);
	seti(mapped, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	bind6(mapped, "::ffff:127.0.0.1");

	listen6 = socket(AF_INET6, SOCK_STREAM, 0);
	seti(listen6, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	seti(listen6, SOL_SOCKET, SO_KEEPALIVE, 1);
	seti(listen6, IPPROTO_TCP, TCP_KEEPIDLE, 44);
	seti(listen6, IPPROTO_TCP, TCP_NODELAY, 1);
	struct linger lg3 = { 1, 3 };
	if (setsockopt(listen6, SOL_SOCKET, SO_LINGER, &lg3, sizeof lg3))
		die("linger");
	bind6(listen6, "::");
	if (listen(listen6, 8))
		die("listen6");

	listen4 = socket(AF_INET, SOCK_STREAM, 0);
	seti(listen4, SOL_SOCKET, SO_REUSEADDR, 1);
	bind4(listen4);
	if (listen(listen4, 4))
		die("listen4");
	client = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(client, (struct sockaddr *)&addr_of[listen4], sizeof(struct sockaddr_in)))
		die("connect");
	server = accept(listen4, NULL, NULL);
	if (server < 0)
		die("accept");
	remember(server);
	if (write(client, "queued", 6) != 6)
		die("write");
	/* a UDP socket with options of the same kind */
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	seti(udp, IPPROTO_IP, IP_TOS, 0x08);
	seti(udp, SOL_SOCKET, SO_BROADCAST, 1);
	seti(udp, SOL_SOCKET, SO_PRIORITY, 2);
	seti(udp, IPPROTO_IP, IP_RECVERR, 1);
	struct timeval stv = { 1, 250000 };
	if (setsockopt(udp, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof stv))
		die("SO_SNDTIMEO");
}

static void report(void)
{
	struct linger lg = { 0, 0 };
	socklen_t l = sizeof lg;
	getsockopt(plain, SOL_SOCKET, SO_LINGER, &lg, &l);
	struct timeval tv = { 0, 0 };
	l = sizeof tv;
	getsockopt(plain, SOL_SOCKET, SO_RCVTIMEO, &tv, &l);
	out("report: plain linger=%d/%d keepalive=%d idle=%d intvl=%d cnt=%d sndbuf=%d "
	    "rcvbuf=%d nodelay=%d reuse=%d/%d tos=%#x user_timeout=%d priority=%d "
	    "rcvtimeo=%ld.%06ld\n",
	    lg.l_onoff, lg.l_linger, geti(plain, SOL_SOCKET, SO_KEEPALIVE),
	    geti(plain, IPPROTO_TCP, TCP_KEEPIDLE), geti(plain, IPPROTO_TCP, TCP_KEEPINTVL),
	    geti(plain, IPPROTO_TCP, TCP_KEEPCNT), geti(plain, SOL_SOCKET, SO_SNDBUF),
	    geti(plain, SOL_SOCKET, SO_RCVBUF), geti(plain, IPPROTO_TCP, TCP_NODELAY),
	    geti(plain, SOL_SOCKET, SO_REUSEADDR), geti(plain, SOL_SOCKET, SO_REUSEPORT),
	    geti(plain, IPPROTO_IP, IP_TOS), geti(plain, IPPROTO_TCP, TCP_USER_TIMEOUT),
	    geti(plain, SOL_SOCKET, SO_PRIORITY), (long)tv.tv_sec, (long)tv.tv_usec);
	out("report: bound4 addr=%s cork=%d reuseaddr=%d; bound6 addr=%s v6only=%d tclass=%#x; "
	    "mapped addr=%s v6only=%d\n",
	    same_addr(bound4), geti(bound4, IPPROTO_TCP, TCP_CORK),
	    geti(bound4, SOL_SOCKET, SO_REUSEADDR), same_addr(bound6),
	    geti(bound6, IPPROTO_IPV6, IPV6_V6ONLY), geti(bound6, IPPROTO_IPV6, IPV6_TCLASS),
	    same_addr(mapped), geti(mapped, IPPROTO_IPV6, IPV6_V6ONLY));
	out("report: listen6 addr=%s v6only=%d keepalive=%d idle=%d nodelay=%d; listen4 addr=%s; "
	    "server addr=%s\n",
	    same_addr(listen6), geti(listen6, IPPROTO_IPV6, IPV6_V6ONLY),
	    geti(listen6, SOL_SOCKET, SO_KEEPALIVE), geti(listen6, IPPROTO_TCP, TCP_KEEPIDLE),
	    geti(listen6, IPPROTO_TCP, TCP_NODELAY), same_addr(listen4), same_addr(server));
	char cc[16] = { 0 }, dev[16] = { 0 };
	l = sizeof cc;
	getsockopt(plain, IPPROTO_TCP, TCP_CONGESTION, cc, &l);
	l = sizeof dev;
	getsockopt(bound4, SOL_SOCKET, SO_BINDTODEVICE, dev, &l);
	out("report: plain congestion=%s; bound4 device=%s\n", cc, dev);
	l = sizeof tv;
	getsockopt(udp, SOL_SOCKET, SO_SNDTIMEO, &tv, &l);
	out("report: udp tos=%#x broadcast=%d priority=%d recverr=%d sndtimeo=%ld.%06ld\n",
	    geti(udp, IPPROTO_IP, IP_TOS), geti(udp, SOL_SOCKET, SO_BROADCAST),
	    geti(udp, SOL_SOCKET, SO_PRIORITY), geti(udp, IPPROTO_IP, IP_RECVERR), (long)tv.tv_sec,
	    (long)tv.tv_usec);
}

/* Connect a new socket of `family` to `to`, accept it on `lfd`; return the accepted
 * socket (the connecting one in *c). */
static int pair_through(int lfd, int c, const struct sockaddr *to, socklen_t len)
{
	if (connect(c, to, len))
		die("connect through %d", lfd);
	int s = accept(lfd, NULL, NULL);
	if (s < 0)
		die("accept");
	return s;
}

static void roundtrip(const char *what, int a, int b)
{
	char buf[16] = { 0 };
	if (write(a, "ping", 4) != 4)
		die("%s write", what);
	struct pollfd p = { .fd = b, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1 || read(b, buf, sizeof buf - 1) != 4)
		die("%s read", what);
	out("check: %s %s\n", what, buf);
}

static void check(void)
{
	/* the bound socket still holds its port: it listens there and takes a connection */
	if (listen(bound4, 2))
		die("listen on bound4");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&addr_of[bound4], sizeof(struct sockaddr_in)))
		die("connect bound4");
	struct pollfd p = { .fd = bound4, .events = POLLIN };
	poll(&p, 1, 5000);
	int s = accept(bound4, NULL, NULL);
	if (s < 0)
		die("accept bound4");
	roundtrip("bound4", c, s);
	close(c);
	close(s);

	if (listen(bound6, 2))
		die("listen on bound6");
	c = socket(AF_INET6, SOCK_STREAM, 0);
	s = pair_through(bound6, c, (struct sockaddr *)&addr_of[bound6], sizeof(struct sockaddr_in6));
	roundtrip("bound6", s, c);
	close(c);
	close(s);

	/* the new socket connects to the dual-stack listener through IPv4 */
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	to.sin_port = ((struct sockaddr_in6 *)&addr_of[listen6])->sin6_port;
	s = pair_through(listen6, plain, (struct sockaddr *)&to, sizeof to);
	struct sockaddr_in6 peer;
	socklen_t l = sizeof peer;
	char ip[64] = "?";
	if (!getpeername(s, (struct sockaddr *)&peer, &l))
		inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip);
	out("check: accepted from %s keepalive=%d idle=%d nodelay=%d; plain tos=%#x idle=%d\n", ip,
	    geti(s, SOL_SOCKET, SO_KEEPALIVE), geti(s, IPPROTO_TCP, TCP_KEEPIDLE),
	    geti(s, IPPROTO_TCP, TCP_NODELAY), geti(plain, IPPROTO_IP, IP_TOS),
	    geti(plain, IPPROTO_TCP, TCP_KEEPIDLE));
	roundtrip("plain", plain, s);
	close(s);

	/* the IPv4-mapped one connects from its own address */
	struct sockaddr_in6 to6 = { .sin6_family = AF_INET6, .sin6_port = to.sin_port };
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &to6.sin6_addr);
	s = pair_through(listen6, mapped, (struct sockaddr *)&to6, sizeof to6);
	out("check: mapped addr=%s\n", same_addr(mapped));
	roundtrip("mapped", mapped, s);
	close(s);

	/* the connection accepted on the listener's port */
	char buf[16] = { 0 };
	if (read(server, buf, 6) != 6)
		die("read queued");
	out("check: server got %s\n", buf);
	roundtrip("server", server, client);
	roundtrip("client", client, server);
	out("check: done\n");
}

static int odd = -1;

static void setup_odd(const char *mode)
{
	int first = socket(AF_INET, SOCK_STREAM, 0);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	bind4(l);
	close(first);
	if (listen(l, 2))
		die("listen");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&addr_of[l], sizeof(struct sockaddr_in)))
		die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0 || write(c, "rest", 4) != 4)
		die("accept");
	if (strcmp(mode, "ended") == 0) {
		/* the peer resets the connection: the socket is left in CLOSE */
		struct linger lg = { 1, 0 };
		if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg))
			die("linger");
	}
	close(c);
	if (dup2(s, 3) != 3)
		die("dup2");
	close(s);
	odd = 3;
	/* the FIN or RST has arrived by then (loopback) */
	usleep(100000);
}

static void check_odd(void)
{
	char buf[16] = { 0 };
	ssize_t n = read(odd, buf, sizeof buf - 1);
	ssize_t e = read(odd, buf + 8, 1);
	out("check: read %zd %.4s then %zd; write %zd\n", n, buf, e, write(odd, "x", 1));
}

int main(int argc, char **argv)
{
	if (argc > 1)
		setup_odd(argv[1]);
	else
		setup();
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
			if (!strcmp(line, "report") && odd < 0)
				report();
			else if (!strcmp(line, "check"))
				odd < 0 ? check() : check_odd();
			else if (!strcmp(line, "exit"))
				quit = 1;
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, have - used + 1);
			have -= used;
		}
		if (quit)
			break;
	}
	return 0;
}
