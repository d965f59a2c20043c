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
 * With TYPE epoll, on a seqpacket pair, C moves its copy of the read end q[0] of a pipe
 * q to descriptor 20 (keeping the write end q[1]), and P sends (and closes):
 *   a  an epoll instance with three items P added: its own end s[0] (EPOLLIN, data
 *      0x10; P keeps it), q[0] (EPOLLIN, data 0x20; P closes it: only C holds that
 *      pipe end, at 20) and the eventfd b (EPOLLIN|EPOLLET, data 0x30);
 *   b  an eventfd with counter 0, which P closes: only this message holds it;
 *   f  a plain message.
 * C receives them, prints "received" and waits for a second line, then prints the
 * items as fdinfo shows them, checks with kcmp (KCMP_EPOLL_TFD) that each item watches
 * P's s[0], its own descriptor 20 and b, and what epoll_wait reports before and after
 * it writes to b, to q[1] and to its end of the pair.
 * With TYPE pty, on a seqpacket pair, P opens a pseudo-terminal pair (its slave with
 * ECHO off and a 30x100 window, P keeping that slave open) and sends (and closes):
 *   a  its master;
 *   b  the slave opened a second time;
 *   f  a plain message.
 * C receives them, prints "received" and waits for a second line, then checks that b
 * is a's slave, its settings and window, and sends a line each way.
 * With TYPE epollout OUTFD, P sends only an epoll instance (closed) watching its s[0]
 * and descriptor OUTFD, a pipe end the harness holds outside the tree, which P and C
 * close: a dump refuses it.
 * With TYPE tcpconn, on a seqpacket pair, P connects a TCP client c to a listener of its
 * own on 127.0.0.1 (its receive buffer made small), keeps the accepted end a and writes
 * "to-c" on it; c writes "to-a" and then as much as it can without blocking (up to
 * 256 KiB): a's receive window fills, and the rest waits unacknowledged in c's send
 * queue. P sends c (and closes it) as "a". C receives it, prints "received" and waits
 * for a second line, then reads "to-c", shuts down its writing side and reads to end of
 * file; P meanwhile reads a to end of file, checks that it got "to-a" and every byte c
 * wrote, in order, writes "pong" and closes a.
 * With TYPE devtty, P becomes a session leader with a pseudo-terminal pair as its
 * controlling terminal (the slave in raw mode; P and C keep both sides open), opens
 * /dev/tty and sends it (closed) as "a". C, in P's session with the same controlling
 * terminal, receives it, prints "received" and waits for a second line, then checks
 * that it leads to the pair's slave (TIOCGDEV) and writes "ping" through it, which it
 * reads from the master. With TYPE devttyelse C makes a session of its own first (no
 * controlling terminal): refused.
 * With TYPE kinds, on a datagram pair, P sends (and closes) other kinds restore makes
 * only in flight, and writes to FILE what C checks them against (the ports it bound,
 * its cgroup's ID):
 *   a  a TCP listener on 127.0.0.1 (SO_REUSEADDR, backlog 4);
 *   b  a UDP socket on 127.0.0.1 with the datagram "udp-queued" waiting on it;
 *   c  a TCP socket not connected, with SO_KEEPALIVE and TCP_NODELAY set;
 *   d  a pidfd of P;
 *   e  a pidfd of a child Z of P that exited with code 3 and was reaped;
 *   h  an inotify instance watching directory FILE.d (made) for files created there;
 *   i  a fanotify group (notifications only) marking FILE for modifications;
 *   f  a plain message.
 * C then receives them all, prints "received" and waits for a second line on P's
 * stdin (the descriptors are C's own now and unused: a moment to look at them), then
 * uses each and prints what it found.
 * P prints "ready" and waits for a line on stdin, then tells C (through a pipe), which
 * receives each message and uses what came with it, printing what it found. */
#include "pidinfo.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/fanotify.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <sys/inotify.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* ---- TYPE kinds ---- */

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	if (getsockname(fd, (struct sockaddr *)&a, &l))
		return -1;
	return ntohs(a.sin_port);
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int inet_bound(int type)
{
	int fd = socket(AF_INET, type, 0), one = 1;
	struct sockaddr_in a = loopback(0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
	    bind(fd, (struct sockaddr *)&a, sizeof a))
		die("inet socket: %s", strerror(errno));
	return fd;
}

/* The ID of the cgroup (v2) process `pid` is in: its directory's inode. */
static unsigned long long cgroup_id(pid_t pid)
{
	char p[64], line[512], mnt[256] = "";
	snprintf(p, sizeof p, "/proc/%d/cgroup", (int)pid);
	FILE *f = fopen(p, "r");
	char path[512] = "";
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "0::", 3)) {
			snprintf(path, sizeof path, "%s", line + 3);
			path[strcspn(path, "\n")] = 0;
		}
	if (f)
		fclose(f);
	f = fopen("/proc/self/mountinfo", "r");
	while (f && fgets(line, sizeof line, f)) {
		char *dash = strstr(line, " - cgroup2 ");
		char m[256];
		if (dash && sscanf(line, "%*s %*s %*s %*s %255s", m) == 1)
			snprintf(mnt, sizeof mnt, "%s", m);
	}
	if (f)
		fclose(f);
	char full[800];
	snprintf(full, sizeof full, "%s%s", mnt, path);
	struct stat st;
	return stat(full, &st) ? 0 : (unsigned long long)st.st_ino;
}

