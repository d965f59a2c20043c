/* dgname STEPS AHEAD DIR ABSTRACT [sleep=MS]
 *
 * Named unix datagram sockets and a seqpacket listener inside a process tree. Parent P
 * binds datagram socket S to DIR/s.sock and S2 to DIR/s2.sock, and makes a seqpacket
 * listener bound to the abstract name "ABSTRACT-l"; it also has an unnamed, unconnected
 * datagram socket U. Child C binds datagram socket D to the abstract name "ABSTRACT-d"
 * and connects it to S, and connects seqpacket socket K to the listener, which P
 * accepts as A. Then, every step (after AHEAD messages sent ahead on each path):
 *   - C sends a message on D (to S) and a record on K (to A), both carrying a hash of
 *     every reply C got so far;
 *   - P sends a message from U to S2 and reads one from S2; reads one message from S
 *     (printing it and whether its sender has a name), one record from A, and replies
 *     to C's name from S and on A (AHEAD replies ahead too, and none in the last AHEAD
 *     steps); C reads one reply of each kind per step.
 * So messages from a named sender, from an unnamed one, replies to a connected socket,
 * and seqpacket records both ways are queued all the time. P prints everything it gets:
 * a lost, merged, reordered or misattributed message changes the output. Neither the
 * directory nor the names are printed. */
#include "util.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t addr_of(struct sockaddr_un *sa, const char *name, int abstract)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	size_t len = strlen(name);
	if (len + 2 > sizeof sa->sun_path)
		die("socket name too long: %s", name);
	memcpy(sa->sun_path + (abstract ? 1 : 0), name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 1 : 0));
}

static int sock_bound(int type, const char *name, int abstract)
{
	int s = socket(AF_UNIX, type, 0);
	if (s < 0)
		die("socket: %s", strerror(errno));
	if (name) {
		struct sockaddr_un sa;
		socklen_t l = addr_of(&sa, name, abstract);
		if (bind(s, (struct sockaddr *)&sa, l) != 0)
			die("bind: %s", strerror(errno));
	}
	return s;
}

static void xsendto(int fd, const char *buf, size_t len, const struct sockaddr_un *to,
		    socklen_t tl)
{
	for (;;) {
		ssize_t n = sendto(fd, buf, len, 0, (const struct sockaddr *)to, to ? tl : 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)len)
			die("sendto: %s", n < 0 ? strerror(errno) : "short");
		return;
	}
}

static ssize_t xrecv(int fd, char *buf, size_t cap, struct sockaddr_un *from, socklen_t *fl)
{
	for (;;) {
		ssize_t n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)from, fl);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("recv: %s", strerror(errno));
		return n;
	}
}

