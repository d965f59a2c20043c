/* belowns MODE... [cgroup=DIR] [sysv] [semundo] [unixsock] [conns]
 *
 * A tree whose processes below the root made namespaces of their own (issue 15). Each
 * MODE starts one child of the root:
 *
 *   net     the child makes a network namespace, brings its loopback up, binds a UDP
 *           socket (127.0.0.1:4242) and a TCP listener (127.0.0.1:4243) there, and
 *           forks two grandchildren: one stays in it (and waits), the other makes a
 *           network namespace of its own (nested) with its loopback up and a UDP socket
 *           bound to the same address (with `unixsock`, the child also holds a unix
 *           socket pair it made before it made its namespace, which ckpt refuses). With
 *           `conns`, the child also makes there, before it forks: a TCP connection to
 *           its listener, a unix stream socket pair, and a listener on the abstract
 *           name @belowns-abs with a client connected and accepted; it keeps the
 *           accepted and first ends, the grandchild that stays keeps the others and
 *           reports too ("net-peer"); each side has one 8-byte message queued for the
 *           other on each connection, which each check reads (the one the other sent
 *           last) before it queues the next one; the child's check also connects to
 *           @belowns-abs again.
 *   ipc     the child makes an IPC namespace and sets its kernel.msgmax to 12345. With
 *           `sysv`, it also makes there: a SysV segment (key 0x4242, 3 pages) it keeps
 *           attached and counts in, another (IPC_PRIVATE, 2 pages, mode 0640) with
 *           data and attached by no one, a semaphore set of 3 (values 3 5 7), a message
 *           queue (key 0x4343, two messages) and a named POSIX queue /belowq (one
 *           message, priority 3) it holds open; its check finds them all and uses
 *           them (counts in the segment, a semop up and down, a message sent and taken
 *           back). With `semundo`, it also raises semaphore 1 of the set by 2 with
 *           SEM_UNDO there (to 7, its undo adjustment -2: its exit takes it back to 5).
 *   time    the child makes a time namespace for its children with CLOCK_MONOTONIC
 *           and CLOCK_BOOTTIME 100 days ahead, and forks a grandchild in it.
 *   cgroup  the child moves into a new cgroup (cgroup=DIR: a cgroup v2 directory the
 *           test made) and makes a cgroup namespace rooted there.
 *
 * Every process that checks itself (the net child, the nested net grandchild, the ipc
 * child, the time grandchild, the cgroup child) says "ready" on its own pipe once set
 * up; the root then prints "ready". On a line "report" from stdin the root asks each of
 * them to check its own state and prints "report: " and their answers (NAME=ok or
 * NAME=bad:WHY); on "exit" or end of file it tells them all to exit (one pipe whose
 * write end only the root holds), waits for its children and exits 0. */
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <mqueue.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stddef.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#define MAXREP 8
#define AHEAD_S (100L * 86400L)

/* One process that reports: the root writes 'r' on cmd, it answers one line on res. */
struct rep {
	const char *name;
	int cmd[2];
	int res[2];
};
static struct rep reps[MAXREP];
static int nreps;
static int life[2];
static pid_t kids[8];
static int nkids;
static const char *cgdir;
static int with_sysv;
static int with_semundo;
static int with_unix;
static int with_conns;

static struct rep *new_rep(const char *name)
{
	if (nreps == MAXREP)
		die("too many reporters");
	struct rep *r = &reps[nreps++];
	r->name = name;
	if (pipe(r->cmd) != 0 || pipe(r->res) != 0)
		die("pipe: %s", strerror(errno));
	return r;
}

/* In a new process of the tree: close what only the root may hold. */
static void as_child(void)
{
	close(life[1]);
	for (int i = 0; i < nreps; i++) {
		close(reps[i].cmd[1]);
		close(reps[i].res[0]);
	}
}

static void say(struct rep *r, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		_exit(102);
	write_all(r->res[1], buf, (size_t)n);
}