static void send_kinds(int s, const char *file)
{
	int l = inet_bound(SOCK_STREAM);
	if (listen(l, 4))
		die("listen: %s", strerror(errno));
	int u = inet_bound(SOCK_DGRAM), w = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = loopback(port_of(u));
	if (w < 0 || sendto(w, "udp-queued", 10, 0, (struct sockaddr *)&to, sizeof to) != 10)
		die("udp: %s", strerror(errno));
	close(w);
	int t = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (t < 0 || setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) ||
	    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
		die("tcp: %s", strerror(errno));
	int me = pidfd_open(getpid(), 0);
	pid_t z = fork();
	if (z < 0)
		die("fork: %s", strerror(errno));
	if (z == 0)
		_exit(3);
	int zfd = pidfd_open(z, 0);
	if (me < 0 || zfd < 0 || waitpid(z, NULL, 0) != z)
		die("pidfd: %s", strerror(errno));
	char dir[512];
	snprintf(dir, sizeof dir, "%s.d", file);
	int in = inotify_init1(IN_NONBLOCK);
	if (in < 0 || (mkdir(dir, 0700) && errno != EEXIST) ||
	    inotify_add_watch(in, dir, IN_CREATE) != 1)
		die("inotify: %s", strerror(errno));
	FILE *f = fopen(file, "w");
	if (!f || fprintf(f, "%d %d %llu\n", port_of(l), port_of(u), cgroup_id(getpid())) < 0 ||
	    fclose(f))
		die("write %s: %s", file, strerror(errno));
	int fa = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	if (fa < 0 || fanotify_mark(fa, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, file))
		die("fanotify: %s", strerror(errno));
	int fds[] = {l, u, t, me, zfd, in, fa};
	const char *names[] = {"a", "b", "c", "d", "e", "h", "i"};
	for (int k = 0; k < 7; k++) {
		send_fd(s, fds[k], names[k]);
		close(fds[k]);
	}
	send_fd(s, -1, "f");
}

/* Exchange "hello" over a connection from `c` (connected to `port`) accepted on `l`. */
static const char *hello(int l, int c, int port)
{
	static char got[16];
	struct sockaddr_in a = loopback(port);
	if (connect(c, (struct sockaddr *)&a, sizeof a))
		return strerror(errno);
	int acc = accept(l, NULL, NULL);
	ssize_t n = -1;
	if (acc >= 0 && write(c, "hello", 5) == 5)
		n = read(acc, got, sizeof got - 1);
	got[n > 0 ? n : 0] = 0;
	if (acc >= 0)
		close(acc);
	return got;
}

