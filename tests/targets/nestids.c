/* nestids: a process of a PID namespace nested inside the tree that names processes and
 * threads by their IDs, driven by lines on stdin.
 *
 * The root R calls unshare(CLONE_NEWPID) and forks N, PID 1 of the new namespace, which
 * leads a process group of its own (1 there) and forks K (PID 2 there, in N's group; K
 * waits in a read). N holds:
 *   fd 20  a pidfd of K (its child, PID 2 in N's namespace)
 *   fd 21  a pidfd of itself
 *   fd 22/23  a pipe whose read end (O_ASYNC, F_SETSIG SIGRTMIN+1) signals N itself
 *             (F_SETOWN getpid(): 1)
 *   fd 24/25  a socket pair whose end 24 (O_ASYNC, F_SETSIG SIGRTMIN+2) signals N's
 *             process group (F_SETOWN -getpgrp(): -1), so N and K
 *   fd 26/27  a pipe whose read end (O_ASYNC, F_SETSIG SIGRTMIN+3) signals N's main
 *             thread (F_SETOWN_EX F_OWNER_TID)
 * and runs a second thread T and two POSIX timers, both disarmed: one SIGEV_THREAD_ID
 * (SIGUSR1 to T), one SIGEV_THREAD (glibc runs its callback on a helper thread, which
 * the kernel timer names by its TID).
 *
 * stdin commands to R (relayed to N):
 *   check  N tests each of them and prints what it found: the pidfds reach K and N
 *          (pidfd_send_signal; K is N's child for waitid(P_PIDFD)), each descriptor's I/O
 *          signal reaches its owner (and, for the group, K), the SIGEV_THREAD_ID timer's
 *          signal arrives on T, the SIGEV_THREAD timer's callback runs; "checked N".
 *   creds  N reads the message K queued on fd 28 before it started (a socket pair N
 *          holds both ends of, SO_PASSCRED on fd 28) and prints its sender as N's
 *          namespace shows it (K: 2) with its uid and gid.
 *   exit   N ends K, reaps it and exits 0; R reaps N and exits 0.
 * N prints "ready" once everything is set up. Nothing printed depends on host IDs.
 *
 * With the argument `outside`, N also holds (at fd 30) a pidfd of R's parent, a process
 * outside the tree; with `hidden`, a pidfd of R (in the tree, but not in N's namespace);
 * with `owner-outside`, a pipe (fd 31) whose I/O signals go to R's parent; with
 * `creds-hidden`, a socket pair (fds 32, 33) with a message from R queued on 32, with R's
 * credentials (SO_PASSCRED). R takes them
 * before it forks N and closes its own copies: dump refuses N, naming the descriptor. */
#include "util.h"
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static volatile sig_atomic_t got_usr2_n, got_io[4], io_on_main, timer_on_t, thread_cb;
static pid_t t_tid;
static int k_ack[2]; /* K -> N: 's' for SIGUSR2, 'g' for the group's I/O signal */
static int cb_pipe[2];

static void on_usr2(int sig)
{
	(void)sig;
	got_usr2_n = 1;
}

static void on_io(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	int k = sig - SIGRTMIN;
	if (k >= 1 && k <= 3 && si->si_fd >= 20)
		got_io[k] = 1;
	if (k == 3)
		io_on_main = (pid_t)syscall(SYS_gettid) == getpid();
}

static void on_timer(int sig)
{
	(void)sig;
	timer_on_t = (pid_t)syscall(SYS_gettid) == t_tid;
}

static void k_on_usr2(int sig)
{
	(void)sig;
	write_all(k_ack[1], "s", 1);
}

static void k_on_group_io(int sig)
{
	(void)sig;
	write_all(k_ack[1], "g", 1);
}

static void *t_main(void *arg)
{
	(void)arg;
	t_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void cb(union sigval v)
{
	(void)v;
	thread_cb = 1;
	write_all(cb_pipe[1], "c", 1);
}

/* Wait up to 5 s for `flag`. */
static int wait_flag(volatile sig_atomic_t *flag)
{
	for (int i = 0; i < 5000 && !*flag; i++)
		sleep_ms(1);
	return *flag != 0;
}

/* Read one byte of `fd` within 5 s; '-' if none. */
static char read_within(int fd)
{
	for (int i = 0; i < 5000; i++) {
		char c;
		ssize_t n = read(fd, &c, 1);
		if (n == 1)
			return c;
		sleep_ms(1);
	}
	return '-';
}

static void async_owner(int fd, int sig, int type, pid_t who)
{
	struct f_owner_ex o = { .type = type, .pid = who };
	if (fcntl(fd, F_SETOWN_EX, &o) != 0 || fcntl(fd, F_SETSIG, sig) != 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) != 0)
		die("owner of fd %d: %s", fd, strerror(errno));
}

