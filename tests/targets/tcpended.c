/* TCP sockets whose connection has ended, held by the program after the end.
 *
 * Descriptor 3 listens on 127.0.0.1 (a port it binds). Descriptor 4 is a connection
 * it accepted whose client sent "rest" and then reset it (SO_LINGER 0): it holds the
 * listener's port; descriptor 5 is a client of that listener whose accepted end sent
 * "back" and then reset it: its own port is free again (getsockname still shows it).
 * The program reads the error of both (ECONNRESET) and keeps them, data unread, and
 * closes the listener (restore does not share an ended socket's port yet).
 *
 * The mode (first argument) changes descriptor 4:
 *   pending         its error (ECONNRESET) is left unread;
 *   pipe            its client sent "rest", then a FIN, then the reset: the error (EPIPE)
 *                   is left unread, after the end of file;
 *   refused         it is a non-blocking connect to a closed port, its error
 *                   (ECONNREFUSED) read with SO_ERROR;
 *   refusedpending  the same, the error left unread;
 *   nbpending       a non-blocking connect that succeeded, then was reset: its error
 *                   left unread (the socket layer still says "connecting");
 *   lastack         its client sent "rest" and a FIN, then stopped hearing (a socket
 *                   filter on it drops everything), the program shut its side down
 *                   (LAST_ACK: its FIN never acknowledged), then the client reset it:
 *                   the error (ECONNRESET after the peer's FIN) left unread;
 *   timedout        its client sent "rest", then stopped answering (the filter), and
 *                   the program's keepalive (1 s idle, 1 s apart, 1 probe) gave up on
 *                   it: the error (ETIMEDOUT) left unread;
 *   synto           a non-blocking connect to a listener that drops everything (the
 *                   filter), given up by its user timeout (300 ms) at the SYN's first
 *                   retransmission: ETIMEDOUT left unread;
 *   unreach         a non-blocking connect to port 9, answered by an ICMP error (host
 *                   unreachable: in a network namespace whose firewall rejects so):
 *                   EHOSTUNREACH left unread;
 *   icmpended       its client is bound to port 10, where the firewall answers every
 *                   segment but SYNs with an ICMP error (host unreachable): its
 *                   acknowledgment of "rest" already left a soft error; then it sent a
 *                   byte that nothing acknowledged, and its user timeout (300 ms) gave
 *                   up: the error (EHOSTUNREACH, the soft error's) left unread, the soft
 *                   error still there for SO_ERROR after it.
 * The last two need that network namespace (the test makes it).
 *
 * It prints "ready" once set up. On "check" it prints, for 4 and 5: whether getsockname
 * gives the same address, getpeername's errno, what poll shows, three reads (bytes, or
 * minus the errno), SO_ERROR, a send's errno, whether another socket can bind its
 * address, and a connect's errno; then "check: done". On "exit" or end of file it exits
 * 0. */
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static struct sockaddr_in addr_of[8], lis;

static void remember(int fd)
{
	socklen_t l = sizeof addr_of[fd];
	if (getsockname(fd, (struct sockaddr *)&addr_of[fd], &l))
		die("getsockname");
}

static void to(int fd, int want)
{
	if (fd != want) {
		if (dup2(fd, want) != want)
			die("dup2");
		close(fd);
	}
}

static int so_error(int fd)
{
	int e = -1;
	socklen_t l = sizeof e;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l))
		return -errno;
	return e;
}

static void reset_by(int fd)
{
	struct linger lg = { 1, 0 };
	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg))
		die("linger");
	close(fd);
}

/* `fd` hears nothing any more: a classic filter dropping every packet. */
static void deaf(int fd)
{
	struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = { 1, &drop };
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog))
		die("SO_ATTACH_FILTER: %s", strerror(errno));
}

/* Wait (10 s at most) until `fd` shows POLLERR. */
static void until_error(int fd)
{
	for (int i = 0; i < 1000; i++) {
		struct pollfd p = { fd, 0, 0 };
		if (poll(&p, 1, 10) == 1 && (p.revents & POLLERR))
			return;
	}
	die("no error came");
}

