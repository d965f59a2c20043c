/* urights
 *
 * Descriptors in flight (SCM_RIGHTS) that the tree also holds. Parent P makes a pipe p,
 * a datagram pair d and a seqpacket pair q, sends p[0] on d[0] (queued on d[1]) with
 * "pipe" and q[1] on q[0] (queued on q[1] itself: a socket that carries itself) with
 * "self", keeping both open, and forks child C, which keeps d[1], q[1] and p[1]. P
 * prints "ready" and waits for a line on stdin, then tells C, which receives both
 * messages: it writes a byte into p[1] and reads it back from the descriptor that came
 * on d[1], and compares the one that came on q[1] with q[1] itself. */
#include "util.h"
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
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof ctl.buf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	if (sendmsg(s, &mh, 0) != (ssize_t)strlen(what))
		die("sendmsg: %s", strerror(errno));
}

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

int main(void)
{
	int p[2], d[2], q[2], go[2];
	if (pipe(p) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q) || pipe(go))
		die("pipe/socketpair: %s", strerror(errno));
	send_fd(d[0], p[0], "pipe");
	send_fd(q[0], q[1], "self");
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(go[1]);
		close(p[0]);
		close(d[0]);
		close(q[0]);
		char c;
		if (read(go[0], &c, 1) != 1)
			die("go: %s", strerror(errno));
		char buf[32], got = 0;
		int fd = recv_fd(d[1], buf, sizeof buf);
		const char *pipe_ok = fd < 0 ? "no descriptor came" :
				      write(p[1], "x", 1) == 1 && read(fd, &got, 1) == 1 && got == 'x'
					      ? "it is the pipe's read end"
					      : "it is NOT the pipe";
		out("C: d brought [%s]: %s\n", buf, pipe_ok);
		fd = recv_fd(q[1], buf, sizeof buf);
		struct stat a, b;
		out("C: q brought [%s]: %s\n", buf,
		    fd >= 0 && fstat(fd, &a) == 0 && fstat(q[1], &b) == 0 && a.st_ino == b.st_ino
			    ? "the socket itself"
			    : "NOT the socket itself");
		_exit(0);
	}
	close(go[0]);
	close(d[1]);
	close(q[1]);
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
