/* ubacklog TYPE DIR [STEPS]
 *
 * A unix listener (fd 3, TYPE "stream" or "seqpacket", SO_PASSCRED) bound to DIR/b.sock
 * with four connections waiting to be accepted, each from a child process of its own
 * (the clients, connected one after the other): client 0 sent "a", client 1 sent
 * "hello" then 200 bytes, client 2 sent nothing, client 3 sent 3000 bytes. What they
 * sent waits on the listener's side of each connection, which only accept reaches.
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then accepts the four
 * connections and, for each in the order accept gives them, prints what it reads
 * (messages or bytes with a checksum, and which client the credentials name), replies
 * "bye", and waits for that client, which prints the reply and exits. */
#include "util.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define CLIENTS 4

static int type;

/* The messages client i sends (NULL-terminated list of lengths; bytes made by fill). */
static const size_t sizes[CLIENTS][3] = { { 1, 0 }, { 5, 200, 0 }, { 0 }, { 3000, 0 } };

static void fill(char *b, size_t n, int client, int msg)
{
	if (client == 0) {
		b[0] = 'a';
		return;
	}
	if (client == 1 && msg == 0) {
		memcpy(b, "hello", 5);
		return;
	}
	for (size_t i = 0; i < n; i++)
		b[i] = (char)('a' + (i * 7 + (size_t)client + (size_t)msg) % 26);
}

static void client(int i, struct sockaddr_un *sa, int ready)
{
	int c = socket(AF_UNIX, type, 0);
	if (c < 0 || connect(c, (struct sockaddr *)sa, sizeof *sa))
		die("client %d: connect: %s", i, strerror(errno));
	static char b[4096];
	for (int m = 0; sizes[i][m]; m++) {
		fill(b, sizes[i][m], i, m);
		if (write(c, b, sizes[i][m]) != (ssize_t)sizes[i][m])
			die("client %d: write: %s", i, strerror(errno));
	}
	if (write(ready, "x", 1) != 1)
		die("client %d: ready", i);
	close(ready);
	char r[16] = { 0 };
	ssize_t n = read(c, r, sizeof r - 1);
	out("client %d: the server replied [%s]\n", i, n < 0 ? strerror(errno) : r);
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ubacklog TYPE DIR [STEPS]");
	type = !strcmp(argv[1], "seqpacket") ? SOCK_SEQPACKET : SOCK_STREAM;
	long steps = arg_long(argc, argv, 3, 60);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/b.sock", argv[2]);
	unlink(sa.sun_path);
	int on = 1;
	int L = socket(AF_UNIX, type, 0);
	if (L != 3 || setsockopt(L, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) ||
	    bind(L, (struct sockaddr *)&sa, sizeof sa) || listen(L, 8))
		die("listen: %s", strerror(errno));
	pid_t kids[CLIENTS];
	for (int i = 0; i < CLIENTS; i++) {
		int p[2];
		if (pipe(p))
			die("pipe");
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			close(p[0]);
			close(L);
			client(i, &sa, p[1]);
		}
		close(p[1]);
		char x;
		if (read(p[0], &x, 1) != 1)
			die("client %d did not connect", i);
		close(p[0]);
	}
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	for (int k = 0; k < CLIENTS; k++) {
		int a = accept(L, NULL, NULL);
		if (a < 0)
			die("accept: %s", strerror(errno));
		/* Everything the client sent is there already. */
		int who = -1;
		size_t total = 0, msgs = 0;
		uint32_t h = FNV_INIT;
		static char b[8192];
		for (;;) {
			struct iovec iov = { b, sizeof b };
			union {
				struct cmsghdr c;
				char buf[CMSG_SPACE(sizeof(struct ucred))];
			} u;
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
					     .msg_control = u.buf, .msg_controllen = sizeof u.buf };
			ssize_t n = recvmsg(a, &mh, MSG_DONTWAIT);
			if (n <= 0)
				break;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			if (c && c->cmsg_type == SCM_CREDENTIALS) {
				struct ucred cr;
				memcpy(&cr, CMSG_DATA(c), sizeof cr);
				for (int i = 0; i < CLIENTS; i++)
					if (kids[i] == cr.pid)
						who = i;
				if (type == SOCK_SEQPACKET || msgs == 0)
					out("  connection %d: from pid of client %d, uid %u gid %u\n", k,
					    who, cr.uid, cr.gid);
			}
			if (type == SOCK_SEQPACKET)
				out("  connection %d: message %zu of %zd bytes [%.5s]\n", k, msgs,
				    n, b);
			h = fnv(h, b, (size_t)n);
			total += (size_t)n;
			msgs++;
		}
		out("connection %d: %zu bytes, fnv %08x\n", k, total, h);
		if (write(a, "bye", 3) != 3)
			die("reply: %s", strerror(errno));
		int i = who;
		if (i < 0) {
			/* The silent client: the one not named yet, in connect order. */
			i = k;
		}
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st))
			die("client %d did not finish", i);
		close(a);
	}
	unlink(sa.sun_path);
	out("done\n");
	return 0;
}
