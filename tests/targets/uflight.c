/* uflight MODE DIR [STEPS]
 *
 * Descriptors in flight (SCM_RIGHTS) that the tree also holds, on the unix sockets
 * where a restore must send them again with the right boundaries. MODE:
 *   stream  a stream socketpair s (fds 3, 4) and a pipe p (5, 6). On s[0] the program
 *           sends, in this order: "x" with p[0], "y" with s[1] itself (a socket carrying
 *           itself), "zz" (plain); all queued on s[1]. A child C (same descriptors), once
 *           P has counted its steps, reads them 16 bytes at a time and tells for each
 *           read what came and which descriptor came with it (the kernel keeps each
 *           message with descriptors as one buffer: a read ends after it);
 *   named   a datagram socket g (fd 3) bound to DIR/g.sock, and a pipe p. Queued on g: a
 *           message "pipe" with p[0] from an unnamed socket (closed since), then "self"
 *           with g itself from socket h bound to DIR/h.sock (kept), then "plain" from h.
 *           The program reads them and tells what came with each.
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then reads. */
#include "util.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t path_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (strlen(path) + 1 > sizeof sa->sun_path)
		die("socket name too long: %s", path);
	strcpy(sa->sun_path, path);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

/* Send `what` on s (to `to` if not NULL), with descriptor fd if fd >= 0. */
static void send_with(int s, const char *what, int fd, const struct sockaddr_un *to, socklen_t tl)
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
	if (to) {
		mh.msg_name = (void *)to;
		mh.msg_namelen = tl;
	}
	if (sendmsg(s, &mh, 0) != (ssize_t)strlen(what))
		die("sendmsg %s: %s", what, strerror(errno));
}

/* One read of at most cap bytes from s into buf (NUL-terminated): the descriptor that
 * came with it, -1 if none; *n gets the length (-1 when nothing was queued). */
static int recv_with(int s, char *buf, size_t cap, ssize_t *n)
{
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof ctl.b};
	*n = recvmsg(s, &mh, MSG_DONTWAIT);
	buf[*n > 0 ? *n : 0] = 0;
	if (*n < 0)
		return -1;
	if (mh.msg_flags & MSG_CTRUNC)
		die("control data cut short");
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	if (c->cmsg_len != CMSG_LEN(sizeof(int)))
		die("more than one descriptor came");
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

/* What descriptor fd is: the read end of pipe p, the socket `self`, or something else. */
static const char *what_is(int fd, int p[2], int self)
{
	if (fd < 0)
		return "no descriptor";
	struct stat a, b;
	if (fstat(fd, &a) || fstat(self, &b))
		die("fstat: %s", strerror(errno));
	if (a.st_ino == b.st_ino && a.st_dev == b.st_dev)
		return "the socket itself";
	char c = 'x', got = 0;
	if (write(p[1], &c, 1) == 1 && read(fd, &got, 1) == 1 && got == 'x')
		return "the pipe's read end";
	return "ANOTHER descriptor";
}

static void read_all(int s, int p[2], const char *who)
{
	size_t caps[] = {16, 16, 16, 16};
	for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
		char buf[32];
		ssize_t n;
		int fd = recv_with(s, buf, caps[i], &n);
		if (n < 0) {
			out("%s: read %zu: nothing more (%s)\n", who, i, strerror(errno));
			break;
		}
		out("%s: read %zu: [%s] with %s\n", who, i, buf, what_is(fd, p, s));
		if (fd >= 0)
			close(fd);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: uflight MODE DIR [STEPS]");
	const char *mode = argv[1], *dir = argv[2];
	long steps = arg_long(argc, argv, 3, 100);
	int s[2], p[2];
	if (!strcmp(mode, "stream")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || s[0] != 3 || pipe(p))
			die("socketpair/pipe: %s", strerror(errno));
		send_with(s[0], "x", p[0], NULL, 0);
		send_with(s[0], "y", s[1], NULL, 0);
		send_with(s[0], "zz", -1, NULL, 0);
		int go[2];
		if (pipe(go))
			die("pipe: %s", strerror(errno));
		pid_t child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0) {
			char c;
			if (read(go[0], &c, 1) != 1)
				die("go: %s", strerror(errno));
			read_all(s[1], p, "C");
			_exit(0);
		}
		out("ready\n");
		for (long i = 1; i <= steps; i++) {
			out("step %ld\n", i);
			sleep_ms(20);
		}
		if (write(go[1], "g", 1) != 1)
			die("go: %s", strerror(errno));
		int st = 0;
		if (waitpid(child, &st, 0) != child)
			die("waitpid: %s", strerror(errno));
		out("C exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return 0;
	}
	if (strcmp(mode, "named"))
		die("unknown mode %s", mode);
	char gpath[200], hpath[200];
	struct sockaddr_un ga, ha;
	snprintf(gpath, sizeof gpath, "%s/g.sock", dir);
	snprintf(hpath, sizeof hpath, "%s/h.sock", dir);
	unlink(gpath);
	unlink(hpath);
	socklen_t gl = path_addr(&ga, gpath), hl = path_addr(&ha, hpath);
	int g = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (g != 3 || bind(g, (struct sockaddr *)&ga, gl))
		die("bind g: %s", strerror(errno));
	int h = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (h < 0 || bind(h, (struct sockaddr *)&ha, hl) || pipe(p))
		die("bind h/pipe: %s", strerror(errno));
	int u = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (u < 0)
		die("socket: %s", strerror(errno));
	send_with(u, "pipe", p[0], &ga, gl);
	close(u);
	send_with(h, "self", g, &ga, gl);
	send_with(h, "plain", -1, &ga, gl);
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	for (int i = 0; i < 4; i++) {
		char buf[32];
		ssize_t n;
		int fd = recv_with(g, buf, 16, &n);
		if (n < 0) {
			out("g: message %d: nothing more (%s)\n", i, strerror(errno));
			break;
		}
		out("g: message %d: [%s] with %s\n", i, buf, what_is(fd, p, g));
		if (fd >= 0)
			close(fd);
	}
	unlink(gpath);
	unlink(hpath);
	return 0;
}