/* Wait (10 s at most) until `fd`'s TCP state is CLOSE (TCP_INFO). */
static void until_closed(int fd)
{
	for (int i = 0; i < 1000; i++) {
		struct tcp_info ti;
		socklen_t l = sizeof ti;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 && ti.tcpi_state == TCP_CLOSE)
			return;
		sleep_ms(10);
	}
	die("the connect did not end");
}

static int dial(void)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&lis, sizeof lis))
		die("connect");
	return c;
}

static void setup(const char *mode)
{
	for (int fd = 3; fd < 6; fd++)
		close(fd);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	lis = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(l, (struct sockaddr *)&lis, sizeof lis) || listen(l, 4))
		die("listen");
	socklen_t ll = sizeof lis;
	getsockname(l, (struct sockaddr *)&lis, &ll);
	/* bound to a port of its own choosing (as servers are): what it accepts holds it */
	close(l);
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&lis, sizeof lis) || listen(l, 4))
		die("listen again");
	to(l, 3);
	/* placeholders keep 4 and 5 for the sockets below */
	int p4 = open("/dev/null", O_RDONLY), p5 = open("/dev/null", O_RDONLY);
	if (p4 != 4 || p5 != 5)
		die("descriptors 4 and 5 are taken");

	int s4;
	int pending = !strcmp(mode, "pending") || !strcmp(mode, "pipe") ||
		      !strcmp(mode, "refusedpending") || !strcmp(mode, "nbpending") ||
		      !strcmp(mode, "lastack") || !strcmp(mode, "timedout") ||
		      !strcmp(mode, "icmpended");
	if (!strcmp(mode, "synto") || !strcmp(mode, "unreach")) {
		int d = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in at = lis;
		at.sin_port = !strcmp(mode, "unreach") ? htons(9) : 0;
		if (at.sin_port == 0) {
			if (bind(d, (struct sockaddr *)&at, sizeof at) || listen(d, 1))
				die("deaf listener");
			deaf(d);
			socklen_t al = sizeof at;
			getsockname(d, (struct sockaddr *)&at, &al);
		}
		s4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int ut = 300;
		if (setsockopt(s4, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut))
			die("TCP_USER_TIMEOUT");
		if (connect(s4, (struct sockaddr *)&at, sizeof at) == 0 || errno != EINPROGRESS)
			die("connect: %s", strerror(errno));
		/* (an ICMP error that comes while connect() still holds the socket, as on
		 * loopback, only leaves a soft error: the SYN's retransmission, 1 s later,
		 * draws the one that ends it) */
		until_closed(s4);
		close(d);
	} else if (!strncmp(mode, "refused", 7)) {
		int t = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in closed = lis;
		closed.sin_port = 0;
		if (bind(t, (struct sockaddr *)&closed, sizeof closed))
			die("bind");
		socklen_t cl = sizeof closed;
		getsockname(t, (struct sockaddr *)&closed, &cl);
		close(t);
		s4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (connect(s4, (struct sockaddr *)&closed, sizeof closed) == 0 || errno != EINPROGRESS)
			die("connect to a closed port");
		sleep_ms(100);
		if (!pending && so_error(s4) != ECONNREFUSED)
			die("not refused");
	} else {
		int c;
		if (!strcmp(mode, "nbpending")) {
			/* the server's side is the client here: a non-blocking connect */
			int a = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			if (connect(a, (struct sockaddr *)&lis, sizeof lis) == 0 || errno != EINPROGRESS)
				die("non-blocking connect");
			c = accept(3, NULL, NULL);
			s4 = a;
		} else if (!strcmp(mode, "icmpended")) {
			c = socket(AF_INET, SOCK_STREAM, 0);
			struct sockaddr_in ten = lis;
			ten.sin_port = htons(10);
			if (c < 0 || bind(c, (struct sockaddr *)&ten, sizeof ten) ||
			    connect(c, (struct sockaddr *)&lis, sizeof lis))
				die("connect from port 10: %s", strerror(errno));
			s4 = accept(3, NULL, NULL);
		} else {
			c = dial();
			s4 = accept(3, NULL, NULL);
		}
		if (s4 < 0 || c < 0 || write(c, "rest", 4) != 4)
			die("accept");
		sleep_ms(50);
		if (!strcmp(mode, "pipe") || !strcmp(mode, "lastack")) {
			shutdown(c, SHUT_WR);
			sleep_ms(50);
		}
		if (!strcmp(mode, "lastack")) {
			deaf(c);
			shutdown(s4, SHUT_WR);
			sleep_ms(50);
		}
		if (!strcmp(mode, "timedout")) {
			int one = 1;
			deaf(c);
			if (setsockopt(s4, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) ||
			    setsockopt(s4, IPPROTO_TCP, TCP_KEEPIDLE, &one, sizeof one) ||
			    setsockopt(s4, IPPROTO_TCP, TCP_KEEPINTVL, &one, sizeof one) ||
			    setsockopt(s4, IPPROTO_TCP, TCP_KEEPCNT, &one, sizeof one))
				die("keepalive: %s", strerror(errno));
			until_error(s4);
		}
		if (!strcmp(mode, "icmpended")) {
			int ut = 300;
			if (setsockopt(s4, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) ||
			    write(s4, "x", 1) != 1)
				die("send to port 10");
			until_error(s4);
		}
		reset_by(c);
		sleep_ms(100);
		if (!pending && so_error(s4) != ECONNRESET)
			die("not reset");
	}
	to(s4, 4);

	int c5 = dial();
	int a = accept(3, NULL, NULL);
	if (a < 0 || write(a, "back", 4) != 4)
		die("accept");
	sleep_ms(50);
	reset_by(a);
	sleep_ms(100);
	if (so_error(c5) != ECONNRESET)
		die("client not reset");
	to(c5, 5);
	remember(4);
	remember(5);
	/* the listener goes: the ports of both are free now (getsockname still shows them) */
	close(3);
}