/* Serve reports for `r` with `check` until the root says exit (end of `life`). */
static void serve(struct rep *r, void (*check)(struct rep *))
{
	say(r, "ready\n");
	for (;;) {
		struct pollfd p[2] = { { r->cmd[0], POLLIN, 0 }, { life[0], POLLIN, 0 } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (p[1].revents)
			return;
		char c;
		ssize_t n = read(r->cmd[0], &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		check(r);
	}
}

/* Block until the root says exit. */
static void wait_life(void)
{
	char c;
	while (read(life[0], &c, 1) < 0 && errno == EINTR)
		;
}

static void reap_all(void)
{
	while (wait(NULL) > 0 || errno == EINTR)
		;
}

static unsigned long ns_ino(const char *pid, const char *kind)
{
	char p[64];
	struct stat st;
	snprintf(p, sizeof p, "/proc/%s/ns/%s", pid, kind);
	if (stat(p, &st) != 0)
		return 0;
	return (unsigned long)st.st_ino;
}

/* Whether this process is in another namespace of `kind` than its parent. */
static int apart_from_parent(const char *kind)
{
	char pp[32];
	snprintf(pp, sizeof pp, "%d", (int)getppid());
	unsigned long mine = ns_ino("self", kind), theirs = ns_ino(pp, kind);
	return mine != 0 && theirs != 0 && mine != theirs;
}

/* ---- net ---- */

static int udp_fd, tcp_fd;

static void lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		die("SIOCGIFFLAGS: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		die("SIOCSIFFLAGS: %s", strerror(errno));
	close(s);
}

static int lo_is_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	int up = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP);
	if (s >= 0)
		close(s);
	return up;
}

static struct sockaddr_in lo_addr(int port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int bound(int type, int port)
{
	int s = socket(AF_INET, type, 0);
	struct sockaddr_in a = lo_addr(port);
	int one = 1;
	if (s < 0)
		die("socket: %s", strerror(errno));
	if (type == SOCK_STREAM)
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0)
		die("bind %d: %s", port, strerror(errno));
	if (type == SOCK_STREAM && listen(s, 4) != 0)
		die("listen: %s", strerror(errno));
	return s;
}

/* A datagram sent to 127.0.0.1:4242 arrives on `udp_fd`. */
static const char *udp_ok(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = lo_addr(4242);
	char buf[16];
	if (s < 0 || sendto(s, "ping", 4, 0, (struct sockaddr *)&a, sizeof a) != 4)
		return "udp-send";
	close(s);
	struct pollfd p = { udp_fd, POLLIN, 0 };
	if (poll(&p, 1, 2000) != 1)
		return "udp-nothing";
	if (recv(udp_fd, buf, sizeof buf, 0) != 4 || memcmp(buf, "ping", 4) != 0)
		return "udp-data";
	return NULL;
}

/* A connection to 127.0.0.1:4243 is accepted on `tcp_fd` and carries a byte. */
static const char *tcp_ok(void)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = lo_addr(4243);
	char b = 0;
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0)
		return "tcp-connect";
	int s = accept(tcp_fd, NULL, NULL);
	if (s < 0)
		return "tcp-accept";
	if (write(c, "t", 1) != 1 || read(s, &b, 1) != 1 || b != 't')
		return "tcp-data";
	close(s);
	close(c);
	return NULL;
}

static const char *conns_ok(int side);

static void check_net(struct rep *r)
{
	const char *bad = !lo_is_up()                   ? "lo-down"
			  : !apart_from_parent("net") ? "same-net-as-parent"
						      : udp_ok();
	if (!bad)
		bad = tcp_ok();
	if (!bad && with_conns)
		bad = conns_ok(0);
	if (bad)
		say(r, "%s=bad:%s\n", r->name, bad);
	else
		say(r, "%s=ok\n", r->name);
}

static void check_nested_net(struct rep *r)
{
	const char *bad = !lo_is_up()                   ? "lo-down"
			  : !apart_from_parent("net") ? "same-net-as-parent"
						      : udp_ok();
	if (bad)
		say(r, "%s=bad:%s\n", r->name, bad);
	else
		say(r, "%s=ok\n", r->name);
}

/* ---- connections in the namespace (conns) ---- */

#define ABSNAME "belowns-abs"
#define MSGLEN 8

/* The child's ends [0] (TCP accepted, pair end, @belowns-abs accepted), the
 * grandchild's [1] (TCP client, pair end, @belowns-abs client), and the listener. */
static int conn_end[2][3] = { { -1, -1, -1 }, { -1, -1, -1 } };
static int abs_fd = -1;
static int gen;
static const char *const tags[2][3] = { { "tsv", "psv", "asv" }, { "tcl", "pcl", "acl" } };

static socklen_t abs_addr(struct sockaddr_un *a)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path + 1, ABSNAME, strlen(ABSNAME));
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(ABSNAME));
}

static int abs_connect(void)
{
	struct sockaddr_un a;
	socklen_t len = abs_addr(&a);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, len) != 0) {
		if (c >= 0)
			close(c);
		return -1;
	}
	return c;
}

