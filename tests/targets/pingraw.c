/* ICMP ping sockets and raw IP sockets: an IPv4 ping socket bound to 127.0.0.1 (its
 * identifier chosen by the kernel) and connected there, with IP_TTL and IP_RECVERR set;
 * an IPv6 ping socket never bound; a raw ICMP socket whose ICMP_FILTER lets only echo
 * replies through; a raw IPv6 socket of protocol 253 bound to ::1 and connected there;
 * a raw ICMPv6 socket whose ICMP6_FILTER lets only echo replies through.
 * (Ping sockets need net.ipv4.ping_group_range to hold the group.)
 *
 * It prints "ready" once set up. On "report" it prints the options and whether each
 * address is the same as at setup. On "check" it pings 127.0.0.1 through the ping
 * socket (and ::1 through the IPv6 one), reads the first packet the raw ICMP socket
 * got, and sends itself a packet through the raw IPv6 socket. On "exit" or end of file
 * it exits 0. With the argument "queued", the ping socket has a reply waiting; with
 * "filtered", a socket filter attached (dump refuses either). */
#include "util.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef ICMP_FILTER
#define ICMP_FILTER 1 /* linux/icmp.h */
#endif

static int ping4, ping6, rawicmp, raw6, rawicmp6;
static struct sockaddr_storage addr_of[16];

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

static int geti(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt %d/%d: %s", level, name, strerror(errno));
}

static void ping(int fd, int v6, unsigned short seq)
{
	struct icmphdr h = { .type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO };
	h.un.echo.sequence = htons(seq);
	if (v6) {
		struct sockaddr_in6 to = { .sin6_family = AF_INET6 };
		inet_pton(AF_INET6, "::1", &to.sin6_addr);
		if (sendto(fd, &h, sizeof h, 0, (struct sockaddr *)&to, sizeof to) != (ssize_t)sizeof h)
			die("ping6: %s", strerror(errno));
	} else if (send(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
		die("ping: %s", strerror(errno));
	}
}

static void setup(int queued, int filtered)
{
	ping4 = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	if (ping4 < 0)
		die("ping socket: %s", strerror(errno));
	struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(ping4, (struct sockaddr *)&lo, sizeof lo) ||
	    connect(ping4, (struct sockaddr *)&lo, sizeof lo))
		die("ping bind/connect: %s", strerror(errno));
	seti(ping4, IPPROTO_IP, IP_TTL, 33);
	seti(ping4, IPPROTO_IP, IP_RECVERR, 1);
	remember(ping4);

	ping6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6);
	if (ping6 < 0)
		die("ping6 socket: %s", strerror(errno));
	remember(ping6);

	rawicmp = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	unsigned filter = ~(1u << ICMP_ECHOREPLY);
	if (rawicmp < 0 || setsockopt(rawicmp, SOL_RAW, ICMP_FILTER, &filter, sizeof filter))
		die("raw icmp: %s", strerror(errno));

	raw6 = socket(AF_INET6, SOCK_RAW, 253);
	struct sockaddr_in6 lo6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "::1", &lo6.sin6_addr);
	if (raw6 < 0 || bind(raw6, (struct sockaddr *)&lo6, sizeof lo6) ||
	    connect(raw6, (struct sockaddr *)&lo6, sizeof lo6))
		die("raw6: %s", strerror(errno));
	remember(raw6);
	/* a raw ICMPv6 socket whose ICMP6_FILTER passes only echo replies */
	rawicmp6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
	struct icmp6_filter f6;
	ICMP6_FILTER_SETBLOCKALL(&f6);
	ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
	if (rawicmp6 < 0 || setsockopt(rawicmp6, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof f6))
		die("raw icmp6: %s", strerror(errno));
	if (filtered) {
		struct sock_filter all[] = { BPF_STMT(BPF_RET | BPF_K, 0xffff) };
		struct sock_fprog prog = { 1, all };
		if (setsockopt(ping4, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog))
			die("SO_ATTACH_FILTER: %s", strerror(errno));
	}
	if (queued) {
		ping(ping4, 0, 9);
		usleep(100000);
	}
}

static void report(void)
{
	unsigned filter = 0;
	socklen_t l = sizeof filter;
	getsockopt(rawicmp, SOL_RAW, ICMP_FILTER, &filter, &l);
	out("report: ping4 addr=%s ttl=%d recverr=%d; ping6 addr=%s; rawicmp filter=%#x; raw6 "
	    "addr=%s\n",
	    same_addr(ping4), geti(ping4, IPPROTO_IP, IP_TTL), geti(ping4, IPPROTO_IP, IP_RECVERR),
	    same_addr(ping6), filter, same_addr(raw6));
	struct icmp6_filter f6;
	l = sizeof f6;
	memset(&f6, 0, sizeof f6);
	getsockopt(rawicmp6, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, &l);
	out("report: rawicmp6 passes echo reply=%d echo request=%d\n",
	    ICMP6_FILTER_WILLPASS(ICMP6_ECHO_REPLY, &f6),
	    ICMP6_FILTER_WILLPASS(ICMP6_ECHO_REQUEST, &f6));
}

static int wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 5000) == 1;
}

static void check(void)
{
	ping(ping4, 0, 1);
	struct icmphdr r = { 0 };
	struct sockaddr_in *own = (struct sockaddr_in *)&addr_of[ping4];
	if (!wait_in(ping4) || recv(ping4, &r, sizeof r, 0) != (ssize_t)sizeof r)
		die("no echo reply");
	out("check: ping4 reply type=%d seq=%d id=%s\n", r.type, ntohs(r.un.echo.sequence),
	    r.un.echo.id == own->sin_port ? "same" : "other");
	char pkt[256];
	ssize_t n = wait_in(rawicmp) ? recv(rawicmp, pkt, sizeof pkt, 0) : -1;
	if (n >= (ssize_t)(sizeof(struct iphdr) + sizeof r)) {
		struct iphdr *ip = (struct iphdr *)pkt;
		struct icmphdr *ic = (struct icmphdr *)(pkt + ip->ihl * 4);
		out("check: rawicmp first type=%d seq=%d\n", ic->type, ntohs(ic->un.echo.sequence));
	} else {
		out("check: rawicmp nothing\n");
	}
	ping(ping6, 1, 2);
	if (!wait_in(ping6) || recv(ping6, &r, sizeof r, 0) != (ssize_t)sizeof r)
		die("no echo6 reply");
	out("check: ping6 reply type=%d seq=%d\n", r.type, ntohs(r.un.echo.sequence));
	if (send(raw6, "hello", 5, 0) != 5)
		die("raw6 send");
	char buf[16] = { 0 };
	n = wait_in(raw6) ? recv(raw6, buf, sizeof buf - 1, 0) : -1;
	out("check: raw6 got %zd %s\n", n, buf);
	out("check: done\n");
}

int main(int argc, char **argv)
{
	setup(argc > 1 && !strcmp(argv[1], "queued"), argc > 1 && !strcmp(argv[1], "filtered"));
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
			if (!strcmp(line, "report"))
				report();
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
	return 0;
}