static void check(void)
{
	for (int fd = 4; fd <= 5; fd++) {
		struct sockaddr_in now, peer;
		socklen_t l = sizeof now;
		memset(&now, 0, sizeof now);
		getsockname(fd, (struct sockaddr *)&now, &l);
		const char *same = memcmp(&now, &addr_of[fd], sizeof now) ? "changed" : "same";
		l = sizeof peer;
		int pe = getpeername(fd, (struct sockaddr *)&peer, &l) ? errno : 0;
		struct pollfd p = { fd, POLLIN | POLLOUT | POLLRDHUP, 0 };
		poll(&p, 1, 0);
		char buf[16] = { 0 }, reads[64];
		int at = 0;
		for (int i = 0; i < 3; i++) {
			ssize_t n = read(fd, buf, sizeof buf - 1);
			if (n > 0)
				at += snprintf(reads + at, sizeof reads - at, "%s%zd %.*s", i ? ", " : "", n, (int)n, buf);
			else
				at += snprintf(reads + at, sizeof reads - at, "%s%d", i ? ", " : "", n < 0 ? -errno : 0);
		}
		int err = so_error(fd);
		int se = send(fd, "x", 1, MSG_NOSIGNAL) < 0 ? errno : 0;
		int b = socket(AF_INET, SOCK_STREAM, 0);
		int be = bind(b, (struct sockaddr *)&now, sizeof now) ? errno : 0;
		close(b);
		int ce = connect(fd, (struct sockaddr *)&lis, sizeof lis) ? errno : 0;
		out("check %d: name %s, peername errno %d, poll %#x, reads %s, SO_ERROR %d, "
		    "send errno %d, bind errno %d, connect errno %d\n",
		    fd, same, pe, p.revents, reads, err, se, be, ce);
	}
	out("check: done\n");
}

int main(int argc, char **argv)
{
	setup(argc > 1 ? argv[1] : "ended");
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
			if (!strcmp(line, "check"))
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
	return 0;
}