static size_t msg(char *buf, const char *what, long step, uint32_t h)
{
	int n = snprintf(buf, 128, "%s %ld h%08x ", what, step, h);
	size_t fill = (size_t)((step % 13 + 13) % 13);
	memset(buf + n, '+', fill);
	return (size_t)n + fill;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		die("usage: dgname STEPS AHEAD DIR ABSTRACT [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 50);
	long ahead = arg_long(argc, argv, 2, 3);
	const char *dir = argv[3];
	const char *abs = argv[4];
	long ms = 10;
	if (argc > 5 && strncmp(argv[5], "sleep=", 6) == 0)
		ms = strtol(argv[5] + 6, NULL, 10);
	char spath[200], s2path[200], dname[200], lname[200];
	snprintf(spath, sizeof spath, "%s/s.sock", dir);
	snprintf(s2path, sizeof s2path, "%s/s2.sock", dir);
	snprintf(dname, sizeof dname, "%s-d", abs);
	snprintf(lname, sizeof lname, "%s-l", abs);
	unlink(spath);
	unlink(s2path);

	int S = sock_bound(SOCK_DGRAM, spath, 0);
	int S2 = sock_bound(SOCK_DGRAM, s2path, 0);
	int U = sock_bound(SOCK_DGRAM, NULL, 0);
	int L = sock_bound(SOCK_SEQPACKET, lname, 1);
	if (listen(L, 2) != 0)
		die("listen: %s", strerror(errno));
	struct sockaddr_un sa_s, sa_s2, sa_d, sa_l;
	socklen_t l_s = addr_of(&sa_s, spath, 0), l_s2 = addr_of(&sa_s2, s2path, 0);
	socklen_t l_d = addr_of(&sa_d, dname, 1), l_l = addr_of(&sa_l, lname, 1);
	out("sockets made; %ld messages ahead on each path\n", ahead);

	char buf[256], m[128];
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(S);
		close(S2);
		close(U);
		close(L);
		int D = sock_bound(SOCK_DGRAM, dname, 1);
		if (connect(D, (struct sockaddr *)&sa_s, l_s) != 0)
			die("connect D: %s", strerror(errno));
		int K = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		if (K < 0 || connect(K, (struct sockaddr *)&sa_l, l_l) != 0)
			die("connect K: %s", strerror(errno));
		uint32_t h = FNV_INIT;
		for (long i = 0; i < ahead; i++) {
			xsendto(D, m, msg(m, "d", -i, h), NULL, 0);
			xsendto(K, m, msg(m, "k", -i, h), NULL, 0);
		}
		for (long s = 1; s <= steps; s++) {
			for (int k = 0; k < 2; k++) {
				ssize_t n = xrecv(k ? K : D, buf, sizeof buf, NULL, NULL);
				h = fnv(h, &n, sizeof n);
				h = fnv(h, buf, (size_t)n);
			}
			sleep_ms(ms);
			if (s > steps - ahead)
				continue;
			xsendto(D, m, msg(m, "d", s, h), NULL, 0);
			xsendto(K, m, msg(m, "k", s, h), NULL, 0);
		}
		_exit(0);
	}
	int A = accept(L, NULL, NULL);
	if (A < 0)
		die("accept: %s", strerror(errno));
	for (long i = 0; i < ahead; i++) {
		xsendto(U, m, msg(m, "u", -i, 0), &sa_s2, l_s2);
		xsendto(S, m, msg(m, "reply", -i, 0), &sa_d, l_d);
		xsendto(A, m, msg(m, "areply", -i, 0), NULL, 0);
	}
	for (long s = 1; s <= steps; s++) {
		struct sockaddr_un from;
		socklen_t fl = sizeof from;
		char got[3][256];
		ssize_t n[3];
		n[0] = xrecv(S, got[0], sizeof got[0], &from, &fl);
		int named = fl > offsetof(struct sockaddr_un, sun_path) &&
			    fl == l_d && memcmp(&from, &sa_d, l_d) == 0;
		n[1] = xrecv(A, got[1], sizeof got[1], NULL, NULL);
		fl = sizeof from;
		n[2] = xrecv(S2, got[2], sizeof got[2], &from, &fl);
		int unnamed = fl <= offsetof(struct sockaddr_un, sun_path);
		out("step %ld: S got [%zd] %.*s from %s | A got [%zd] %.*s | S2 got [%zd] %.*s from %s\n",
		    s, n[0], (int)n[0], got[0], named ? "C's name" : "someone else", n[1],
		    (int)n[1], got[1], n[2], (int)n[2], got[2], unnamed ? "no name" : "a name");
		sleep_ms(ms);
		xsendto(U, m, msg(m, "u", s, 0), &sa_s2, l_s2);
		/* C reads exactly STEPS replies on D and on K, then exits. */
		if (s > steps - ahead)
			continue;
		xsendto(S, m, msg(m, "reply", s, 0), &sa_d, l_d);
		xsendto(A, m, msg(m, "areply", s, 0), NULL, 0);
	}
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("child exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	unlink(spath);
	unlink(s2path);
	return 0;
}
