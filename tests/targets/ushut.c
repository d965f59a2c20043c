/* ushut DIR NAME
 *
 * Unix sockets whose ends are shut down, named, accepted or autobound, in a tree of two
 * processes (parent P, child C); DIR is a short directory for socket files and NAME a
 * prefix for abstract names (both differ between runs and are never printed).
 *
 *  - a stream socketpair sp: P queues "to-child" on it and shuts its end for writing;
 *  - a seqpacket socketpair q: C shuts its end for reading;
 *  - a stream listener L bound to DIR/l.sock; C binds socket K to the abstract name
 *    NAME-k and connects it to L, P accepts it as A; K sends "from-k", A sends "from-a",
 *    and P shuts A for writing;
 *  - a seqpacket listener L2 bound to the abstract name NAME-l2; C connects K2
 *    (unnamed), P accepts it as A2;
 *  - a datagram socketpair d with SO_PASSCRED on P's end, which the kernel autobinds
 *    to a name @xxxxx when P sends "m1" on it (C remembers that name);
 *  - a datagram socket G bound to DIR/g.sock and shut for reading;
 *  - a connection from C's socket K3 waiting in L2's queue, not accepted yet;
 *  - a stream listener L3 bound to the abstract name NAME-l3, which accepted C's K4 as
 *    A4 and was closed: A4 shows the name, which no socket holds any more.
 *
 * Then P prints "ready" and both wait (P reads a line on stdin, then tells C through a
 * pipe). After that each prints what its sockets do now: names and peers (compared,
 * not printed), what reads and writes give (data, end of file, EPIPE), new connections
 * to L and L2, and K3's connection, which P accepts only now. C goes first, sends
 * "from-k3" on K3 and exits; P waits for it, prints its own and exits. */
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

static int xsocket(int type)
{
	int s = socket(AF_UNIX, type, 0);
	if (s < 0)
		die("socket: %s", strerror(errno));
	return s;
}

static void xbind(int s, const struct sockaddr_un *sa, socklen_t l)
{
	if (bind(s, (const struct sockaddr *)sa, l) != 0)
		die("bind: %s", strerror(errno));
}

/* Whether the name (getsockname, or getpeername with peer) of s is exactly sa/l. */
static const char *name_is(int s, int peer, const struct sockaddr_un *sa, socklen_t l)
{
	struct sockaddr_un got;
	socklen_t gl = sizeof got;
	memset(&got, 0, sizeof got);
	int r = peer ? getpeername(s, (struct sockaddr *)&got, &gl)
		     : getsockname(s, (struct sockaddr *)&got, &gl);
	if (r != 0)
		return strerror(errno);
	if (sa == NULL)
		return gl <= offsetof(struct sockaddr_un, sun_path) ? "unnamed (right)"
								      : "named (WRONG)";
	/* A path may come back with its terminating NUL counted. */
	if (gl == l + 1 && sa->sun_path[0] != 0 && ((char *)&got)[l] == 0)
		gl = l;
	return gl == l && memcmp(&got, sa, l) == 0 ? "right" : "WRONG";
}

/* What a read of up to 64 bytes gives: the data, "end of file" or the error. */
static const char *try_recv(int s, int flags, char *buf)
{
	ssize_t n = recv(s, buf, 63, flags);
	if (n < 0)
		return strerror(errno);
	if (n == 0)
		return "end of file";
	buf[n] = 0;
	return buf;
}

