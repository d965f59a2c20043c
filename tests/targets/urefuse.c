/* urefuse MODE DIR [STEPS]
 *
 * One unix socket state that a dump must refuse (naming the descriptor) while the
 * program runs on undisturbed, or that dumps refused before (stream-rights,
 * dgram-rights, named-rights: restored since, tests/e2e_inflight.rs). MODE:
 *   stream-rights   a stream socketpair (fds 3, 4) with an eventfd (counter 5) in flight
 *                   on it: one byte sent on 3 with SCM_RIGHTS, queued on 4, the eventfd
 *                   closed by the program after sending it (only the message holds it);
 *   dgram-rights    the same on a datagram socketpair;
 *   stream-boundary a stream socketpair (fds 3, 4) with "aa" sent on 3, then "bbbb"
 *                   carrying 4 itself (which the tree holds): where that message begins
 *                   after "aa" a peek cannot tell (restored since, through the BPF
 *                   socket reader: tests/e2e_unix.rs);
 *   named-rights    a datagram socket (fd 3) bound to DIR/g.sock with a message carrying
 *                   an eventfd queued on it, from an unnamed socket, the eventfd closed
 *                   after sending it;
 *   backlog         a stream listener (fd 3) bound to DIR/l.sock with a client (fd 4)
 *                   connected, not accepted yet, that sent "hi" carrying its own socket
 *                   (SCM_RIGHTS; what it sent without descriptors is restored since,
 *                   tests/e2e_unix.rs with ubacklog);
 *   outside         a stream listener (fd 3) bound to DIR/l.sock (the test connects a
 *                   client of its own to it, outside the tree);
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then takes what was in
 * flight or waiting (receives the descriptor and checks it is the eventfd, accepts the
 * client and reads its message) and prints what it found. */
#include "util.h"
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static socklen_t path_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (strlen(path) + 1 > sizeof sa->sun_path)
		die("socket name too long: %s", path);
	strcpy(sa->sun_path, path);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

/* Send `what` on s carrying descriptor fd (to `to` if not NULL). */
static void send_fd(int s, int fd, const struct sockaddr_un *to, socklen_t tl, const char *what)
{
	struct iovec iov = {.iov_base = (void *)what, .iov_len = strlen(what)};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof ctl);
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof ctl.buf};
	if (to) {
		mh.msg_name = (void *)to;
		mh.msg_namelen = tl;
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	if (sendmsg(s, &mh, 0) != (ssize_t)strlen(what))
		die("sendmsg: %s", strerror(errno));
}

/* Receive the byte and the descriptor sent with it on s (-1 if none came). */
static int recv_fd(int s, char *byte)
{
	struct iovec iov = {.iov_base = byte, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof ctl.buf};
	if (recvmsg(s, &mh, MSG_DONTWAIT) != 1)
		die("recvmsg: %s", strerror(errno));
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: urefuse MODE DIR [STEPS]");
	const char *mode = argv[1], *dir = argv[2];
	long steps = arg_long(argc, argv, 3, 100);
	char path[200];
	struct sockaddr_un sa;
	socklen_t sl;
	int s[2] = {-1, -1}, L = -1, C = -1;
	if (!strcmp(mode, "stream-boundary")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || s[0] != 3)
			die("socketpair: %s", strerror(errno));
		if (write(s[0], "aa", 2) != 2)
			die("write: %s", strerror(errno));
		send_fd(s[0], s[1], NULL, 0, "bbbb");
	} else if (!strcmp(mode, "stream-rights") || !strcmp(mode, "dgram-rights")) {
		int type = !strcmp(mode, "dgram-rights") ? SOCK_DGRAM : SOCK_STREAM;
		if (socketpair(AF_UNIX, type, 0, s) || s[0] != 3)
			die("socketpair: %s", strerror(errno));
		int e = eventfd(5, 0);
		if (e < 0)
			die("eventfd: %s", strerror(errno));
		send_fd(s[0], e, NULL, 0, "r");
		close(e);
	} else if (!strcmp(mode, "named-rights")) {
		snprintf(path, sizeof path, "%s/g.sock", dir);
		unlink(path);
		sl = path_addr(&sa, path);
		s[1] = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (s[1] != 3 || bind(s[1], (struct sockaddr *)&sa, sl))
			die("bind: %s", strerror(errno));
		int u = socket(AF_UNIX, SOCK_DGRAM, 0);
		int e = eventfd(5, 0);
		if (u < 0 || e < 0)
			die("socket/eventfd: %s", strerror(errno));
		send_fd(u, e, &sa, sl, "r");
		close(u);
		close(e);
	} else if (!strcmp(mode, "backlog") || !strcmp(mode, "outside")) {
		snprintf(path, sizeof path, "%s/l.sock", dir);
		unlink(path);
		sl = path_addr(&sa, path);
		L = socket(AF_UNIX, SOCK_STREAM, 0);
		if (L != 3 || bind(L, (struct sockaddr *)&sa, sl) || listen(L, 4))
			die("listen: %s", strerror(errno));
		if (!strcmp(mode, "backlog")) {
			C = socket(AF_UNIX, SOCK_STREAM, 0);
			if (C != 4 || connect(C, (struct sockaddr *)&sa, sl))
				die("connect: %s", strerror(errno));
			send_fd(C, C, NULL, 0, "hi");
		}
	} else {
		die("unknown mode %s", mode);
	}
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	if (!strcmp(mode, "stream-boundary")) {
		for (int i = 0; i < 3; i++) {
			char buf[2] = {0};
			int fd = recv_fd(s[1], buf);
			out("read %d: [%s] %s\n", i, buf, fd >= 0 ? "with a descriptor" : "alone");
		}
	} else if (s[1] >= 0) {
		char byte;
		int fd = recv_fd(s[1], &byte);
		uint64_t v = 0;
		out("%s\n", fd >= 0 && read(fd, &v, sizeof v) == sizeof v && v == 5
				    ? "the eventfd came with the message"
				    : "the eventfd did not come");
	} else if (!strcmp(mode, "backlog")) {
		int a = accept(L, NULL, NULL);
		char buf[8] = {0};
		if (a < 0 || read(a, buf, 2) != 2)
			die("accept/read: %s", strerror(errno));
		out("accepted the waiting client, which said %s\n", buf);
		unlink(path);
	} else {
		int a = accept(L, NULL, NULL);
		out("accepted the outside client: %s\n", a < 0 ? strerror(errno) : "yes");
		unlink(path);
	}
	return 0;
}
