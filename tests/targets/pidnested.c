/* pidnested: PID namespaces nested inside a tree, driven by lines on stdin.
 *
 * The root R forks:
 *   C, which calls unshare(CLONE_NEWPID) and forks G, PID 1 of the new (nested)
 *     namespace; C then only waits for G and exits with its status. G (a counter) forks
 *     P2 and P3 (PIDs 2 and 3 there; P3 leads a process group of its own, G and P2 stay
 *     in R's group, whose leader their namespace does not show).
 *   U, which calls unshare(CLONE_NEWPID) and does not fork until told to.
 * Every process but R and C blocks in a read of a pipe.
 *
 * stdin commands to R:
 *   step  G prints a line with what it sees of itself (getpid, getppid, getpgrp,
 *         getsid, the number of PID namespaces it is in) and its count, then asks P2
 *         and P3, which print theirs in turn; R prints "ack N" once all printed.
 *   fork  U forks X, which must be PID 1 of a namespace below U's (its parent shows as
 *         0); X prints what it sees and exits 7; U prints the status; R prints "forked".
 *   exit  everyone ends: G stops P2 and P3 and reaps them, C exits with G's status, U
 *         with 0; R prints their statuses and exits 0.
 * R leads a process group of its own; it prints "ready" once everything is set up.
 * With the argument `pidfd`, P2 holds a pidfd of itself (at descriptor 20); with
 * `thread`, G runs a second thread (blocked in a read), which prints its thread ID in
 * the nested namespace at each step too. Nothing printed depends on host PIDs. */