static void place(int fd, int at)
{
	if (fd != at) {
		if (dup2(fd, at) != at)
			die("dup2: %s", strerror(errno));
		close(fd);
	}
}

static int k_main(int in)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = k_on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = k_on_group_io;
	sigaction(SIGRTMIN + 2, &sa, NULL);
	char c;
	for (;;) {
		ssize_t n = read(in, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		return 0;
	}
}

static int n_main(int cmd)
{
	if (setpgid(0, 0) != 0)
		die("setpgid: %s", strerror(errno));
	int k_in[2], cs[2], one = 1;
	if (pipe(k_in) != 0 || pipe2(k_ack, O_NONBLOCK) != 0 || pipe2(cb_pipe, O_NONBLOCK) != 0)
		die("pipe: %s", strerror(errno));
	/* A socket pair N keeps both ends of, fd 28 showing credentials, on which K queues a
	 * message (with its credentials) before it starts. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, cs) != 0 ||
	    setsockopt(cs[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
		die("socketpair: %s", strerror(errno));
	place(cs[0], 28);
	place(cs[1], 29);
	/* K's handlers must be in place before N signals it: K acknowledges with 'r'. */
	pid_t k = fork();
	if (k < 0)
		die("fork: %s", strerror(errno));
	if (k == 0) {
		close(k_in[1]);
		close(cmd);
		write_all(29, "from K", 6);
		close(28);
		close(29);
		write_all(k_ack[1], "r", 1);
		_exit(k_main(k_in[0]));
	}
	close(k_in[0]);
	if (read_within(k_ack[0]) != 'r')
		die("K did not start");
	if (getpid() != 1 || k != 2 || getpgrp() != 1)
		die("N: unexpected IDs in its namespace (pid %d, K %d, pgrp %d)", (int)getpid(), (int)k,
		    (int)getpgrp());

	struct sigaction sa = { 0 };
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_timer;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = NULL;
	sa.sa_sigaction = on_io;
	sa.sa_flags = SA_SIGINFO;
	for (int s = 1; s <= 3; s++)
		sigaction(SIGRTMIN + s, &sa, NULL);

	place((int)syscall(SYS_pidfd_open, k, 0), 20);
	place((int)syscall(SYS_pidfd_open, getpid(), 0), 21);
	int p[2], sp[2], q[2];
	if (pipe(p) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0 || pipe(q) != 0)
		die("pipe: %s", strerror(errno));
	place(p[0], 40);
	place(p[1], 41);
	place(sp[0], 42);
	place(sp[1], 43);
	place(q[0], 44);
	place(q[1], 45);
	place(40, 22);
	place(41, 23);
	place(42, 24);
	place(43, 25);
	place(44, 26);
	place(45, 27);
	async_owner(22, SIGRTMIN + 1, F_OWNER_PID, getpid());
	async_owner(24, SIGRTMIN + 2, F_OWNER_PGRP, getpgrp());
	async_owner(26, SIGRTMIN + 3, F_OWNER_TID, (pid_t)syscall(SYS_gettid));

	pthread_t th;
	if (pthread_create(&th, NULL, t_main, NULL) != 0)
		die("pthread_create");
	while (t_tid == 0)
		sleep_ms(1);
	timer_t tid_timer, cb_timer;
	struct sigevent ev = { 0 };
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGUSR1;
	ev._sigev_un._tid = t_tid;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tid_timer) != 0)
		die("timer_create(SIGEV_THREAD_ID): %s", strerror(errno));
	struct sigevent ev2 = { 0 };
	ev2.sigev_notify = SIGEV_THREAD;
	ev2.sigev_notify_function = cb;
	if (timer_create(CLOCK_MONOTONIC, &ev2, &cb_timer) != 0)
		die("timer_create(SIGEV_THREAD): %s", strerror(errno));
	write_all(1, "ready\n", 6);

	char line[64];
	size_t len = 0;
	int round = 0;
	for (;;) {
		char c;
		ssize_t n = read(cmd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (c != '\n') {
			if (len < sizeof line - 1)
				line[len++] = c;
			continue;
		}
		line[len] = 0;
		len = 0;
		if (strcmp(line, "exit") == 0)
			break;
		if (strcmp(line, "creds") == 0) {
			/* The message K queued, with its sender as N's namespace shows it. */
			char data[16] = { 0 }, ctl[CMSG_SPACE(sizeof(struct ucred))];
			struct iovec iov = { data, sizeof data - 1 };
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
					     .msg_controllen = sizeof ctl };
			ssize_t got = recvmsg(28, &mh, MSG_DONTWAIT);
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			struct ucred uc = { 0 };
			if (got > 0 && c && c->cmsg_type == SCM_CREDENTIALS)
				memcpy(&uc, CMSG_DATA(c), sizeof uc);
			out("creds: '%s' from pid %d uid %d gid %d\n", got > 0 ? data : "(none)", (int)uc.pid,
			    (int)uc.uid, (int)uc.gid);
			continue;
		}
		if (strcmp(line, "check") != 0)
			continue;
		round++;
		/* pidfds */
		got_usr2_n = 0;
		int r20 = (int)syscall(SYS_pidfd_send_signal, 20, SIGUSR2, NULL, 0);
		out("pidfd 20: send %d, K answers %c\n", r20, read_within(k_ack[0]));
		int r21 = (int)syscall(SYS_pidfd_send_signal, 21, SIGUSR2, NULL, 0);
		out("pidfd 21: send %d, N got it %d\n", r21, wait_flag(&got_usr2_n));
		siginfo_t si = { 0 };
		int w = waitid(P_PIDFD, 20, &si, WEXITED | WNOHANG);
		out("pidfd 20: waitid %d (K is N's child, running)\n", w);
		/* I/O signals */
		for (int s = 1; s <= 3; s++)
			got_io[s] = 0;
		io_on_main = 0;
		write_all(23, "x", 1);
		out("fd 22 (owner N): signal %d\n", wait_flag(&got_io[1]));
		write_all(25, "x", 1);
		out("fd 24 (owner group 1): N %d, K answers %c\n", wait_flag(&got_io[2]),
		    read_within(k_ack[0]));
		write_all(27, "x", 1);
		out("fd 26 (owner N's main thread): signal %d on main %d\n", wait_flag(&got_io[3]),
		    (int)io_on_main);
		char buf[16];
		while (read(22, buf, sizeof buf) > 0 || read(24, buf, sizeof buf) > 0 ||
		       read(26, buf, sizeof buf) > 0)
			;
		/* timers */
		struct itimerspec its = { .it_value = { .tv_nsec = 10 * 1000 * 1000 } };
		timer_on_t = 0;
		if (timer_settime(tid_timer, 0, &its, NULL) != 0)
			die("timer_settime: %s", strerror(errno));
		out("timer SIGEV_THREAD_ID: on T %d\n", wait_flag(&timer_on_t));
		thread_cb = 0;
		if (timer_settime(cb_timer, 0, &its, NULL) != 0)
			die("timer_settime: %s", strerror(errno));
		out("timer SIGEV_THREAD: callback %d %c\n", wait_flag(&thread_cb), read_within(cb_pipe[0]));
		out("checked %d\n", round);
	}
	close(k_in[1]);
	int st = 0;
	if (waitpid(k, &st, 0) != k)
		die("waitpid K: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	int extra = -1, extra_at = -1;
	if (strcmp(mode, "outside") == 0) {
		extra = (int)syscall(SYS_pidfd_open, getppid(), 0);
		extra_at = 30;
	} else if (strcmp(mode, "hidden") == 0) {
		extra = (int)syscall(SYS_pidfd_open, getpid(), 0);
		extra_at = 30;
	} else if (strcmp(mode, "creds-hidden") == 0) {
		/* A pair with a message from R queued on its end 32 (showing credentials): N
		 * inherits both ends, and its namespace does not show R. */
		int cp[2], one = 1;
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, cp) != 0 ||
		    setsockopt(cp[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
			die("socketpair: %s", strerror(errno));
		write_all(cp[1], "from R", 6);
		place(cp[1], 33);
		extra = cp[0];
		extra_at = 32;
	} else if (strcmp(mode, "owner-outside") == 0) {
		int p[2];
		if (pipe(p) != 0)
			die("pipe: %s", strerror(errno));
		close(p[1]);
		if (fcntl(p[0], F_SETOWN, getppid()) != 0)
			die("F_SETOWN: %s", strerror(errno));
		extra = p[0];
		extra_at = 31;
	}
	if (extra_at >= 0) {
		if (extra < 0)
			die("%s: %s", mode, strerror(errno));
		place(extra, extra_at);
	}
	int cmd[2];
	if (pipe(cmd) != 0)
		die("pipe: %s", strerror(errno));
	if (unshare(CLONE_NEWPID) != 0)
		die("unshare(CLONE_NEWPID): %s", strerror(errno));
	pid_t n = fork();
	if (n < 0)
		die("fork: %s", strerror(errno));
	if (n == 0) {
		close(cmd[1]);
		_exit(n_main(cmd[0]));
	}
	close(cmd[0]);
	if (extra_at >= 0)
		close(extra_at);
	if (extra_at == 32)
		close(33);
	/* R relays its stdin to N. */
	char buf[256];
	for (;;) {
		ssize_t r = read(0, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		write_all(cmd[1], buf, (size_t)r);
		if (memmem(buf, (size_t)r, "exit\n", 5))
			break;
	}
	close(cmd[1]);
	int st = 0;
	if (waitpid(n, &st, 0) != n)
		die("waitpid N: %s", strerror(errno));
	out("R: N exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}
