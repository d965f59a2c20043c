/* uinflight TYPE FILE
 *
 * Descriptors that only a queued unix message holds (SCM_RIGHTS): the sender closed its
 * own copy before the receiver took it. Parent P makes a socketpair s of TYPE (stream,
 * dgram or seqpacket) and forks child C, which keeps s[1]. P then sends on s[0], one
 * message each ("a" .. "g", one byte: a stream message with descriptors is read whole
 * only so), and closes its copies:
 *   a  the read end of a pipe holding "pipe-data" (its write end closed too: the reader
 *      gets the data, then end of file);
 *   b  FILE opened read-write, holding "0123456789", at offset 4;
 *   c  one end of a stream socketpair x with "queued" waiting on it (P keeps the other
 *      end, x[0], and later reads what C writes back on it);
 *   d  an eventfd with counter 5;
 *   e  one end y[1] of a datagram socketpair, on whose own queue wait "ev" carrying an
 *      eventfd with counter 7 (closed by P) and then "self" carrying y[1] itself (a
 *      chain: a socket in flight with descriptors in flight of its own, itself among
 *      them); P keeps y[0];
 *   g  a memfd holding "memfd-data", at offset 2, sealed against shrinking;
 *   f  a plain message without descriptors.
 * With TYPE epoll, P sends only an epoll instance (closed), which a dump refuses.
 * P prints "ready" and waits for a line on stdin, then tells C (through a pipe), which
 * receives each message and uses what came with it, printing what it found. */
#include "util.h"
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void send_fd(int s, int fd, const char *what)
{
	struct iovec iov = {.iov_base = (void *)what, .iov_len = strlen(what)};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof ctl);
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof ctl.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	if (sendmsg(s, &mh, 0) != (ssize_t)strlen(what))
		die("sendmsg %s: %s", what, strerror(errno));
}

/* One message (at most cap - 1 bytes) from s into buf; the descriptor that came with it
 * (-1 if none). */
static int recv_fd(int s, char *buf, size_t cap)
{
	struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof ctl.b};
	ssize_t n = recvmsg(s, &mh, MSG_DONTWAIT);
	if (n < 0)
		die("recvmsg: %s", strerror(errno));
	buf[n] = 0;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

static unsigned long long ev_read(int fd)
{
	unsigned long long v = 0;
	if (fd < 0 || read(fd, &v, sizeof v) != sizeof v)
		return 0;
	return v;
}