#include "util.h"
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* The number of IDs in NSpid of /proc/self/status (0 if unreadable). */
static int levels(void)
{
	char buf[4096];
	FILE *f = fopen("/proc/self/status", "r");
	int n = 0;
	if (!f)
		return 0;
	while (fgets(buf, sizeof buf, f)) {
		if (strncmp(buf, "NSpid:", 6) == 0) {
			char *save = NULL;
			for (char *t = strtok_r(buf + 6, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
				n++;
		}
	}
	fclose(f);
	return n;
}

/* How many namespaces deeper than R's this process is. */
static int base;
/* P2 holds a pidfd of itself; G runs a second thread. */
static int with_pidfd, with_thread;
static int thread_in[2], thread_out[2];

static void *g_thread(void *arg)
{
	(void)arg;
	char c;
	long n = 0;
	while (read(thread_in[0], &c, 1) == 1) {
		out("G thread %ld: tid %d pid %d\n", ++n, (int)syscall(SYS_gettid), (int)getpid());
		write_all(thread_out[1], "a", 1);
	}
	return NULL;
}

static void whoami(const char *name, long n)
{
	out("%s %ld: pid %d ppid %d pgrp %d sid %d depth %d\n", name, n, (int)getpid(), (int)getppid(),
	    (int)getpgrp(), (int)getsid(0), levels() - base);
}

static int rd_byte(int fd, char *c)
{
	for (;;) {
		ssize_t n = read(fd, c, 1);
		if (n == 1)
			return 1;
		if (n < 0 && errno == EINTR)
			continue;
		return 0;
	}
}

static void wr_byte(int fd, char c)
{
	write_all(fd, &c, 1);
}

static int code_of(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* P2 / P3: print on each byte of `in`, answer on `out_fd`; end at EOF. */
static int leaf(const char *name, int in, int out_fd)
{
	char c;
	long n = 0;
	if (with_pidfd && strcmp(name, "P2") == 0) {
		int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (fd < 0 || dup2(fd, 20) != 20)
			die("pidfd_open: %s", strerror(errno));
		close(fd);
	}
	wr_byte(out_fd, 'r');
	while (rd_byte(in, &c)) {
		whoami(name, ++n);
		wr_byte(out_fd, 'a');
	}
	return 0;
}

/* G: the nested namespace's init. */
static int counter(int tick, int ack)
{
	int to[2][2], from[2];
	pid_t kids[2];
	if (pipe(from) != 0)
		die("pipe: %s", strerror(errno));
	for (int k = 0; k < 2; k++) {
		if (pipe(to[k]) != 0)
			die("pipe: %s", strerror(errno));
		kids[k] = fork();
		if (kids[k] < 0)
			die("fork: %s", strerror(errno));
		if (kids[k] == 0) {
			close(tick);
			close(ack);
			close(from[0]);
			for (int j = 0; j <= k; j++)
				close(to[j][1]);
			if (k == 1 && setpgid(0, 0) != 0)
				die("setpgid: %s", strerror(errno));
			_exit(leaf(k == 0 ? "P2" : "P3", to[k][0], from[1]));
		}
		close(to[k][0]);
	}
	close(from[1]);
	char c;
	for (int k = 0; k < 2; k++)
		if (!rd_byte(from[0], &c))
			die("G: a child did not start");
	if (with_thread) {
		pthread_t th;
		if (pipe(thread_in) != 0 || pipe(thread_out) != 0 ||
		    pthread_create(&th, NULL, g_thread, NULL) != 0)
			die("G: thread: %s", strerror(errno));
	}
	if (getpid() != 1 || kids[0] != 2 || kids[1] != 3)
		out("G: unexpected IDs: %d %d %d\n", (int)getpid(), (int)kids[0], (int)kids[1]);
	wr_byte(ack, 'r');
	long n = 0;
	while (rd_byte(tick, &c)) {
		whoami("G", ++n);
		if (with_thread) {
			wr_byte(thread_in[1], 's');
			if (!rd_byte(thread_out[0], &c))
				die("G: its thread is gone");
		}
		for (int k = 0; k < 2; k++) {
			wr_byte(to[k][1], 's');
			if (!rd_byte(from[0], &c))
				die("G: a child is gone");
		}
		wr_byte(ack, 'a');
	}
	int bad = 0;
	for (int k = 0; k < 2; k++) {
		int st;
		close(to[k][1]);
		if (waitpid(kids[k], &st, 0) != kids[k] || code_of(st) != 0)
			bad |= 1 << k;
	}
	out("G: children reaped, bad %d\n", bad);
	return bad;
}

/* U: unshared, forks only when told. */
static int unshared(int cmd, int ack)
{
	if (unshare(CLONE_NEWPID) != 0)
		die("unshare(CLONE_NEWPID): %s", strerror(errno));
	wr_byte(ack, 'u');
	char c;
	while (rd_byte(cmd, &c)) {
		pid_t x = fork();
		if (x < 0) {
			out("U: fork: %s\n", strerror(errno));
			wr_byte(ack, 'f');
			continue;
		}
		if (x == 0) {
			out("X: pid %d ppid %d depth %d\n", (int)getpid(), (int)getppid(), levels() - base);
			_exit(7);
		}
		int st;
		waitpid(x, &st, 0);
		out("U: its child exited %d\n", code_of(st));
		wr_byte(ack, 'f');
	}
	return 0;
}

/* C and U write their heap as R does after forking them, so that they share no page
 * of it with each other that R no longer has (restore brings back sharing between a
 * parent and its child only). */
static void own_heap(void)
{
	free(malloc(4096));
	(void)levels();
}

int main(int argc, char **argv)
{
	with_pidfd = argc > 1 && strcmp(argv[1], "pidfd") == 0;
	with_thread = argc > 1 && strcmp(argv[1], "thread") == 0;
	base = levels();
	/* R leads a group of its own (not as a session leader): G and P2 stay in it. */
	(void)setpgid(0, 0);
	int tick[2], ack[2], cmd[2];
	if (pipe(tick) != 0 || pipe(ack) != 0 || pipe(cmd) != 0)
		die("pipe: %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0) {
		own_heap();
		close(tick[1]);
		close(ack[0]);
		close(cmd[0]);
		close(cmd[1]);
		if (unshare(CLONE_NEWPID) != 0)
			die("unshare(CLONE_NEWPID): %s", strerror(errno));
		pid_t g = fork();
		if (g < 0)
			die("fork: %s", strerror(errno));
		if (g == 0)
			_exit(counter(tick[0], ack[1]));
		close(tick[0]);
		close(ack[1]);
		int st;
		while (waitpid(g, &st, 0) < 0 && errno == EINTR)
			;
		_exit(code_of(st));
	}
	pid_t u = fork();
	if (u < 0)
		die("fork: %s", strerror(errno));
	if (u == 0) {
		own_heap();
		close(tick[0]);
		close(tick[1]);
		close(ack[0]);
		close(cmd[1]);
		_exit(unshared(cmd[0], ack[1]));
	}
	close(tick[0]);
	close(ack[1]);
	close(cmd[0]);
	char b;
	for (int k = 0; k < 2; k++)
		if (!rd_byte(ack[0], &b))
			die("R: setup failed");
	out("ready\n");
	char line[64];
	long n = 0;
	while (fgets(line, sizeof line, stdin)) {
		if (strcmp(line, "step\n") == 0) {
			wr_byte(tick[1], 's');
			if (!rd_byte(ack[0], &b))
				die("R: G is gone");
			out("ack %ld\n", ++n);
		} else if (strcmp(line, "fork\n") == 0) {
			wr_byte(cmd[1], 'f');
			if (!rd_byte(ack[0], &b))
				die("R: U is gone");
			out("forked\n");
		} else if (strcmp(line, "exit\n") == 0) {
			break;
		}
	}
	close(tick[1]);
	close(cmd[1]);
	int sc, su;
	waitpid(c, &sc, 0);
	waitpid(u, &su, 0);
	out("R: C exited %d, U exited %d\n", code_of(sc), code_of(su));
	return 0;
}