static void receive_kinds(int s, int go, const char *file)
{
	char buf[64], data[64];
	int fd[8];
	for (int k = 0; k < 8; k++)
		fd[k] = recv_fd(s, buf, sizeof buf);
	out("C: received\n");
	char b;
	if (read(go, &b, 1) != 1)
		die("go: %s", strerror(errno));
	int lport = 0, uport = 0;
	unsigned long long cg = 0;
	FILE *f = fopen(file, "r");
	if (!f || fscanf(f, "%d %d %llu", &lport, &uport, &cg) != 3)
		die("read %s", file);
	fclose(f);
	int l = fd[0];
	out("C: a came with fd %d: listening %d, SO_REUSEADDR %d, on the port P bound: %s\n", l,
	    opt(l, SOL_SOCKET, SO_ACCEPTCONN), opt(l, SOL_SOCKET, SO_REUSEADDR),
	    port_of(l) == lport ? "yes" : "NO");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	out("C: a: a connection to it said [%s]\n", hello(l, c, lport));
	close(c);
	int u = fd[1];
	ssize_t n = recv(u, data, sizeof data - 1, MSG_DONTWAIT);
	data[n > 0 ? n : 0] = 0;
	struct sockaddr_in a = loopback(uport);
	ssize_t m = sendto(u, "self", 4, 0, (struct sockaddr *)&a, sizeof a) == 4
			    ? recv(u, buf, sizeof buf - 1, 0)
			    : -1;
	buf[m > 0 ? m : 0] = 0;
	out("C: b came with fd %d: on the port P bound: %s; read [%s], then [%s]\n", u,
	    port_of(u) == uport ? "yes" : "NO", data, buf);
	int t = fd[2];
	out("C: c came with fd %d: listening %d, SO_KEEPALIVE %d, TCP_NODELAY %d, port %d\n", t,
	    opt(t, SOL_SOCKET, SO_ACCEPTCONN), opt(t, SOL_SOCKET, SO_KEEPALIVE),
	    opt(t, IPPROTO_TCP, TCP_NODELAY), port_of(t));
	out("C: c: connected to a, it said [%s]\n", hello(l, t, lport));
	int me = fd[3];
	char want[32];
	snprintf(want, sizeof want, "%d", (int)getppid());
	out("C: d came with fd %d: Pid is P's: %s; signal 0 through it: %s\n", me,
	    !strcmp(fdinfo(me, "Pid"), want) ? "yes" : "NO",
	    syscall(SYS_pidfd_send_signal, me, 0, NULL, 0) == 0 ? "ok" : strerror(errno));
	int z = fd[4];
	struct info in;
	memset(&in, 0, sizeof in);
	in.mask = INFO_EXIT | INFO_CGROUPID;
	int got = ioctl(z, GET_INFO, &in);
	out("C: e came with fd %d: Pid %s; exit status %#x; in P's cgroup: %s\n", z,
	    fdinfo(z, "Pid"), got == 0 && (in.mask & INFO_EXIT) ? in.exit_code : -1,
	    got == 0 && (in.mask & INFO_CGROUPID) && in.cgroupid == cg ? "yes" : "NO");
	int h = fd[5];
	char path[600];
	snprintf(path, sizeof path, "%s.d/inflight-created", file);
	n = h < 0 ? -1 : read(h, data, sizeof data);
	int before = n < 0 && errno == EAGAIN;
	int nf = open(path, O_CREAT | O_WRONLY, 0600);
	if (nf >= 0)
		close(nf);
	union {
		struct inotify_event e;
		char b[sizeof(struct inotify_event) + 256];
	} ev;
	n = h < 0 ? -1 : read(h, &ev, sizeof ev);
	out("C: h came with fd %d: no event before: %s; then wd %d mask %#x [%s]\n", h,
	    before ? "yes" : "NO", n > 0 ? ev.e.wd : -1, n > 0 ? ev.e.mask : 0,
	    n > 0 && ev.e.len ? ev.e.name : "");
	unlink(path);
	int fa = fd[6];
	struct fanotify_event_metadata md;
	n = fa < 0 ? -1 : read(fa, &md, sizeof md);
	before = n < 0 && errno == EAGAIN;
	f = fopen(file, "a");
	if (!f || fputs("more\n", f) < 0 || fclose(f))
		die("append to %s", file);
	n = fa < 0 ? -1 : read(fa, &md, sizeof md);
	if (n > 0 && md.fd >= 0)
		close(md.fd);
	out("C: i came with fd %d: no event before: %s; then mask %#llx\n", fa,
	    before ? "yes" : "NO", n > 0 ? (unsigned long long)md.mask : 0ULL);
	out("C: f: %s\n", fd[7] < 0 ? "alone" : "WITH a descriptor");
	for (int k = 0; k < 8; k++)
		if (fd[k] >= 0)
			close(fd[k]);
	int next = open("/dev/null", O_RDONLY);
	out("C: the next descriptor opened is %d\n", next);
}

