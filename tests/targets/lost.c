/* lost MODE GO_FILE [STEPS]
 *
 * Processes whose state a dump once recorded and a restore then could not give back
 * (issue 13). Each MODE sets up its state, prints a line per step (STEPS, default 30,
 * every 20 ms) describing it as the kernel shows it, then waits for GO_FILE, does the
 * mode's final action (which needs the state to be exactly as it was) and prints the
 * outcome, then "done".
 *
 *   killedzombie  a child killed by SIGKILL, not reaped until GO: its status then
 *   orphangroup   a child M in a process group whose leader L has exited and been reaped
 *   procfd        a descriptor on /proc/CHILD/comm: read again each step
 *   procthread    a descriptor on /proc/PID/task/TID/comm of one of its own threads
 *   freebind      a UDP socket with IP_FREEBIND bound to 192.0.2.77:PORT (not on the host)
 *   tcpsame       a TCP listener, a connection to it and the accepted end; the listener's
 *                 descriptor is above the accepted one's (dup2 to 20): at GO a second
 *                 connection is accepted and data echoed both ways
 *   rmdir         a descriptor on a directory that was then removed
 *   threadsig     a thread with SIGUSR1 pending to it alone (blocked there): at GO it
 *                 takes it with sigwaitinfo
 *   setownout     a pipe whose I/O signals go to the parent (F_SETOWN), a process
 *                 outside the tree
 *   bigq          a TCP connection with megabytes unread in its queues: at GO the reader
 *                 drains it and checks every byte
 */
#include "util.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static const char *go;
static long steps = 30;

static void wait_go(void)
{
	for (int i = 0; access(go, F_OK) != 0; i++) {
		if (i > 6000) {
			out("gave up waiting for %s\n", go);
			exit(9);
		}
		sleep_ms(5);
	}
}

static void run_steps(void (*show)(long))
{
	for (long i = 0; i < steps; i++) {
		show(i);
		sleep_ms(20);
	}
	wait_go();
}

/* ---- killedzombie ---- */
static pid_t kz;
static void kz_show(long i)
{
	siginfo_t si;
	memset(&si, 0, sizeof si);
	int r = waitid(P_PID, (id_t)kz, &si, WEXITED | WNOHANG | WNOWAIT);
	out("step %ld: zombie waitable %d killed %d by %d\n", i, r == 0 && si.si_pid == kz,
	    si.si_code == CLD_KILLED, si.si_status);
}
static void killedzombie(void)
{
	kz = fork();
	if (kz < 0)
		die("fork: %s", strerror(errno));
	if (kz == 0) {
		kill(getpid(), SIGKILL);
		_exit(1);
	}
	siginfo_t si;
	while (waitid(P_PID, (id_t)kz, &si, WEXITED | WNOWAIT) != 0)
		if (errno != EINTR)
			die("waitid: %s", strerror(errno));
	run_steps(kz_show);
	int st;
	if (waitpid(kz, &st, 0) != kz)
		die("waitpid: %s", strerror(errno));
	out("reaped: signaled %d signal %d core %d\n", WIFSIGNALED(st), WTERMSIG(st),
	    WCOREDUMP(st));
}

/* ---- orphangroup ---- */
static pid_t og_leader, og_member;
static void og_show(long i)
{
	out("step %ld: member in the old leader's group %d\n", i, getpgid(og_member) == og_leader);
}
static void orphangroup(void)
{
	og_leader = fork();
	if (og_leader == 0) {
		setpgid(0, 0);
		pause();
		_exit(0);
	}
	setpgid(og_leader, og_leader);
	og_member = fork();
	if (og_member == 0) {
		if (setpgid(0, og_leader) != 0)
			die("setpgid: %s", strerror(errno));
		for (;;)
			pause();
	}
	setpgid(og_member, og_leader);
	kill(og_leader, SIGTERM);
	waitpid(og_leader, NULL, 0);
	run_steps(og_show);
	kill(og_member, SIGTERM);
	int st;
	waitpid(og_member, &st, 0);
	out("member ended by signal %d\n", WTERMSIG(st));
}

