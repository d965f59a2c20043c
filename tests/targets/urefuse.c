/* urefuse MODE DIR [STEPS]
 *
 * One unix socket state that a dump must refuse (naming the descriptor) while the
 * program runs on undisturbed. MODE:
 *   stream-rights   a stream socketpair (fds 3, 4) with a pipe's read end in flight on
 *                   it: one byte sent on 3 with SCM_RIGHTS, queued on 4;
 *   dgram-rights    an eventfd (counter 5) in flight the same way on a datagram
 *                   socketpair, closed by the program after sending it (only the message
 *                   holds it);
 *   self            a stream socketpair whose end 4 is in flight on itself (sent on 3);
 *   named-rights    a datagram socket (fd 3) bound to DIR/g.sock with a message carrying
 *                   a pipe's read end queued on it, from an unnamed socket;
 *   backlog         a stream listener (fd 3) bound to DIR/l.sock with a client (fd 4)
 *                   connected, not accepted yet, that sent "hi";
 *   outside         a stream listener (fd 3) bound to DIR/l.sock (the test connects a
 *                   client of its own to it, outside the tree);
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then takes what was in
 * flight or waiting (receives the descriptor and checks it is the pipe, accepts the
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

/* Send one byte on s carrying descriptor fd (to `to` if not NULL). */
static void send_fd(int s, int fd, const struct sockaddr_un *to, socklen_t tl)
{
	char byte = 'r';
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
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
	if (sendmsg(s, &mh, 0) != 1)
		die("sendmsg: %s", strerror(errno));
}

/* Receive the byte and the descriptor sent with it on s (-1 if none came). */
static int recv_fd(int s)
{
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
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

/* Whether fd is the read end of pipe p: a byte written to p[1] comes out of it. */
static const char *is_pipe_end(int fd, int p[2])
{
	char c = 'x', got = 0;
	if (fd < 0)
		return "no descriptor came with the message";
	if (write(p[1], &c, 1) != 1 || read(fd, &got, 1) != 1 || got != 'x')
		return "the descriptor is not the pipe";
	return "the pipe's read end came with the message";
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
	int s[2] = {-1, -1}, p[2] = {-1, -1}, L = -1, C = -1;
	if (!strcmp(mode, "stream-rights") || !strcmp(mode, "dgram-rights") ||
	    !strcmp(mode, "self")) {
		int type = !strcmp(mode, "dgram-rights") ? SOCK_DGRAM : SOCK_STREAM;
		if (socketpair(AF_UNIX, type, 0, s) || s[0] != 3 || pipe(p))
			die("socketpair/pipe: %s", strerror(errno));
		if (type == SOCK_DGRAM) {
			int e = eventfd(5, 0);
			if (e < 0)
				die("eventfd: %s", strerror(errno));
			send_fd(s[0], e, NULL, 0);
			close(e);
		} else {
			send_fd(s[0], !strcmp(mode, "self") ? s[1] : p[0], NULL, 0);
		}
	} else if (!strcmp(mode, "named-rights")) {
		snprintf(path, sizeof path, "%s/g.sock", dir);
		unlink(path);
		sl = path_addr(&sa, path);
		s[1] = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (s[1] != 3 || bind(s[1], (struct sockaddr *)&sa, sl))
			die("bind: %s", strerror(errno));
		int u = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (u < 0 || pipe(p))
			die("socket/pipe: %s", strerror(errno));
		send_fd(u, p[0], &sa, sl);
		close(u);
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
			if (write(C, "hi", 2) != 2)
				die("write: %s", strerror(errno));
		}
	} else {
		die("unknown mode %s", mode);
	}
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	if (!strcmp(mode, "dgram-rights")) {
		int fd = recv_fd(s[1]);
		uint64_t v = 0;
		out("%s\n", fd >= 0 && read(fd, &v, sizeof v) == sizeof v && v == 5
				    ? "the eventfd came with the message"
				    : "the eventfd did not come");
	} else if (p[0] >= 0 && strcmp(mode, "self")) {
		out("%s\n", is_pipe_end(recv_fd(s[1]), p));
	} else if (!strcmp(mode, "self")) {
		int fd = recv_fd(s[1]);
		struct stat a, b;
		out("%s\n", fd >= 0 && fstat(fd, &a) == 0 && fstat(s[1], &b) == 0 &&
					a.st_ino == b.st_ino
				    ? "the socket came with the message on itself"
				    : "the socket did not come with the message");
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