/* ---- TYPE epoll ---- */

/* Receive the three messages "a", "b" and "f" on s (their descriptors into fds), print
 * "received" and wait for the go through `go`. */
static void receive_three(int s, int go, int fds[3])
{
	char buf[64];
	for (int k = 0; k < 3; k++)
		fds[k] = recv_fd(s, buf, sizeof buf);
	out("C: received\n");
	if (read(go, buf, 1) != 1)
		die("go: %s", strerror(errno));
}

static void epoll_add(int ep, int fd, unsigned events, unsigned long long data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl %d: %s", fd, strerror(errno));
}

/* Whether descriptor `fd` of `pid` is the file item `tfd` of C's epoll `ep` watches. */
static const char *watches(pid_t pid, int fd, int ep, int tfd)
{
	unsigned slot[3] = {(unsigned)ep, (unsigned)tfd, 0};
	long r = syscall(SYS_kcmp, (long)pid, (long)getpid(), 7 /* KCMP_EPOLL_TFD */, (long)fd,
			 slot);
	return r == 0 ? "yes" : r < 0 ? strerror(errno) : "NO";
}

/* What epoll_wait on `ep` reports now: the items' data, sorted. */
static void ready(int ep, const char *when)
{
	struct epoll_event evs[8];
	int n = epoll_wait(ep, evs, 8, 0);
	unsigned long long d[8];
	for (int i = 0; i < n; i++)
		d[i] = evs[i].data.u64;
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (d[j] < d[i]) {
				unsigned long long x = d[i];
				d[i] = d[j];
				d[j] = x;
			}
	char line[128] = "";
	for (int i = 0; i < n; i++)
		snprintf(line + strlen(line), sizeof line - strlen(line), " %#llx", d[i]);
	out("C: %s: %d ready:%s\n", when, n, n > 0 ? line : " none");
}

static void receive_epoll(int s, int go, int s0, int q0, int q1)
{
	int fds[3];
	receive_three(s, go, fds);
	int ep = fds[0], ev = fds[1], f = fds[2];
	out("C: a came with fd %d, b with fd %d, f %s\n", ep, ev, f < 0 ? "alone" : "WITH one");
	/* The items as fdinfo lists them (in the order of the kernel's tree: sorted here). */
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
	FILE *fi = fopen(path, "r");
	int tfd[8], n = 0, tev = -1;
	unsigned events[8];
	unsigned long long data[8];
	while (fi && n < 8 && fgets(line, sizeof line, fi))
		if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd[n], &events[n], &data[n]) == 3)
			n++;
	if (fi)
		fclose(fi);
	for (unsigned long long want = 0x10; want <= 0x30; want += 0x10)
		for (int i = 0; i < n; i++)
			if (data[i] == want) {
				out("C: item data %#llx: tfd %d events %#x\n", data[i], tfd[i], events[i]);
				if (want == 0x30)
					tev = tfd[i];
			}
	out("C: %d items; 0x10 watches P's s[0]: %s; 0x20 watches C's 20: %s; 0x30 watches b: "
	    "%s\n",
	    n, watches(getppid(), s0, ep, s0), watches(getpid(), 20, ep, q0),
	    ev < 0 ? "no b" : watches(getpid(), ev, ep, tev));
	ready(ep, "at first");
	unsigned long long one = 1;
	if (ev < 0 || write(ev, &one, sizeof one) != sizeof one)
		die("write b: %s", strerror(errno));
	ready(ep, "after writing to b");
	ready(ep, "again (b edge-triggered)");
	if (write(q1, "x", 1) != 1)
		die("write q: %s", strerror(errno));
	ready(ep, "after writing to the pipe");
	if (write(s, "m", 1) != 1)
		die("write s: %s", strerror(errno));
	ready(ep, "after writing to P's end");
	close(ep);
	close(ev);
	int next = open("/dev/null", O_RDONLY);
	out("C: the next descriptor opened is %d\n", next);
}

