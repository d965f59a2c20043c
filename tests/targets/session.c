/* session ROUNDS SIGNAL_ROUND [sleep=US]
 *
 * A session with two process groups:
 *
 *   R    setsid(): leader of a new session and of process group R
 *   ├─ C1  setpgid(0, 0): leader of process group C1, in R's session
 *   │  └─ GC  forked after that: in group C1
 *   └─ C2  stays in group R
 *
 * The four take turns (R, C1, GC, C2) through a counter in MAP_SHARED|MAP_ANONYMOUS
 * memory. In its turn each prints, as booleans, how its session, process group and
 * parent relate to the others (getsid, getpgid, getppid), and R checks the others from
 * outside too (getpgid(pid), getsid(pid)). No raw IDs are printed (they differ between
 * runs), only relations that must hold whatever the IDs are.
 *
 * In round SIGNAL_ROUND, R sends SIGUSR1 to group C1 (kill(-C1)) and SIGUSR2 to its own
 * group (kill(0)); in the next round each process waits (bounded) for the signals its
 * group should have got and prints how many of each it got: the groups must be real
 * kernel process groups with the right members.
 *
 * At the end parents wait for their children and print their exit statuses. */
#include "util.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

enum { R, C1, GC, C2, NPROC };
static const char *const names[NPROC] = { "R", "C1", "GC", "C2" };

struct shared {
	long turn;
	pid_t pid[NPROC];
};

static struct shared *shm;
static long rounds, sig_round;
static long sleep_us = 30000;
static volatile sig_atomic_t usr1, usr2;

static void on_usr1(int s)
{
	(void)s;
	usr1++;
}

static void on_usr2(int s)
{
	(void)s;
	usr2++;
}

static void pause_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void wait_turn(int me, long want)
{
	for (long i = 0; __atomic_load_n(&shm->turn, __ATOMIC_ACQUIRE) != want; i++) {
		if (i > 20000) {
			out("%s: STUCK waiting for turn %ld (turn is %ld)\n", names[me], want,
			    __atomic_load_n(&shm->turn, __ATOMIC_ACQUIRE));
			_exit(99);
		}
		pause_us(500);
	}
}

static void pass_turn(void)
{
	__atomic_fetch_add(&shm->turn, 1, __ATOMIC_RELEASE);
}

/* The relations of the calling process, as the others expect them. */
static void print_self(int me, long r)
{
	pid_t self = getpid(), sid = getsid(0), pgid = getpgid(0), ppid = getppid();
	pid_t rp = shm->pid[R], c1 = shm->pid[C1];
	if (self != shm->pid[me])
		out("%s: round %ld: getpid changed\n", names[me], r);
	switch (me) {
	case R:
		out("round %ld R: sid==self %d pgid==self %d sid-R %d pgid-R %d\n", r, sid == self,
		    pgid == self, sid - rp, pgid - rp);
		break;
	case C1:
		out("round %ld C1: sid==R %d pgid==self %d ppid==R %d pgid!=R %d\n", r, sid == rp,
		    pgid == self, ppid == rp, pgid != rp);
		break;
	case GC:
		out("round %ld GC: sid==R %d pgid==C1 %d ppid==C1 %d pgid-C1 %d\n", r, sid == rp,
		    pgid == c1, ppid == c1, pgid - c1);
		break;
	case C2:
		out("round %ld C2: sid==R %d pgid==R %d ppid==R %d pgid-R %d\n", r, sid == rp,
		    pgid == rp, ppid == rp, pgid - rp);
		break;
	}
}

/* R's view of the others, from outside. */
static void print_others(long r)
{
	pid_t rp = shm->pid[R], c1 = shm->pid[C1], gc = shm->pid[GC], c2 = shm->pid[C2];
	out("round %ld R sees: C1 pgid==C1 %d sid==R %d, GC pgid==C1 %d sid==R %d, "
	    "C2 pgid==R %d sid==R %d, session groups distinct %d\n",
	    r, getpgid(c1) == c1, getsid(c1) == rp, getpgid(gc) == c1, getsid(gc) == rp,
	    getpgid(c2) == rp, getsid(c2) == rp, getpgid(c1) != getpgid(c2));
}

