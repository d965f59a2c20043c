/* dgsock STEPS AHEAD [sleep=MS]
 *
 * Unix datagram and seqpacket socket pairs inside a process tree, with messages queued
 * in both directions. Before forking, the parent makes a SOCK_DGRAM and a
 * SOCK_SEQPACKET socketpair and sets options on them (SO_SNDBUF on its datagram end,
 * SO_RCVBUF on the child's, SO_PASSCRED on its seqpacket end). Parent P and child C then
 * exchange messages of varying lengths on both pairs: each first sends AHEAD messages on
 * each pair without reading, then, every step, reads one message from each pair, sleeps
 * and sends one more on each (P stops sending AHEAD steps before the end, so that C
 * gets exactly STEPS messages on each pair). So about AHEAD messages are queued in each direction on
 * each pair all the time. C mixes every message it gets (bytes and length) into a
 * running hash that it puts into its own messages; P prints every message it gets with
 * its length: a lost, merged, split, repeated or reordered message changes the output.
 *
 * At the end C checks that its options are still what they were before the fork and
 * exits with 0 (or 3), and P prints its own options and C's exit status. */
#include "util.h"
#include <sys/socket.h>
#include <sys/wait.h>

static size_t make_msg(char *buf, char who, long step, uint32_t h, int kind)
{
	int n = snprintf(buf, 128, "%c%c%ld:h%08x:", who, kind ? 's' : 'd', step, h);
	if (n < 0)
		die("snprintf");
	size_t fill = (size_t)(((step % 41 + 41) * 7 + kind * 3) % 41);
	memset(buf + n, 'a' + (int)((step % 26 + 26) % 26), fill);
	return (size_t)n + fill;
}

static void send_msg(int fd, const char *buf, size_t len)
{
	for (;;) {
		ssize_t n = send(fd, buf, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)len)
			die("send: %s", n < 0 ? strerror(errno) : "short");
		return;
	}
}

static ssize_t recv_msg(int fd, char *buf, size_t cap)
{
	for (;;) {
		ssize_t n = recv(fd, buf, cap, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("recv: %s", strerror(errno));
		return n;
	}
}

static int getopt_int(int fd, int opt)
{
	int v = 0;
	socklen_t l = sizeof v;
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) != 0)
		die("getsockopt: %s", strerror(errno));
	return v;
}

static void setopt_int(int fd, int opt, int v)
{
	if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) != 0)
		die("setsockopt: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: dgsock STEPS AHEAD [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 100);
	long ahead = arg_long(argc, argv, 2, 5);
	long ms = 10;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);

	int d[2], q[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, d) != 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q) != 0)
		die("socketpair: %s", strerror(errno));
	setopt_int(d[0], SO_SNDBUF, 50000);
	setopt_int(d[1], SO_RCVBUF, 60000);
	setopt_int(q[0], SO_PASSCRED, 1);
	int c_rcvbuf = getopt_int(d[1], SO_RCVBUF);
	out("pairs made; %ld messages ahead each way on each\n", ahead);

	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	char buf[512], msg[128];
	if (child == 0) {
		close(d[0]);
		close(q[0]);
		uint32_t h = FNV_INIT;
		for (long i = 0; i < ahead; i++) {
			send_msg(d[1], msg, make_msg(msg, 'c', -i, h, 0));
			send_msg(q[1], msg, make_msg(msg, 'c', -i, h, 1));
		}
		for (long s = 1; s <= steps; s++) {
			for (int k = 0; k < 2; k++) {
				ssize_t n = recv_msg(k ? q[1] : d[1], buf, sizeof buf);
				h = fnv(h, &n, sizeof n);
				h = fnv(h, buf, (size_t)n);
			}
			sleep_ms(ms);
			send_msg(d[1], msg, make_msg(msg, 'c', s, h, 0));
			send_msg(q[1], msg, make_msg(msg, 'c', s, h, 1));
		}
		_exit(getopt_int(d[1], SO_RCVBUF) == c_rcvbuf ? 0 : 3);
	}
	close(d[1]);
	close(q[1]);
	for (long i = 0; i < ahead; i++) {
		send_msg(d[0], msg, make_msg(msg, 'p', -i, 0, 0));
		send_msg(q[0], msg, make_msg(msg, 'p', -i, 0, 1));
	}
	for (long s = 1; s <= steps; s++) {
		char got[2][512];
		ssize_t n[2];
		for (int k = 0; k < 2; k++)
			n[k] = recv_msg(k ? q[0] : d[0], got[k], sizeof got[k]);
		out("step %ld: dgram [%zd] %.*s | seqpacket [%zd] %.*s\n", s, n[0], (int)n[0],
		    got[0], n[1], (int)n[1], got[1]);
		sleep_ms(ms);
		/* C reads exactly STEPS messages from each pair, then exits. */
		if (s > steps - ahead)
			continue;
		send_msg(d[0], msg, make_msg(msg, 'p', s, 0, 0));
		send_msg(q[0], msg, make_msg(msg, 'p', s, 0, 1));
	}
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("end: sndbuf %d, passcred %d; child exited with %d\n", getopt_int(d[0], SO_SNDBUF),
	    getopt_int(q[0], SO_PASSCRED), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