/* ---- TYPE pty ---- */

static void send_pty(int s)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		die("openpt: %s", strerror(errno));
	const char *name = ptsname(m);
	int sl = name ? open(name, O_RDWR | O_NOCTTY) : -1;
	int sl2 = name ? open(name, O_RDWR | O_NOCTTY) : -1;
	struct termios t;
	struct winsize w = {.ws_row = 30, .ws_col = 100};
	if (sl < 0 || sl2 < 0 || tcgetattr(sl, &t))
		die("slave: %s", strerror(errno));
	t.c_lflag &= ~(tcflag_t)ECHO;
	if (tcsetattr(sl, TCSANOW, &t) || ioctl(sl, TIOCSWINSZ, &w))
		die("slave settings: %s", strerror(errno));
	send_fd(s, m, "a");
	close(m);
	send_fd(s, sl2, "b");
	close(sl2);
	send_fd(s, -1, "f");
}

static void receive_pty(int s, int go)
{
	int fds[3];
	receive_three(s, go, fds);
	int m = fds[0], sl = fds[1], f = fds[2];
	int index = -1;
	struct stat st;
	struct termios t;
	struct winsize w = {0};
	if (m < 0 || sl < 0 || ioctl(m, TIOCGPTN, &index) || fstat(sl, &st) || tcgetattr(sl, &t) ||
	    ioctl(sl, TIOCGWINSZ, &w))
		die("pty: %s", strerror(errno));
	out("C: a came with fd %d, b with fd %d, f %s; b is a's slave: %s; ECHO %s, window "
	    "%dx%d\n",
	    m, sl, f < 0 ? "alone" : "WITH one", (int)minor(st.st_rdev) == index ? "yes" : "NO",
	    t.c_lflag & ECHO ? "on" : "off", w.ws_row, w.ws_col);
	char data[64];
	ssize_t n = write(m, "ping\n", 5) == 5 ? read(sl, data, sizeof data - 1) : -1;
	data[n > 0 ? n : 0] = 0;
	data[strcspn(data, "\n")] = 0;
	out("C: the slave read [%s]\n", data);
	n = write(sl, "pong", 4) == 4 ? read(m, data, sizeof data - 1) : -1;
	data[n > 0 ? n : 0] = 0;
	out("C: the master read [%s]\n", data);
	close(m);
	close(sl);
	int next = open("/dev/null", O_RDONLY);
	out("C: the next descriptor opened is %d\n", next);
}

/* The TCP connection of TYPE tcpconn: P's accepted end, and how many bytes c wrote
 * after "to-a". */
static int tcp_a = -1;
static size_t tcp_sent;

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + 3);
}

static void send_tcp(int s)
{
	int l = inet_bound(SOCK_STREAM), c = socket(AF_INET, SOCK_STREAM, 0), small = 4096;
	struct sockaddr_in a = loopback(port_of(l));
	if (setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) || listen(l, 4) ||
	    c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) ||
	    (tcp_a = accept(l, NULL, NULL)) < 0)
		die("tcp: %s", strerror(errno));
	close(l);
	if (write(tcp_a, "to-c", 4) != 4 || write(c, "to-a", 4) != 4)
		die("tcp write: %s", strerror(errno));
	int fl = fcntl(c, F_GETFL);
	if (fl < 0 || fcntl(c, F_SETFL, fl | O_NONBLOCK))
		die("fcntl: %s", strerror(errno));
	unsigned char buf[4096];
	while (tcp_sent < 256 * 1024) {
		for (size_t i = 0; i < sizeof buf; i++)
			buf[i] = pattern(tcp_sent + i);
		ssize_t n = write(c, buf, sizeof buf);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			die("tcp fill: %s", strerror(errno));
		tcp_sent += (size_t)n;
	}
	if (fcntl(c, F_SETFL, fl))
		die("fcntl: %s", strerror(errno));
	send_fd(s, c, "a");
	close(c);
}

/* Read `fd` to end of file into buf (at most cap - 1 bytes kept, NUL-terminated);
 * returns the count read. */