static const char *try_send(int s, const char *what)
{
	ssize_t n = send(s, what, strlen(what), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return strerror(errno);
	return n == (ssize_t)strlen(what) ? "sent" : "short";
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ushut DIR NAME");
	const char *dir = argv[1], *name = argv[2];
	char lpath[200], gpath[200], kname[200], l2name[200];
	snprintf(lpath, sizeof lpath, "%s/l.sock", dir);
	snprintf(gpath, sizeof gpath, "%s/g.sock", dir);
	snprintf(kname, sizeof kname, "%s-k", name);
	snprintf(l2name, sizeof l2name, "%s-l2", name);
	unlink(lpath);
	unlink(gpath);
	char l3name[200];
	snprintf(l3name, sizeof l3name, "%s-l3", name);
	struct sockaddr_un sa_l, sa_g, sa_k, sa_l2, sa_auto, sa_l3;
	socklen_t l_l3 = addr_of(&sa_l3, l3name, 1);
	socklen_t l_l = addr_of(&sa_l, lpath, 0), l_g = addr_of(&sa_g, gpath, 0);
	socklen_t l_k = addr_of(&sa_k, kname, 1), l_l2 = addr_of(&sa_l2, l2name, 1);

	int sp[2], q[2], d[2], go[2], rdy[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, d) || pipe(go) || pipe(rdy))
		die("socketpair/pipe: %s", strerror(errno));
	int L = xsocket(SOCK_STREAM), L2 = xsocket(SOCK_SEQPACKET), G = xsocket(SOCK_DGRAM);
	int L3 = xsocket(SOCK_STREAM);
	xbind(L3, &sa_l3, l_l3);
	if (listen(L3, 1))
		die("listen L3: %s", strerror(errno));
	xbind(L, &sa_l, l_l);
	xbind(L2, &sa_l2, l_l2);
	xbind(G, &sa_g, l_g);
	if (listen(L, 4) || listen(L2, 4))
		die("listen: %s", strerror(errno));
	int one = 1;
	if (setsockopt(d[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one))
		die("SO_PASSCRED: %s", strerror(errno));
	if (send(d[0], "m1", 2, 0) != 2)
		die("send m1: %s", strerror(errno));
	socklen_t l_auto = sizeof sa_auto;
	if (getsockname(d[0], (struct sockaddr *)&sa_auto, &l_auto) ||
	    l_auto != offsetof(struct sockaddr_un, sun_path) + 6)
		die("d[0] was not autobound");
	if (write(sp[0], "to-child", 8) != 8 || shutdown(sp[0], SHUT_WR))
		die("sp: %s", strerror(errno));
	if (shutdown(G, SHUT_RD))
		die("shutdown G: %s", strerror(errno));

	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	char buf[64];
	if (child == 0) {
		close(sp[0]);
		close(q[0]);
		close(d[0]);
		close(L);
		close(L2);
		close(G);
		close(L3);
		close(go[1]);
		close(rdy[0]);
		if (shutdown(q[1], SHUT_RD))
			die("shutdown q: %s", strerror(errno));
		int K = xsocket(SOCK_STREAM), K2 = xsocket(SOCK_SEQPACKET);
		xbind(K, &sa_k, l_k);
		if (connect(K, (struct sockaddr *)&sa_l, l_l) ||
		    connect(K2, (struct sockaddr *)&sa_l2, l_l2))
			die("connect: %s", strerror(errno));
		if (write(K, "from-k", 6) != 6)
			die("write K: %s", strerror(errno));
		int K4 = xsocket(SOCK_STREAM);
		if (connect(K4, (struct sockaddr *)&sa_l3, l_l3))
			die("connect K4: %s", strerror(errno));
		/* Queued behind K2 in L2's queue: P accepts K2 only. */
		int K3 = xsocket(SOCK_SEQPACKET);
		if (connect(K3, (struct sockaddr *)&sa_l2, l_l2))
			die("connect K3: %s", strerror(errno));
		if (write(rdy[1], "r", 1) != 1)
			die("rdy: %s", strerror(errno));
		/* until P says go */
		char c;
		if (read(go[0], &c, 1) != 1)
			die("go: %s", strerror(errno));
		out("C: K's name %s, K's peer %s\n", name_is(K, 0, &sa_k, l_k),
		    name_is(K, 1, &sa_l, l_l));
		out("C: K reads [%s]\n", try_recv(K, 0, buf));
		out("C: K reads again [%s]\n", try_recv(K, 0, buf));
		out("C: K sends: %s\n", try_send(K, "after"));
		out("C: K2's name %s, K2's peer %s\n", name_is(K2, 0, NULL, 0),
		    name_is(K2, 1, &sa_l2, l_l2));
		out("C: sp reads [%s]\n", try_recv(sp[1], 0, buf));
		out("C: sp reads again [%s]\n", try_recv(sp[1], 0, buf));
		out("C: sp sends: %s\n", try_send(sp[1], "up"));
		out("C: q reads [%s]\n", try_recv(q[1], MSG_DONTWAIT, buf));
		out("C: q sends: %s\n", try_send(q[1], "x"));
		struct sockaddr_un from;
		socklen_t fl = sizeof from;
		ssize_t n = recvfrom(d[1], buf, 63, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0)
			out("C: d reads nothing: %s\n", strerror(errno));
		else
			out("C: d reads [%.*s] from %s\n", (int)n, buf,
			    fl == l_auto && memcmp(&from, &sa_auto, fl) == 0 ? "P's autobound name"
									       : "ANOTHER name");
		out("C: d's peer %s\n", name_is(d[1], 1, &sa_auto, l_auto));
		out("C: K3's peer %s, K3 sends: %s\n", name_is(K3, 1, &sa_l2, l_l2),
		    try_send(K3, "from-k3"));
		_exit(0);
	}
	close(sp[1]);
	close(q[1]);
	close(d[1]);
	close(go[0]);
	close(rdy[1]);
	int A = accept(L, NULL, NULL), A2 = accept(L2, NULL, NULL);
	if (A < 0 || A2 < 0)
		die("accept: %s", strerror(errno));
	if (write(A, "from-a", 6) != 6 || shutdown(A, SHUT_WR))
		die("A: %s", strerror(errno));
	if (read(rdy[0], buf, 1) != 1)
		die("rdy: %s", strerror(errno));
	int A4 = accept(L3, NULL, NULL);
	if (A4 < 0 || close(L3))
		die("accept K4: %s", strerror(errno));
	out("ready\n");
	if (read(0, buf, sizeof buf) <= 0)
		die("stdin: %s", strerror(errno));
	if (write(go[1], "g", 1) != 1)
		die("go: %s", strerror(errno));
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("C exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	out("P: A's name %s, A's peer %s\n", name_is(A, 0, &sa_l, l_l), name_is(A, 1, &sa_k, l_k));
	out("P: A reads [%s]\n", try_recv(A, MSG_WAITALL, buf));
	out("P: A sends: %s\n", try_send(A, "more"));
	out("P: A2's name %s, A2's peer %s\n", name_is(A2, 0, &sa_l2, l_l2),
	    name_is(A2, 1, NULL, 0));
	out("P: sp sends: %s\n", try_send(sp[0], "late"));
	out("P: sp reads [%s]\n", try_recv(sp[0], 0, buf));
	out("P: q sends: %s\n", try_send(q[0], "y"));
	out("P: q reads [%s]\n", try_recv(q[0], MSG_DONTWAIT, buf));
	out("P: d's name %s\n", name_is(d[0], 0, &sa_auto, l_auto));
	int U = xsocket(SOCK_DGRAM);
	ssize_t n = sendto(U, "g", 1, MSG_DONTWAIT, (struct sockaddr *)&sa_g, l_g);
	out("P: a message to G: %s\n", n < 0 ? strerror(errno) : "sent");
	out("P: A4's name %s\n", name_is(A4, 0, &sa_l3, l_l3));
	int B = xsocket(SOCK_STREAM);
	out("P: a new socket binds NAME-l3: %s\n",
	    bind(B, (struct sockaddr *)&sa_l3, l_l3) ? strerror(errno) : "yes");
	int a3 = accept(L2, NULL, NULL);
	if (a3 < 0)
		die("accept K3: %s", strerror(errno));
	out("P: L2's waiting client, named %s, says [%s]\n", name_is(a3, 0, &sa_l2, l_l2),
	    try_recv(a3, 0, buf));
	/* New clients of both listeners. */
	int c1 = xsocket(SOCK_STREAM), c2 = xsocket(SOCK_SEQPACKET);
	int r1 = connect(c1, (struct sockaddr *)&sa_l, l_l);
	int r2 = connect(c2, (struct sockaddr *)&sa_l2, l_l2);
	out("P: new clients connect: %s, %s\n", r1 ? strerror(errno) : "yes",
	    r2 ? strerror(errno) : "yes");
	int a1 = accept(L, NULL, NULL), a2 = accept(L2, NULL, NULL);
	if (a1 < 0 || a2 < 0)
		die("accept new: %s", strerror(errno));
	out("P: accepted, named %s and %s\n", name_is(a1, 0, &sa_l, l_l),
	    name_is(a2, 0, &sa_l2, l_l2));
	unlink(lpath);
	unlink(gpath);
	return 0;
}