/* Queue message `g` of side `side` on each of its ends. */
static int queue_msgs(int side, int g)
{
	for (int i = 0; i < 3; i++) {
		char m[MSGLEN + 1];
		snprintf(m, sizeof m, "%s-%04d", tags[side][i], g);
		if (write(conn_end[side][i], m, MSGLEN) != MSGLEN)
			return -1;
	}
	return 0;
}

static void make_conns(void)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = lo_addr(4243);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0)
		die("connect 4243: %s", strerror(errno));
	conn_end[1][0] = c;
	conn_end[0][0] = accept(tcp_fd, NULL, NULL);
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0)
		die("socketpair: %s", strerror(errno));
	conn_end[0][1] = pair[0];
	conn_end[1][1] = pair[1];
	struct sockaddr_un u;
	socklen_t len = abs_addr(&u);
	abs_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (abs_fd < 0 || bind(abs_fd, (struct sockaddr *)&u, len) != 0 || listen(abs_fd, 4) != 0)
		die("@%s: %s", ABSNAME, strerror(errno));
	conn_end[1][2] = abs_connect();
	conn_end[0][2] = accept(abs_fd, NULL, NULL);
	if (conn_end[0][0] < 0 || conn_end[1][2] < 0 || conn_end[0][2] < 0)
		die("connections: %s", strerror(errno));
	if (queue_msgs(0, 0) != 0 || queue_msgs(1, 0) != 0)
		die("queue: %s", strerror(errno));
}

/* Keep the ends of side `side` (-1: none). */
static void keep_side(int side)
{
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < 3; i++)
			if (s != side && conn_end[s][i] >= 0) {
				close(conn_end[s][i]);
				conn_end[s][i] = -1;
			}
	if (side != 0 && abs_fd >= 0) {
		close(abs_fd);
		abs_fd = -1;
	}
}

/* Why side `side`'s connections do not carry what the other side queued last (NULL:
 * they do); then its next messages are queued. */
static const char *conns_ok(int side)
{
	static const char *const bad[3] = { "tcp-queue", "pair-queue", "abs-queue" };
	for (int i = 0; i < 3; i++) {
		char want[MSGLEN + 1], got[MSGLEN + 1] = { 0 };
		snprintf(want, sizeof want, "%s-%04d", tags[1 - side][i], gen);
		size_t have = 0;
		while (have < MSGLEN) {
			struct pollfd p = { conn_end[side][i], POLLIN, 0 };
			if (poll(&p, 1, 2000) != 1)
				return bad[i];
			ssize_t n = read(conn_end[side][i], got + have, MSGLEN - have);
			if (n <= 0)
				return bad[i];
			have += (size_t)n;
		}
		if (memcmp(want, got, MSGLEN) != 0)
			return bad[i];
	}
	gen++;
	if (queue_msgs(side, gen) != 0)
		return "queue";
	if (side == 0) {
		int c = abs_connect();
		if (c < 0)
			return "abs-connect";
		int s = accept(abs_fd, NULL, NULL);
		close(c);
		if (s < 0)
			return "abs-accept";
		close(s);
	}
	return NULL;
}

static void check_net_peer(struct rep *r)
{
	const char *bad = !lo_is_up() ? "lo-down" : conns_ok(1);
	if (bad)
		say(r, "%s=bad:%s\n", r->name, bad);
	else
		say(r, "%s=ok\n", r->name);
}

static void run_net(struct rep *r, struct rep *nested, struct rep *peer)
{
	int pair[2];
	/* (made in the root's network namespace, held in the child's: refused) */
	if (with_unix && socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0)
		die("socketpair: %s", strerror(errno));
	if (unshare(CLONE_NEWNET) != 0)
		die("unshare(CLONE_NEWNET): %s", strerror(errno));
	lo_up();
	udp_fd = bound(SOCK_DGRAM, 4242);
	tcp_fd = bound(SOCK_STREAM, 4243);
	if (with_conns)
		make_conns();
	pid_t g = fork();
	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0) {
		close(udp_fd);
		close(tcp_fd);
		keep_side(1);
		if (peer)
			serve(peer, check_net_peer);
		else
			wait_life();
		_exit(0);
	}
	g = fork();
	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0) {
		close(udp_fd);
		close(tcp_fd);
		keep_side(-1);
		if (unshare(CLONE_NEWNET) != 0)
			die("unshare(CLONE_NEWNET): %s", strerror(errno));
		lo_up();
		udp_fd = bound(SOCK_DGRAM, 4242);
		serve(nested, check_nested_net);
		_exit(0);
	}
	keep_side(0);
	serve(r, check_net);
	reap_all();
	_exit(0);
}

