/* udpecho PORT4 PORT6 [slow=MS] [notify=PORT]
 *
 * A UDP echo server on 127.0.0.1:PORT4 (SO_REUSEADDR) and [::1]:PORT6 (IPV6_V6ONLY,
 * SO_RCVBUF 70000). It takes datagrams alternately from the IPv4 and the IPv6 socket
 * (the client alternates too), answers each to its sender with
 * "echo N: DATA h=HASH" (HASH covers every datagram so far) and prints "msg N via
 * FAMILY: DATA". After a datagram starting with "slow" it sleeps MS milliseconds, so
 * that datagrams sent meanwhile wait in the socket's queue. A datagram "quit" ends it:
 * it answers "bye" and prints its socket options. With notify=PORT it also has a UDP
 * socket connected to 127.0.0.1:PORT, on which it sends "note N" (with send(2), so
 * only while connected) after each datagram. Ports are never printed. */
#include "util.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int getopt_int(int fd, int level, int opt)
{
	int v = 0;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, opt, &v, &l) != 0)
		die("getsockopt: %s", strerror(errno));
	return v;
}

static void setopt_int(int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof v) != 0)
		die("setsockopt: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: udpecho PORT4 PORT6 [slow=MS]");
	long p4 = arg_long(argc, argv, 1, 0);
	long p6 = arg_long(argc, argv, 2, 0);
	long slow = 300, notify = 0;
	for (int i = 3; i < argc; i++) {
		if (strncmp(argv[i], "slow=", 5) == 0)
			slow = strtol(argv[i] + 5, NULL, 10);
		else if (strncmp(argv[i], "notify=", 7) == 0)
			notify = strtol(argv[i] + 7, NULL, 10);
	}
	int sn = -1;
	if (notify) {
		struct sockaddr_in an = { .sin_family = AF_INET,
					  .sin_port = htons((uint16_t)notify) };
		an.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sn = socket(AF_INET, SOCK_DGRAM, 0);
		if (sn < 0 || connect(sn, (struct sockaddr *)&an, sizeof an) != 0)
			die("connect the notifier: %s", strerror(errno));
	}

	int s4 = socket(AF_INET, SOCK_DGRAM, 0);
	int s6 = socket(AF_INET6, SOCK_DGRAM, 0);
	if (s4 < 0 || s6 < 0)
		die("socket: %s", strerror(errno));
	setopt_int(s4, SOL_SOCKET, SO_REUSEADDR, 1);
	setopt_int(s6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	setopt_int(s6, SOL_SOCKET, SO_RCVBUF, 70000);
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p4) };
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)p6) };
	a6.sin6_addr = in6addr_loopback;
	if (bind(s4, (struct sockaddr *)&a4, sizeof a4) != 0 ||
	    bind(s6, (struct sockaddr *)&a6, sizeof a6) != 0)
		die("bind: %s", strerror(errno));
	out("ready\n");

	uint32_t h = FNV_INIT;
	for (long i = 0;; i++) {
		int fd = i % 2 ? s6 : s4;
		char buf[2048], reply[2200];
		struct sockaddr_storage from;
		socklen_t fl = sizeof from;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		if (n < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			die("recvfrom: %s", strerror(errno));
		}
		if (n == 4 && memcmp(buf, "quit", 4) == 0) {
			sendto(fd, "bye", 3, 0, (struct sockaddr *)&from, fl);
			break;
		}
		h = fnv(h, buf, (size_t)n);
		int r = snprintf(reply, sizeof reply, "echo %ld: %.*s h=%08x", i, (int)n, buf, h);
		if (sendto(fd, reply, (size_t)r, 0, (struct sockaddr *)&from, fl) != r)
			die("sendto: %s", strerror(errno));
		out("msg %ld via %s: %.*s\n", i, fd == s4 ? "IPv4" : "IPv6", (int)n, buf);
		if (sn >= 0) {
			char note[32];
			int k = snprintf(note, sizeof note, "note %ld", i);
			if (send(sn, note, (size_t)k, 0) != k)
				die("send a note: %s", strerror(errno));
		}
		if (n >= 4 && memcmp(buf, "slow", 4) == 0)
			sleep_ms(slow);
	}
	out("end: IPv4 reuseaddr %d; IPv6 v6only %d rcvbuf %d\n",
	    getopt_int(s4, SOL_SOCKET, SO_REUSEADDR), getopt_int(s6, IPPROTO_IPV6, IPV6_V6ONLY),
	    getopt_int(s6, SOL_SOCKET, SO_RCVBUF));
	return 0;
}