static void play(int me)
{
	for (long r = 0; r < rounds; r++) {
		wait_turn(me, r * NPROC + me);
		print_self(me, r);
		if (me == R && r > 0)
			print_others(r);
		if (me == R && r == sig_round) {
			if (kill(-shm->pid[C1], SIGUSR1) != 0)
				die("kill(-C1, SIGUSR1): %s", strerror(errno));
			if (kill(0, SIGUSR2) != 0)
				die("kill(0, SIGUSR2): %s", strerror(errno));
			out("round %ld R: sent SIGUSR1 to group C1, SIGUSR2 to group R\n", r);
		}
		if (r == sig_round + 1) {
			int want1 = me == C1 || me == GC, want2 = me == R || me == C2;
			for (int i = 0; i < 5000 && (usr1 < want1 || usr2 < want2); i++)
				pause_us(1000);
			out("round %ld %s: got SIGUSR1 x%d SIGUSR2 x%d\n", r, names[me], (int)usr1,
			    (int)usr2);
		}
		pass_turn();
		if (sleep_us > 0)
			pause_us(sleep_us);
	}
}

static int reap(int me, int child)
{
	int st;
	if (waitpid(shm->pid[child], &st, 0) != shm->pid[child])
		die("%s: waitpid %s: %s", names[me], names[child], strerror(errno));
	if (WIFEXITED(st))
		out("%s: child %s exited with status %d\n", names[me], names[child], WEXITSTATUS(st));
	else
		out("%s: child %s ended with raw status %#x\n", names[me], names[child], st);
	return st;
}

int main(int argc, char **argv)
{
	rounds = arg_long(argc, argv, 1, 60);
	sig_round = arg_long(argc, argv, 2, 50);
	for (int i = 3; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			sleep_us = atol(argv[i] + 6);
		else
			die("unknown option %s", argv[i]);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	shm->pid[R] = getpid();
	out("session: %ld rounds, signals in round %ld\n", rounds, sig_round);

	/* Fill in the pids before anyone's first turn (R's first turn comes after). */
	pid_t c1 = fork();
	if (c1 < 0)
		die("fork: %s", strerror(errno));
	if (c1 == 0) {
		if (setpgid(0, 0) != 0)
			die("C1: setpgid: %s", strerror(errno));
		shm->pid[C1] = getpid();
		pid_t gc = fork();
		if (gc < 0)
			die("C1: fork: %s", strerror(errno));
		if (gc == 0) {
			shm->pid[GC] = getpid();
			__atomic_store_n(&shm->turn, -1, __ATOMIC_RELEASE);
			play(GC);
			_exit(5);
		}
		while (__atomic_load_n(&shm->turn, __ATOMIC_ACQUIRE) != -1)
			pause_us(200);
		__atomic_store_n(&shm->turn, -2, __ATOMIC_RELEASE);
		play(C1);
		int st = reap(C1, GC);
		_exit(WIFEXITED(st) ? 6 + WEXITSTATUS(st) : 1);
	}
	while (__atomic_load_n(&shm->turn, __ATOMIC_ACQUIRE) != -2)
		pause_us(200);
	pid_t c2 = fork();
	if (c2 < 0)
		die("fork: %s", strerror(errno));
	if (c2 == 0) {
		shm->pid[C2] = getpid();
		__atomic_store_n(&shm->turn, -3, __ATOMIC_RELEASE);
		play(C2);
		_exit(7);
	}
	while (__atomic_load_n(&shm->turn, __ATOMIC_ACQUIRE) != -3)
		pause_us(200);
	__atomic_store_n(&shm->turn, 0, __ATOMIC_RELEASE);
	play(R);
	reap(R, C1);
	reap(R, C2);
	out("done\n");
	return 0;
}
