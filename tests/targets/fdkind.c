/* fdkind: holds one file descriptor of a given kind and counts.
 *
 * usage: fdkind KIND STEPS [sleep=MS]
 * KIND: pipe | socketpair | inotify | eventfd | timerfd | signalfd | epoll | memfd | pidfd |
 *       netlink (a bound NETLINK_ROUTE socket) | packet (an AF_PACKET socket in a fanout
 *       group; needs root)
 *
 * Used to check that `ckpt dump` refuses, with a message naming the fd and its kind, a
 * process holding an fd of a kind it does not support yet, and leaves it running as
 * before. */
#include "util.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: fdkind KIND STEPS [sleep=MS]");
	const char *kind = argv[1];
	long steps = arg_long(argc, argv, 2, 0);
	long sleep_each = 20;
	if (argc > 3) {
		if (strncmp(argv[3], "sleep=", 6))
			die("unknown option %s", argv[3]);
		sleep_each = strtol(argv[3] + 6, NULL, 0);
	}
	int fds[2] = { -1, -1 };
	if (!strcmp(kind, "pipe")) {
		if (pipe(fds))
			die("pipe: %s", strerror(errno));
	} else if (!strcmp(kind, "socketpair")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
			die("socketpair: %s", strerror(errno));
	} else if (!strcmp(kind, "inotify")) {
		fds[0] = inotify_init1(0);
		if (fds[0] >= 0 && inotify_add_watch(fds[0], "/", IN_CREATE) < 0)
			die("inotify_add_watch: %s", strerror(errno));
	} else if (!strcmp(kind, "eventfd")) {
		fds[0] = eventfd(5, 0);
	} else if (!strcmp(kind, "timerfd")) {
		fds[0] = timerfd_create(CLOCK_MONOTONIC, 0);
	} else if (!strcmp(kind, "signalfd")) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR1);
		fds[0] = signalfd(-1, &s, 0);
	} else if (!strcmp(kind, "epoll")) {
		fds[0] = epoll_create1(0);
	} else if (!strcmp(kind, "memfd")) {
		fds[0] = memfd_create("ckpt-test", 0);
	} else if (!strcmp(kind, "pidfd")) {
		fds[0] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	} else if (!strcmp(kind, "netlink")) {
		fds[0] = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
		struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
		if (fds[0] >= 0 && bind(fds[0], (struct sockaddr *)&nl, sizeof nl))
			die("bind netlink: %s", strerror(errno));
	} else if (!strcmp(kind, "packet")) {
		/* A packet socket in a fanout group (restore does not make groups); its
		 * protocol, 0x88b7 (local experimental), sees no traffic. */
		fds[0] = socket(AF_PACKET, SOCK_DGRAM, htons(0x88b7));
		int fanout = 5 | (PACKET_FANOUT_HASH << 16);
		if (fds[0] >= 0 &&
		    setsockopt(fds[0], SOL_PACKET, PACKET_FANOUT, &fanout, sizeof fanout))
			die("PACKET_FANOUT: %s", strerror(errno));
	} else {
		die("unknown kind %s", kind);
	}
	if (fds[0] < 0)
		die("%s: %s", kind, strerror(errno));
	if (fds[1] >= 0)
		out("holding %s as fds %d and %d\n", kind, fds[0], fds[1]);
	else
		out("holding %s as fd %d\n", kind, fds[0]);
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