static void receive(int s, int x0)
{
	char buf[64], data[64];
	/* a: the pipe */
	int fd = recv_fd(s, buf, sizeof buf);
	ssize_t n = fd < 0 ? -1 : read(fd, data, sizeof data - 1);
	data[n > 0 ? n : 0] = 0;
	ssize_t eof = fd < 0 ? -1 : read(fd, buf + 8, 1);
	out("C: a came with fd %d: read [%s], then %s\n", fd, data,
	    eof == 0 ? "end of file" : "NOT end of file");
	if (fd >= 0)
		close(fd);
	/* b: the file */
	fd = recv_fd(s, buf, sizeof buf);
	n = fd < 0 ? -1 : read(fd, data, 3);
	data[n > 0 ? n : 0] = 0;
	out("C: b came with fd %d: read [%s] at 4, now at %ld, flags %#x\n", fd, data,
	    fd < 0 ? -1L : (long)lseek(fd, 0, SEEK_CUR), fd < 0 ? 0 : fcntl(fd, F_GETFL) & ~O_LARGEFILE);
	if (fd >= 0)
		close(fd);
	/* c: the socket with data waiting */
	fd = recv_fd(s, buf, sizeof buf);
	n = fd < 0 ? -1 : read(fd, data, sizeof data - 1);
	data[n > 0 ? n : 0] = 0;
	int back = fd >= 0 && write(fd, "back", 4) == 4;
	n = back ? read(x0, buf, 4) : -1;
	buf[n > 0 ? n : 0] = 0;
	out("C: c came with fd %d: read [%s]; its peer got [%s]\n", fd, data, buf);
	if (fd >= 0)
		close(fd);
	/* d: the eventfd */
	fd = recv_fd(s, buf, sizeof buf);
	out("C: d came with fd %d: counter %llu\n", fd, ev_read(fd));
	if (fd >= 0)
		close(fd);
	/* e: the socket with descriptors of its own in flight */
	fd = recv_fd(s, buf, sizeof buf);
	if (fd < 0) {
		out("C: e came without a descriptor\n");
	} else {
		int e = recv_fd(fd, data, sizeof data);
		out("C: e came with fd %d; on it: [%s] with fd %d: counter %llu\n", fd, data, e,
		    ev_read(e));
		int self = recv_fd(fd, data, sizeof data);
		struct stat a, b;
		out("C: then [%s] with fd %d: %s\n", data, self,
		    self >= 0 && fstat(self, &a) == 0 && fstat(fd, &b) == 0 && a.st_ino == b.st_ino
			    ? "the socket itself"
			    : "NOT the socket itself");
		if (e >= 0)
			close(e);
		if (self >= 0)
			close(self);
		close(fd);
	}
	/* g: the memfd */
	fd = recv_fd(s, buf, sizeof buf);
	n = fd < 0 ? -1 : read(fd, data, sizeof data - 1);
	data[n > 0 ? n : 0] = 0;
	out("C: g came with fd %d: read [%s] from 2, seals %#x\n", fd, data,
	    fd < 0 ? 0 : fcntl(fd, F_GET_SEALS));
	if (fd >= 0)
		close(fd);
	/* f: plain */
	fd = recv_fd(s, buf, sizeof buf);
	out("C: f: [%s] %s\n", buf, fd < 0 ? "alone" : "WITH a descriptor");
	int next = open("/dev/null", O_RDONLY);
	out("C: the next descriptor opened is %d\n", next);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: uinflight TYPE FILE");
	const char *t = argv[1];
	int type = !strcmp(t, "stream") ? SOCK_STREAM : !strcmp(t, "dgram") ? SOCK_DGRAM
						       : SOCK_SEQPACKET;
	int s[2], x[2], y[2], go[2], rd[2];
	if (socketpair(AF_UNIX, type, 0, s) || socketpair(AF_UNIX, SOCK_STREAM, 0, x) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, y) || pipe(go) || pipe(rd))
		die("socketpair: %s", strerror(errno));
	if (write(x[0], "queued", 6) != 6)
		die("write: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(go[1]);
		close(rd[0]);
		close(s[0]);
		close(x[1]);
		close(y[0]);
		close(y[1]);
		if (write(rd[1], "r", 1) != 1)
			die("ready: %s", strerror(errno));
		close(rd[1]);
		char c;
		if (read(go[0], &c, 1) != 1)
			die("go: %s", strerror(errno));
		if (!strcmp(t, "epoll")) {
			char buf[8], link[64] = "";
			int fd = recv_fd(s[1], buf, sizeof buf);
			snprintf(buf, sizeof buf, "%d", fd);
			char path[64];
			snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
			ssize_t n = readlink(path, link, sizeof link - 1);
			link[n > 0 ? n : 0] = 0;
			out("C: a came with fd %d: %s\n", fd, link);
		} else {
			receive(s[1], x[0]);
		}
		_exit(0);
	}
	close(go[0]);
	close(rd[1]);
	close(s[1]);
	close(x[0]);
	if (!strcmp(t, "epoll")) {
		int ep = epoll_create1(0);
		if (ep < 0)
			die("epoll_create1: %s", strerror(errno));
		send_fd(s[0], ep, "a");
		close(ep);
	} else {
		int p[2];
		if (pipe(p) || write(p[1], "pipe-data", 9) != 9)
			die("pipe: %s", strerror(errno));
		send_fd(s[0], p[0], "a");
		close(p[0]);
		close(p[1]);
		int f = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (f < 0 || write(f, "0123456789", 10) != 10 || lseek(f, 4, SEEK_SET) != 4)
			die("file %s: %s", argv[2], strerror(errno));
		send_fd(s[0], f, "b");
		close(f);
		send_fd(s[0], x[1], "c");
		close(x[1]);
		int e = eventfd(5, 0);
		if (e < 0)
			die("eventfd: %s", strerror(errno));
		send_fd(s[0], e, "d");
		close(e);
		e = eventfd(7, 0);
		if (e < 0)
			die("eventfd: %s", strerror(errno));
		send_fd(y[0], e, "ev");
		close(e);
		send_fd(y[0], y[1], "self");
		send_fd(s[0], y[1], "e");
		close(y[1]);
		int m = memfd_create("inflight", MFD_ALLOW_SEALING);
		if (m < 0 || write(m, "memfd-data", 10) != 10 || lseek(m, 2, SEEK_SET) != 2 ||
		    fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK))
			die("memfd: %s", strerror(errno));
		send_fd(s[0], m, "g");
		close(m);
		send_fd(s[0], -1, "f");
	}
	char c;
	if (read(rd[0], &c, 1) != 1)
		die("child ready: %s", strerror(errno));
	close(rd[0]);
	out("ready\n");
	char line[16];
	if (read(0, line, sizeof line) <= 0)
		die("stdin: %s", strerror(errno));
	if (write(go[1], "g", 1) != 1)
		die("go: %s", strerror(errno));
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("C exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
