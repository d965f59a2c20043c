/* ucreds
 *
 * Credentials (SCM_CREDENTIALS) of queued unix messages and stream bytes. Parent P
 * makes a seqpacket pair q and a stream pair s and turns SO_PASSCRED on for its ends
 * q[0] and s[0]. Child C becomes user and group 65534, sends two records on q[1] and
 * writes "abc" on s[1]; then P writes "xyz" on s[1] too (as root). P prints "ready",
 * waits for a line on stdin, then reads everything with the credentials it came with
 * (pid as "C" or "P", uid, gid) and prints it; a stream read stops where the writer
 * changes. Then C is told to exit. */
#include "util.h"
#include <sys/socket.h>
#include <sys/wait.h>

static pid_t child;

static void show(const char *what, int s)
{
	char buf[64];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof ctl.b};
	ssize_t n = recvmsg(s, &mh, MSG_DONTWAIT);
	if (n < 0) {
		out("%s: nothing (%s)\n", what, strerror(errno));
		return;
	}
	buf[n] = 0;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_CREDENTIALS) {
		out("%s: [%s] without credentials\n", what, buf);
		return;
	}
	struct ucred u;
	memcpy(&u, CMSG_DATA(c), sizeof u);
	out("%s: [%s] from %s, uid %u gid %u\n", what, buf,
	    u.pid == child ? "C" : u.pid == getpid() ? "P" : "another process", u.uid, u.gid);
}

int main(void)
{
	int q[2], s[2], go[2], sent[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q) || socketpair(AF_UNIX, SOCK_STREAM, 0, s) ||
	    pipe(go) || pipe(sent))
		die("socketpair/pipe: %s", strerror(errno));
	int one = 1;
	if (setsockopt(q[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) ||
	    setsockopt(s[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one))
		die("SO_PASSCRED: %s", strerror(errno));
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(q[0]);
		close(s[0]);
		close(go[1]);
		close(sent[0]);
		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			die("setresuid: %s", strerror(errno));
		if (send(q[1], "r1", 2, 0) != 2 || send(q[1], "r2", 2, 0) != 2 ||
		    write(s[1], "abc", 3) != 3)
			die("send: %s", strerror(errno));
		if (write(sent[1], "s", 1) != 1)
			die("sent: %s", strerror(errno));
		char c;
		if (read(go[0], &c, 1) < 0)
			die("go: %s", strerror(errno));
		_exit(0);
	}
	close(go[0]);
	close(sent[1]);
	char c;
	if (read(sent[0], &c, 1) != 1)
		die("sent: %s", strerror(errno));
	if (write(s[1], "xyz", 3) != 3)
		die("write: %s", strerror(errno));
	out("ready\n");
	char line[16];
	if (read(0, line, sizeof line) <= 0)
		die("stdin: %s", strerror(errno));
	show("q", q[0]);
	show("q", q[0]);
	show("s", s[0]);
	show("s", s[0]);
	if (write(go[1], "g", 1) != 1)
		die("go: %s", strerror(errno));
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("C exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