/* ---- ipc ---- */

static long read_long(const char *path)
{
	char buf[64] = { 0 };
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

/* The objects of the ipc child's namespace (with `sysv`). */
static int shm_kept, shm_loose, sem_id, msg_id;
static volatile unsigned char *kept;
static mqd_t mq = (mqd_t)-1;
static unsigned counted;

struct qmsg {
	long mtype;
	char text[16];
};

static void make_sysv(void)
{
	shm_kept = shmget(0x4242, 3 * 4096, IPC_CREAT | IPC_EXCL | 0600);
	if (shm_kept < 0)
		die("shmget: %s", strerror(errno));
	kept = shmat(shm_kept, NULL, 0);
	if (kept == (void *)-1)
		die("shmat: %s", strerror(errno));
	strcpy((char *)kept, "below-shm");
	kept[2 * 4096 + 7] = 0x5a;
	shm_loose = shmget(IPC_PRIVATE, 2 * 4096, IPC_CREAT | 0640);
	if (shm_loose < 0)
		die("shmget: %s", strerror(errno));
	char *l = shmat(shm_loose, NULL, 0);
	if (l == (void *)-1)
		die("shmat: %s", strerror(errno));
	strcpy(l + 100, "unattached");
	l[4096 + 9] = 0x33;
	shmdt(l);
	sem_id = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
	unsigned short init[3] = { 3, 5, 7 };
	union semun arg = { .array = init };
	if (sem_id < 0 || semctl(sem_id, 0, SETALL, arg) != 0)
		die("semget: %s", strerror(errno));
	msg_id = msgget(0x4343, IPC_CREAT | IPC_EXCL | 0620);
	struct qmsg one = { 1, "one" }, two = { 2, "two" };
	if (msg_id < 0 || msgsnd(msg_id, &one, 4, 0) != 0 || msgsnd(msg_id, &two, 4, 0) != 0)
		die("msgget: %s", strerror(errno));
	struct mq_attr a = { .mq_maxmsg = 4, .mq_msgsize = 32 };
	mq = mq_open("/belowq", O_RDWR | O_CREAT | O_EXCL, 0604, &a);
	if (mq == (mqd_t)-1 || mq_send(mq, "hello", 6, 3) != 0)
		die("mq_open: %s", strerror(errno));
	if (with_semundo) {
		struct sembuf up = { 1, 2, SEM_UNDO };
		if (semop(sem_id, &up, 1) != 0)
			die("semop: %s", strerror(errno));
	}
}

/* Why the namespace's objects are not as made (NULL: they are), using them. */
static const char *check_sysv(void)
{
	if (shmget(0x4242, 0, 0) != shm_kept)
		return "shm-key";
	if (strcmp((const char *)kept, "below-shm") || kept[2 * 4096 + 7] != 0x5a)
		return "shm-data";
	if (kept[64] != (unsigned char)counted)
		return "shm-count";
	kept[64] = (unsigned char)++counted;
	struct shmid_ds ds;
	if (shmctl(shm_loose, IPC_STAT, &ds) != 0 || ds.shm_nattch != 0 ||
	    ds.shm_segsz != 2 * 4096 || (ds.shm_perm.mode & 0777) != 0640)
		return "shm-loose";
	char *l = shmat(shm_loose, NULL, SHM_RDONLY);
	if (l == (void *)-1)
		return "shm-loose-attach";
	int same = !strcmp(l + 100, "unattached") && l[4096 + 9] == 0x33;
	shmdt(l);
	if (!same)
		return "shm-loose-data";
	unsigned short v[3];
	union semun arg = { .array = v };
	if (semctl(sem_id, 0, GETALL, arg) != 0 || v[0] != 3 || v[1] != (with_semundo ? 7 : 5) ||
	    v[2] != 7)
		return "sem-values";
	struct sembuf ops[2] = { { 0, 1, 0 }, { 0, -1, 0 } };
	if (semop(sem_id, ops, 2) != 0)
		return "semop";
	struct msqid_ds q;
	if (msgget(0x4343, 0) != msg_id || msgctl(msg_id, IPC_STAT, &q) != 0 || q.msg_qnum != 2)
		return "msg-queue";
	struct qmsg m = { 9, "nine" }, got;
	if (msgsnd(msg_id, &m, 5, 0) != 0 || msgrcv(msg_id, &got, sizeof got.text, 9, IPC_NOWAIT) != 5 ||
	    strcmp(got.text, "nine"))
		return "msg-use";
	struct mq_attr a;
	if (mq_getattr(mq, &a) != 0 || a.mq_curmsgs != 1 || a.mq_maxmsg != 4 || a.mq_msgsize != 32)
		return "mq-attr";
	mqd_t by_name = mq_open("/belowq", O_RDONLY);
	if (by_name == (mqd_t)-1)
		return "mq-name";
	int n = (mq_getattr(by_name, &a) == 0) ? (int)a.mq_curmsgs : -1;
	mq_close(by_name);
	if (n != 1)
		return "mq-name-attr";
	return NULL;
}

static void check_ipc(struct rep *r)
{
	long v = read_long("/proc/sys/kernel/msgmax");
	const char *why = with_sysv ? check_sysv() : NULL;
	if (v != 12345)
		say(r, "%s=bad:msgmax-%ld\n", r->name, v);
	else if (!apart_from_parent("ipc"))
		say(r, "%s=bad:same-ipc-as-parent\n", r->name);
	else if (why)
		say(r, "%s=bad:%s\n", r->name, why);
	else
		say(r, "%s=ok\n", r->name);
}

static void run_ipc(struct rep *r)
{
	if (unshare(CLONE_NEWIPC) != 0)
		die("unshare(CLONE_NEWIPC): %s", strerror(errno));
	int fd = open("/proc/sys/kernel/msgmax", O_WRONLY);
	if (fd < 0 || write(fd, "12345", 5) != 5)
		die("write msgmax: %s", strerror(errno));
	close(fd);
	if (with_sysv)
		make_sysv();
	serve(r, check_ipc);
	_exit(0);
}

/* ---- time ---- */

static long long mono_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long last_mono;

/* Its clocks are 100 days ahead of the host's and continue (no jump back, none of more
 * than a minute forward between two reports). */
static void check_time(struct rep *r)
{
	long long now = mono_ns(CLOCK_MONOTONIC), boot = mono_ns(CLOCK_BOOTTIME);
	const char *bad = NULL;
	if (now < AHEAD_S * 1000000000LL || boot < AHEAD_S * 1000000000LL)
		bad = "not-ahead";
	else if (now < last_mono)
		bad = "went-back";
	else if (now - last_mono > 60LL * 1000000000LL)
		bad = "jumped";
	else if (!apart_from_parent("time"))
		bad = "same-time-as-parent";
	last_mono = now;
	if (bad)
		say(r, "%s=bad:%s\n", r->name, bad);
	else
		say(r, "%s=ok\n", r->name);
}

static void run_time(struct rep *r)
{
	if (unshare(CLONE_NEWTIME) != 0)
		die("unshare(CLONE_NEWTIME): %s", strerror(errno));
	char off[128];
	int n = snprintf(off, sizeof off, "monotonic %ld 0\nboottime %ld 0\n", AHEAD_S, AHEAD_S);
	int fd = open("/proc/self/timens_offsets", O_WRONLY);
	if (fd < 0 || write(fd, off, (size_t)n) != n)
		die("write timens_offsets: %s", strerror(errno));
	close(fd);
	pid_t g = fork();
	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0) {
		last_mono = mono_ns(CLOCK_MONOTONIC);
		serve(r, check_time);
		_exit(0);
	}
	wait_life();
	reap_all();
	_exit(0);
}