/* ---- procfd ---- */
static int pf_fd;
static pid_t pf_child;
static void pf_show(long i)
{
	char buf[64];
	ssize_t n = pread(pf_fd, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	out("step %ld: child's comm %s", i, buf);
}
static void procfd(void)
{
	pf_child = fork();
	if (pf_child == 0) {
		syscall(SYS_prctl, 15 /* PR_SET_NAME */, "lostchild", 0, 0, 0);
		for (;;)
			pause();
	}
	sleep_ms(50);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pf_child);
	pf_fd = open(path, O_RDONLY);
	if (pf_fd < 0)
		die("open %s: %s", path, strerror(errno));
	run_steps(pf_show);
	pf_show(-1);
	kill(pf_child, SIGTERM);
	waitpid(pf_child, NULL, 0);
}

/* ---- procthread ---- */
static volatile int pt_ready;
static void *pt_thread(void *arg)
{
	(void)arg;
	syscall(SYS_prctl, 15 /* PR_SET_NAME */, "lostthread", 0, 0, 0);
	pt_ready = 1;
	for (;;)
		pause();
	return NULL;
}
static void procthread(void)
{
	pthread_t t;
	pthread_create(&t, NULL, pt_thread, NULL);
	while (!pt_ready)
		sleep_ms(1);
	char path[64];
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pf_fd = -1;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%d/comm", atoi(e->d_name));
		pf_fd = open(path, O_RDONLY);
	}
	if (pf_fd < 0)
		die("no thread's comm");
	run_steps(pf_show);
	pf_show(-1);
}

/* ---- freebind ---- */
static int fb_fd;
static void fb_show(long i)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	int on = 0;
	socklen_t ol = sizeof on;
	getsockname(fb_fd, (struct sockaddr *)&a, &l);
	getsockopt(fb_fd, IPPROTO_IP, IP_FREEBIND, &on, &ol);
	out("step %ld: bound to %s:%d freebind %d\n", i, inet_ntoa(a.sin_addr), ntohs(a.sin_port),
	    on);
}
static void freebind(void)
{
	fb_fd = socket(AF_INET, SOCK_DGRAM, 0);
	int on = 1;
	if (setsockopt(fb_fd, IPPROTO_IP, IP_FREEBIND, &on, sizeof on) != 0)
		die("IP_FREEBIND: %s", strerror(errno));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(47391) };
	inet_pton(AF_INET, "192.0.2.77", &a.sin_addr);
	if (bind(fb_fd, (struct sockaddr *)&a, sizeof a) != 0)
		die("bind: %s", strerror(errno));
	run_steps(fb_show);
	fb_show(-1);
}

/* ---- tcpsame ---- */
static int ts_listen = 20, ts_client, ts_accepted;
static void ts_show(long i)
{
	char c = (char)('a' + i % 26), d = 0;
	if (write(ts_client, &c, 1) != 1 || read(ts_accepted, &d, 1) != 1)
		die("echo: %s", strerror(errno));
	out("step %ld: sent %c got %c\n", i, c, d);
}
static int tcp_port(int fd, int peer)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	if (peer)
		getpeername(fd, (struct sockaddr *)&a, &l);
	else
		getsockname(fd, (struct sockaddr *)&a, &l);
	return ntohs(a.sin_port);
}
static int connect_to(int port)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
		die("connect: %s", strerror(errno));
	return c;
}
static int listener(void)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0)
		die("listen: %s", strerror(errno));
	return l;
}
static void tcpsame(void)
{
	int l = listener();
	ts_client = connect_to(tcp_port(l, 0));
	ts_accepted = accept(l, NULL, NULL);
	if (ts_accepted < 0)
		die("accept: %s", strerror(errno));
	dup2(l, ts_listen);
	close(l);
	out("same port %d\n", tcp_port(ts_accepted, 0) == tcp_port(ts_listen, 0));
	run_steps(ts_show);
	int c2 = connect_to(tcp_port(ts_listen, 0));
	int a2 = accept(ts_listen, NULL, NULL);
	char buf[8] = { 0 };
	if (a2 < 0 || write(c2, "new", 3) != 3 || read(a2, buf, 3) != 3)
		die("second connection: %s", strerror(errno));
	out("second connection: %s, same port %d\n", buf, tcp_port(a2, 0) == tcp_port(c2, 1));
	ts_show(99);
}

/* ---- rmdir ---- */
static int rd_fd;
static void rd_show(long i)
{
	struct stat st;
	fstat(rd_fd, &st);
	out("step %ld: dir links %d\n", i, (int)st.st_nlink);
}
static void removed_dir(void)
{
	char path[64];
	snprintf(path, sizeof path, "lost-dir-%d", (int)getpid());
	if (mkdir(path, 0700) != 0)
		die("mkdir: %s", strerror(errno));
	rd_fd = open(path, O_RDONLY | O_DIRECTORY);
	if (rd_fd < 0 || rmdir(path) != 0)
		die("open/rmdir: %s", strerror(errno));
	run_steps(rd_show);
	rd_show(-1);
}