static size_t read_to_end(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	for (;;) {
		char b[4096];
		ssize_t n = read(fd, b, sizeof b);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read: %s", strerror(errno));
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++, got++)
			if (got < cap - 1)
				buf[got] = b[i];
	}
	buf[got < cap - 1 ? got : cap - 1] = 0;
	return got;
}

static void receive_tcp(int s, int go)
{
	char buf[64], c;
	int fd = recv_fd(s, buf, sizeof buf);
	out("C: received\n");
	if (read(go, &c, 1) != 1)
		die("go: %s", strerror(errno));
	char data[8] = "";
	if (fd < 0 || recv(fd, data, 4, MSG_WAITALL) != 4)
		die("tcp recv: %s", strerror(errno));
	out("C: a came with fd %d: a TCP connection, no error pending: %s; read [%s]\n", fd,
	    opt(fd, SOL_SOCKET, SO_ERROR) == 0 ? "yes" : "no", data);
	if (shutdown(fd, SHUT_WR))
		die("shutdown: %s", strerror(errno));
	read_to_end(fd, buf, sizeof buf);
	out("C: then [%s], then end of file\n", buf);
	close(fd);
}

/* P's side of TYPE tcpconn, once C took its end. */
static void finish_tcp(void)
{
	size_t got = 0, bad = 0;
	char head[5] = "";
	for (;;) {
		unsigned char b[4096];
		ssize_t n = read(tcp_a, b, sizeof b);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("tcp read: %s", strerror(errno));
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++, got++) {
			if (got < 4)
				head[got] = (char)b[i];
			else if (b[i] != pattern(got - 4))
				bad++;
		}
	}
	out("P: a read [%s] and then %s of what c wrote, in order: %s; then end of file\n",
	    head, got == tcp_sent + 4 ? "all" : "not all", bad ? "no" : "yes");
	if (write(tcp_a, "pong", 4) != 4)
		die("tcp write: %s", strerror(errno));
	close(tcp_a);
}

/* TYPE devtty: P's pseudo-terminal pair, its controlling terminal. */
static int tty_m = -1, tty_s = -1;

static void make_ctty(void)
{
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	tty_m = posix_openpt(O_RDWR | O_NOCTTY);
	if (tty_m < 0 || grantpt(tty_m) || unlockpt(tty_m))
		die("ptmx: %s", strerror(errno));
	tty_s = open(ptsname(tty_m), O_RDWR | O_NOCTTY);
	struct termios t;
	if (tty_s < 0 || ioctl(tty_s, TIOCSCTTY, 0) || tcgetattr(tty_s, &t))
		die("slave: %s", strerror(errno));
	cfmakeraw(&t);
	if (tcsetattr(tty_s, TCSANOW, &t))
		die("tcsetattr: %s", strerror(errno));
}

static void send_devtty(int s)
{
	int t = open("/dev/tty", O_RDWR);
	if (t < 0)
		die("/dev/tty: %s", strerror(errno));
	send_fd(s, t, "a");
	close(t);
}