/* ---- cgroup ---- */

static void check_cgroup(struct rep *r)
{
	char buf[512] = { 0 };
	int fd = open("/proc/self/cgroup", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	/* the unified hierarchy's line: "0::/" at the namespace's root */
	char *l = n > 0 ? strstr(buf, "0::") : NULL;
	if (!l || (l != buf && l[-1] != '\n') || strncmp(l, "0::/\n", 5) != 0)
		say(r, "%s=bad:not-at-root\n", r->name);
	else if (!apart_from_parent("cgroup"))
		say(r, "%s=bad:same-cgroupns-as-parent\n", r->name);
	else
		say(r, "%s=ok\n", r->name);
}

static void run_cgroup(struct rep *r)
{
	if (!cgdir)
		die("cgroup mode needs cgroup=DIR");
	char p[512];
	snprintf(p, sizeof p, "%s/cgroup.procs", cgdir);
	int fd = open(p, O_WRONLY);
	if (fd < 0 || write(fd, "0", 1) != 1)
		die("write %s: %s", p, strerror(errno));
	close(fd);
	if (unshare(CLONE_NEWCGROUP) != 0)
		die("unshare(CLONE_NEWCGROUP): %s", strerror(errno));
	serve(r, check_cgroup);
	_exit(0);
}

/* ---- the root ---- */

static void start(void (*run)(void *), void *arg)
{
	pid_t k = fork();
	if (k < 0)
		die("fork: %s", strerror(errno));
	if (k == 0) {
		as_child();
		run(arg);
		_exit(0);
	}
	kids[nkids++] = k;
}

static struct rep *net_rep, *nested_rep, *peer_rep;
static void go_net(void *a)
{
	(void)a;
	run_net(net_rep, nested_rep, peer_rep);
}
static void go_ipc(void *a)
{
	run_ipc(a);
}
static void go_time(void *a)
{
	run_time(a);
}
static void go_cgroup(void *a)
{
	run_cgroup(a);
}

/* One line from `fd` (up to its newline) into `buf`. */
static void read_line(int fd, char *buf, size_t len)
{
	size_t i = 0;
	while (i + 1 < len) {
		ssize_t n = read(fd, buf + i, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("a reporter went away");
		if (buf[i] == '\n')
			break;
		i++;
	}
	buf[i] = 0;
}

int main(int argc, char **argv)
{
	int net = 0, ipc = 0, tim = 0, cg = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "net"))
			net = 1;
		else if (!strcmp(argv[i], "ipc"))
			ipc = 1;
		else if (!strcmp(argv[i], "time"))
			tim = 1;
		else if (!strcmp(argv[i], "cgroup"))
			cg = 1;
		else if (!strcmp(argv[i], "sysv"))
			with_sysv = 1;
		else if (!strcmp(argv[i], "semundo"))
			with_sysv = with_semundo = 1;
		else if (!strcmp(argv[i], "unixsock"))
			with_unix = 1;
		else if (!strcmp(argv[i], "conns"))
			with_conns = 1;
		else if (!strncmp(argv[i], "cgroup=", 7))
			cgdir = argv[i] + 7;
		else
			die("unknown mode %s", argv[i]);
	}
	if (pipe(life) != 0)
		die("pipe: %s", strerror(errno));
	struct rep *ipc_rep = NULL, *time_rep = NULL, *cg_rep = NULL;
	if (net) {
		net_rep = new_rep("net");
		nested_rep = new_rep("nested-net");
		if (with_conns)
			peer_rep = new_rep("net-peer");
	}
	if (ipc)
		ipc_rep = new_rep("ipc");
	if (tim)
		time_rep = new_rep("time");
	if (cg)
		cg_rep = new_rep("cgroup");
	if (net)
		start(go_net, NULL);
	if (ipc)
		start(go_ipc, ipc_rep);
	if (tim)
		start(go_time, time_rep);
	if (cg)
		start(go_cgroup, cg_rep);
	close(life[0]);
	for (int i = 0; i < nreps; i++) {
		close(reps[i].cmd[0]);
		close(reps[i].res[1]);
	}
	char line[256];
	for (int i = 0; i < nreps; i++) {
		read_line(reps[i].res[0], line, sizeof line);
		if (strcmp(line, "ready"))
			die("%s said %s", reps[i].name, line);
	}
	out("ready\n");
	char in[64];
	size_t have = 0;
	for (;;) {
		ssize_t n = read(0, in + have, sizeof in - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		in[have] = 0;
		char *nl;
		int done = 0;
		while ((nl = strchr(in, '\n'))) {
			*nl = 0;
			if (!strcmp(in, "report")) {
				char all[1024] = "report:";
				for (int i = 0; i < nreps; i++) {
					write_all(reps[i].cmd[1], "r", 1);
					read_line(reps[i].res[0], line, sizeof line);
					strncat(all, " ", sizeof all - strlen(all) - 1);
					strncat(all, line, sizeof all - strlen(all) - 1);
				}
				out("%s\n", all);
			} else if (!strcmp(in, "exit")) {
				done = 1;
			}
			size_t used = (size_t)(nl - in) + 1;
			memmove(in, nl + 1, have - used + 1);
			have -= used;
		}
		if (done)
			break;
		if (have == sizeof in - 1)
			have = 0;
	}
	close(life[1]);
	for (int i = 0; i < nreps; i++)
		close(reps[i].cmd[1]);
	for (int i = 0; i < nkids; i++)
		waitpid(kids[i], NULL, 0);
	return 0;
}
