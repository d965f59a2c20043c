/* pidnest STEPS [sleep=MS] [inside | nest | nest2]
 *
 * Processes in PID namespaces, checking their IDs every step.
 *
 * inside: run as PID 1 of a PID namespace (`unshare -p -f pidnest ... inside`): this
 *   init forks the tree's root R (PID 2 there) and then only reaps, exiting with R's
 *   status once nobody is left. R forks a child C (PID 3); every step R prints its
 *   getpid() and getppid() and whether C is still its child with the same PID, running.
 *   C checks its getpid() and getppid() every step (then waits for R to finish its
 *   steps: a pipe R closes), and at two thirds of the run makes an orphan
 *   (a grandchild forks a process and exits: that process is reparented to the
 *   namespace's init, and exits 100 ms later); at the end C checks that the orphan is
 *   gone (reaped by the init) and exits with a status whose bits say what was wrong
 *   (1 its PID changed, 2 its parent's, 4 the orphan is still there, 8 the orphan could
 *   not be made), which R prints.
 *
 * nest: the root R (in the caller's PID namespace) forks C, which unshares
 *   CLONE_NEWPID and forks G, PID 1 of the new (nested) namespace; G forks P (PID 2
 *   there), and reaps every child it gets until P is gone (then exits with P's
 *   status). nest2 nests once more: P unshares CLONE_NEWPID too and forks Q, PID 1 of a
 *   third level (it reaps the same way), whose child S (PID 2 there) does what P does
 *   in `nest`. The innermost printer prints every step its getpid(), getppid() and how
 *   many PID namespaces it is in (the number of IDs in NSpid of /proc/self/status; the
 *   test's /proc is the host's) and at two thirds of the run makes an orphan as above,
 *   reparented to its namespace's init (G or Q), and prints at the end whether it was
 *   reaped. R prints the status C exits with at the end.
 *
 * Nothing printed depends on host PIDs. */
#include "util.h"
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static long steps = 40, ms = 40;

static void nap(void)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

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

/* Make an orphan: a child forks a process and exits at once; that process (reparented
 * to the namespace's init) exits 100 ms later. Returns its PID (0 on failure). */
static pid_t make_orphan(void)
{
	int p[2];
	if (pipe(p) != 0)
		return 0;
	pid_t g = fork();
	if (g < 0)
		return 0;
	if (g == 0) {
		close(p[0]);
		pid_t h = fork();
		if (h == 0) {
			struct timespec ts = {0, 100000000L};
			nanosleep(&ts, NULL);
			_exit(0);
		}
		write_all(p[1], (char *)&h, sizeof h);
		_exit(0);
	}
	close(p[1]);
	pid_t h = 0;
	if (read(p[0], &h, sizeof h) != sizeof h)
		h = 0;
	close(p[0]);
	waitpid(g, NULL, 0);
	return h;
}

/* An init: reap every child until `main_child` is gone and no child is left; return
 * its exit code. */
static int reap_all(pid_t main_child)
{
	int code = 0, st;
	pid_t w;
	while ((w = waitpid(-1, &st, 0)) > 0 || (w < 0 && errno == EINTR)) {
		if (w == main_child)
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	return code;
}

/* Fork a child in a new PID namespace (its PID 1); return its PID in ours. */
static pid_t fork_nested(void)
{
	if (unshare(CLONE_NEWPID) != 0)
		die("unshare(CLONE_NEWPID): %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	return c;
}

/* Whether `orphan` is gone (reaped by its init) within 2 s. */
static int reaped(pid_t orphan)
{
	for (int i = 0; i < 200; i++) {
		if (kill(orphan, 0) != 0 && errno == ESRCH)
			return 1;
		struct timespec ts = {0, 10000000L};
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* The innermost printer of nest/nest2. */
static int printer(void)
{
	pid_t orphan = 0;
	int bad = 0;
	for (long i = 1; i <= steps; i++) {
		out("step %ld: pid %d ppid %d levels %d\n", i, (int)getpid(), (int)getppid(), levels());
		if (i == steps * 2 / 3 && !(orphan = make_orphan()))
			bad = 1;
		nap();
	}
	int gone = orphan && reaped(orphan);
	out("orphan reaped: %s\n", gone ? "yes" : "no");
	return bad ? 8 : gone ? 0 : 4;
}

/* G (and Q for nest2): PID 1 of a nested namespace; `deeper` nests once more. */
static int nested_init(int deeper)
{
	pid_t p = fork();
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		if (!deeper)
			_exit(printer());
		pid_t q = fork_nested();
		if (q == 0)
			_exit(nested_init(0));
		_exit(reap_all(q));
	}
	return reap_all(p);
}

/* C: checks its IDs every step, then waits until R is done (`done` reaches EOF). */
static int child_inside(pid_t ppid, int done)
{
	pid_t me = getpid(), orphan = 0;
	int bad = 0;
	for (long i = 1; i <= steps; i++) {
		if (getpid() != me)
			bad |= 1;
		if (getppid() != ppid)
			bad |= 2;
		if (i == steps * 2 / 3 && !(orphan = make_orphan()))
			bad |= 8;
		nap();
	}
	char b;
	while (read(done, &b, 1) > 0 || errno == EINTR)
		;
	if (orphan && !reaped(orphan))
		bad |= 4;
	return bad;
}

int main(int argc, char **argv)
{
	steps = arg_long(argc, argv, 1, 40);
	int inside = 0, nest = 0;
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strcmp(argv[i], "inside") == 0)
			inside = 1;
		else if (strcmp(argv[i], "nest") == 0)
			nest = 1;
		else if (strcmp(argv[i], "nest2") == 0)
			nest = 2;
	}
	if (inside) {
		if (getpid() != 1)
			die("inside: run me as PID 1 of a PID namespace");
		pid_t r = fork();
		if (r < 0)
			die("fork: %s", strerror(errno));
		if (r > 0)
			return reap_all(r);
		pid_t me = getpid();
		int done[2];
		if (pipe(done) != 0)
			die("pipe: %s", strerror(errno));
		pid_t c = fork();
		if (c < 0)
			die("fork: %s", strerror(errno));
		if (c == 0) {
			close(done[1]);
			_exit(child_inside(me, done[0]));
		}
		close(done[0]);
		for (long i = 1; i <= steps; i++) {
			siginfo_t si;
			memset(&si, 0, sizeof si);
			int same = kill(c, 0) == 0 && waitid(P_PID, c, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
				   si.si_pid == 0;
			out("step %ld: pid %d ppid %d child %d %s\n", i, (int)getpid(), (int)getppid(), (int)c,
			    same ? "same" : "GONE");
			nap();
		}
		close(done[1]);
		int st;
		if (waitpid(c, &st, 0) != c)
			die("waitpid: %s", strerror(errno));
		out("child: status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return 0;
	}
	if (!nest)
		die("usage: pidnest STEPS [sleep=MS] inside|nest|nest2");
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0) {
		pid_t g = fork_nested();
		if (g == 0)
			_exit(nested_init(nest == 2));
		_exit(reap_all(g));
	}
	int st;
	if (waitpid(c, &st, 0) != c)
		die("waitpid: %s", strerror(errno));
	out("nested: status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}