static void receive_devtty(int s, int go)
{
	char buf[64], c;
	int fd = recv_fd(s, buf, sizeof buf);
	out("C: received\n");
	if (read(go, &c, 1) != 1)
		die("go: %s", strerror(errno));
	unsigned dev = 0;
	struct stat st;
	if (fd < 0 || ioctl(fd, TIOCGDEV, &dev) || fstat(tty_s, &st))
		die("TIOCGDEV: %s", strerror(errno));
	char link[64] = "";
	snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(buf, link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	out("C: a came with fd %d: %s, leading to the pair's slave: %s\n", fd, link,
	    major(st.st_rdev) == ((dev >> 8) & 0xfff) &&
		    minor(st.st_rdev) == ((dev & 0xff) | ((dev >> 12) & 0xfff00))
		? "yes"
		: "no");
	if (write(fd, "ping", 4) != 4)
		die("write /dev/tty: %s", strerror(errno));
	char got[8] = "";
	size_t have = 0;
	while (have < 4) {
		ssize_t r = read(tty_m, got + have, 4 - have);
		if (r <= 0)
			die("read master: %s", strerror(errno));
		have += (size_t)r;
	}
	out("C: the master read [%s]\n", got);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: uinflight TYPE FILE");
	const char *t = argv[1];
	int kinds = !strcmp(t, "kinds"), ep_mode = !strcmp(t, "epoll"), pty = !strcmp(t, "pty");
	int out_fd = !strcmp(t, "epollout") ? (int)arg_long(argc, argv, 3, -1) : -1;
	int tcp = !strcmp(t, "tcpconn"), devtty = !strcmp(t, "devtty");
	int devtty_else = !strcmp(t, "devttyelse");
	int refused = out_fd >= 0 || devtty_else;

	int type = !strcmp(t, "stream")		   ? SOCK_STREAM
		   : !strcmp(t, "dgram") || kinds ? SOCK_DGRAM
						   : SOCK_SEQPACKET;
	int s[2], x[2], y[2], go[2], rd[2];
	if (socketpair(AF_UNIX, type, 0, s) || socketpair(AF_UNIX, SOCK_STREAM, 0, x) ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, y) || pipe(go) || pipe(rd))
		die("socketpair: %s", strerror(errno));
	if (write(x[0], "queued", 6) != 6)
		die("write: %s", strerror(errno));
	int q[2] = {-1, -1};
	if ((ep_mode || out_fd >= 0) && pipe(q))
		die("pipe: %s", strerror(errno));
	if (devtty || devtty_else)
		make_ctty();
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
		if (out_fd >= 0)
			close(out_fd);
		if (q[0] >= 0 && (dup2(q[0], 20) != 20 || close(q[0])))
			die("move q: %s", strerror(errno));
		if (devtty_else && setsid() < 0)
			die("setsid: %s", strerror(errno));
		if (write(rd[1], "r", 1) != 1)
			die("ready: %s", strerror(errno));
		close(rd[1]);
		char c;
		if (read(go[0], &c, 1) != 1)
			die("go: %s", strerror(errno));
		if (refused) {
			char buf[8], link[64] = "";
			int fd = recv_fd(s[1], buf, sizeof buf);
			snprintf(buf, sizeof buf, "%d", fd);
			char path[64];
			snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
			ssize_t n = readlink(path, link, sizeof link - 1);
			link[n > 0 ? n : 0] = 0;
			if (!strncmp(link, "socket:", 7))
				link[7] = 0;
			out("C: a came with fd %d: %s\n", fd, link);
		} else if (kinds) {
			receive_kinds(s[1], go[0], argv[2]);
		} else if (ep_mode) {
			receive_epoll(s[1], go[0], s[0], q[0], q[1]);
		} else if (pty) {
			receive_pty(s[1], go[0]);
		} else if (tcp) {
			receive_tcp(s[1], go[0]);
		} else if (devtty) {
			receive_devtty(s[1], go[0]);
		} else {
			receive(s[1], x[0]);
		}
		_exit(0);
	}
	close(go[0]);
	close(rd[1]);
	close(s[1]);
	close(x[0]);
	if (ep_mode || out_fd >= 0) {
		close(q[1]);
		int ep = epoll_create1(0), ev = eventfd(0, EFD_NONBLOCK);
		if (ep < 0 || ev < 0)
			die("epoll: %s", strerror(errno));
		epoll_add(ep, s[0], EPOLLIN, 0x10);
		epoll_add(ep, q[0], EPOLLIN, 0x20);
		epoll_add(ep, ev, EPOLLIN | EPOLLET, 0x30);
		if (out_fd >= 0) {
			epoll_add(ep, out_fd, EPOLLOUT, 0x40);
			close(out_fd);
		}
		close(q[0]);
		send_fd(s[0], ep, "a");
		close(ep);
		if (ep_mode) {
			send_fd(s[0], ev, "b");
			send_fd(s[0], -1, "f");
		}
		close(ev);
	} else if (tcp) {
		send_tcp(s[0]);
	} else if (devtty || devtty_else) {
		send_devtty(s[0]);
	} else if (kinds) {
		send_kinds(s[0], argv[2]);
	} else if (pty) {
		send_pty(s[0]);
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
	if ((kinds || ep_mode || pty || tcp || devtty) &&
	    (read(0, line, sizeof line) <= 0 || write(go[1], "g", 1) != 1))
		die("second go: %s", strerror(errno));
	if (tcp)
		finish_tcp();
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("C exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