/* ---- setownout ---- */
static int so_fd;
static void so_show(long i)
{
	out("step %ld: owner is the parent %d\n", i, fcntl(so_fd, F_GETOWN) == getppid());
}
static void setownout(void)
{
	int p[2];
	if (pipe(p) || fcntl(p[0], F_SETOWN, getppid()))
		die("pipe/F_SETOWN: %s", strerror(errno));
	so_fd = p[0];
	run_steps(so_show);
	so_show(-1);
}

/* ---- threadsig ---- */
static pid_t tg_tid;
static volatile int tg_ready, tg_go;
static void *tg_thread(void *arg)
{
	(void)arg;
	tg_tid = (pid_t)syscall(SYS_gettid);
	tg_ready = 1;
	while (!tg_go)
		sleep_ms(1);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	siginfo_t si;
	struct timespec t = { 5, 0 };
	int r = sigtimedwait(&s, &si, &t);
	out("thread: took signal %d value %d\n", r, si.si_value.sival_int);
	return NULL;
}
static void tg_show(long i)
{
	sigset_t s;
	sigpending(&s);
	out("step %ld: main sees SIGUSR1 pending %d\n", i, sigismember(&s, SIGUSR1));
}
static void threadsig(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_BLOCK, &s, NULL);
	pthread_t t;
	pthread_create(&t, NULL, tg_thread, NULL);
	while (!tg_ready)
		sleep_ms(1);
	union sigval v = { .sival_int = 4242 };
	if (pthread_sigqueue(t, SIGUSR1, v) != 0)
		die("pthread_sigqueue");
	run_steps(tg_show);
	tg_go = 1;
	pthread_join(t, NULL);
	tg_show(-1);
}

/* ---- bigq ---- */
#define BIGQ (6 << 20)
static int bq_w, bq_r;
static long bq_sent;
static void bq_show(long i)
{
	out("step %ld: queued\n", i);
}
static unsigned char bq_byte(long i)
{
	return (unsigned char)(i * 7 + i / 4099);
}
static void bigq(void)
{
	int l = listener();
	bq_w = connect_to(tcp_port(l, 0));
	bq_r = accept(l, NULL, NULL);
	close(l);
	fcntl(bq_w, F_SETFL, O_NONBLOCK);
	static unsigned char buf[1 << 16];
	for (int idle = 0; bq_sent < BIGQ && idle < 50;) {
		for (size_t k = 0; k < sizeof buf; k++)
			buf[k] = bq_byte(bq_sent + (long)k);
		ssize_t n = write(bq_w, buf, sizeof buf);
		if (n > 0) {
			bq_sent += n;
			idle = 0;
		} else {
			idle++;
			sleep_ms(10);
		}
	}
	out("queued more than 2 MiB %d\n", bq_sent > (2 << 20));
	run_steps(bq_show);
	long got = 0, bad = 0;
	fcntl(bq_w, F_SETFL, 0);
	while (got < bq_sent) {
		ssize_t n = read(bq_r, buf, sizeof buf);
		if (n <= 0)
			die("read: %s", n < 0 ? strerror(errno) : "EOF");
		for (ssize_t k = 0; k < n; k++)
			bad += buf[k] != bq_byte(got + k);
		got += n;
	}
	out("read all %d, bad bytes %ld\n", got == bq_sent, bad);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: lost MODE GO_FILE [STEPS]");
	go = argv[2];
	if (argc > 3)
		steps = atol(argv[3]);
	const char *m = argv[1];
	if (!strcmp(m, "killedzombie"))
		killedzombie();
	else if (!strcmp(m, "orphangroup"))
		orphangroup();
	else if (!strcmp(m, "procfd"))
		procfd();
	else if (!strcmp(m, "procthread"))
		procthread();
	else if (!strcmp(m, "freebind"))
		freebind();
	else if (!strcmp(m, "tcpsame"))
		tcpsame();
	else if (!strcmp(m, "rmdir"))
		removed_dir();
	else if (!strcmp(m, "setownout"))
		setownout();
	else if (!strcmp(m, "threadsig"))
		threadsig();
	else if (!strcmp(m, "bigq"))
		bigq();
	else
		die("unknown mode %s", m);
	out("done\n");
	return 0;
}
