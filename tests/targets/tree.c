/* tree ROUNDS [sleep=US]
 *
 * A fork tree four levels deep that works through MAP_SHARED|MAP_ANONYMOUS memory
 * inherited across fork:
 *
 *   R (root) ── A ── G ── H
 *            └─ B
 *
 * R maps `shm` before forking, so all five share it; A maps `sub` after it was forked
 * and before forking G, so only A, G and H share that one. The five take strict turns
 * (R, A, G, H, B) through a turn counter in `shm`, polling it with short sleeps. In its
 * turn each process mixes what the others wrote into a running hash (`shm->acc`) and
 * adds to its slot; G and H also write into `sub`, which A reads in its turn. Every
 * process also keeps a private counter (copy-on-write memory inherited across fork,
 * which must *not* be shared) and mixes it in. R prints the hash every round, so every
 * line after a restore depends on writes the other processes made after the restore:
 * memory that was no longer shared (or wrongly shared) would change it, and a turn
 * counter that was no longer shared would leave everyone waiting: after ~10 s of
 * waiting a process prints STUCK and exits.
 *
 * At the end each parent waits for its children and prints their exit statuses
 * (deterministic ones, derived from the shared data); the order of all output lines is
 * forced by the turns and the waits. */
#include "util.h"
#include <sys/mman.h>
#include <sys/wait.h>

enum { R, A, G, H, B, NPROC };
static const char *const names[NPROC] = { "R", "A", "G", "H", "B" };

struct shared {
	long turn;
	uint32_t acc;
	long slot[NPROC];
};

struct sub {
	uint32_t gh;
	long writes;
};

static struct shared *shm;
static struct sub *sub;
static long rounds;
static long sleep_us = 10000;
/* Private: every process has its own copy after fork. */
static long mine;

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

static void play(int me)
{
	for (long r = 0; r < rounds; r++) {
		wait_turn(me, r * NPROC + me);
		mine += me + 1;
		shm->acc = fnv(shm->acc, &mine, sizeof mine);
		shm->acc = fnv(shm->acc, &r, sizeof r);
		shm->slot[me] += r + me;
		switch (me) {
		case R: {
			long sum = 0;
			for (int i = 0; i < NPROC; i++)
				sum += shm->slot[i];
			out("round %ld acc %08x sum %ld\n", r, shm->acc, sum);
			break;
		}
		case A:
			shm->acc = fnv(shm->acc, sub, sizeof *sub);
			break;
		case G:
			sub->gh = fnv(sub->gh, &r, sizeof r) ^ 0x1000u;
			sub->writes++;
			break;
		case H:
			sub->gh = fnv(sub->gh, &mine, sizeof mine);
			sub->writes++;
			break;
		case B:
			shm->acc ^= (uint32_t)shm->slot[A];
			break;
		}
		pass_turn();
		if (me == R && sleep_us > 0)
			pause_us(sleep_us);
	}
}

/* Wait for `pid` and print how it ended; returns its exit code. */
static int reap(int me, int child, pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) != pid)
		die("%s: waitpid %s: %s", names[me], names[child], strerror(errno));
	if (WIFEXITED(st))
		out("%s: child %s exited with status %d\n", names[me], names[child], WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		out("%s: child %s killed by signal %d\n", names[me], names[child], WTERMSIG(st));
	else
		out("%s: child %s ended with raw status %#x\n", names[me], names[child], st);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static pid_t spawn(int me, void (*body)(void))
{
	pid_t p = fork();
	if (p < 0)
		die("%s: fork: %s", names[me], strerror(errno));
	if (p == 0) {
		body();
		_exit(0);
	}
	return p;
}

static void body_h(void)
{
	play(H);
	_exit(10 + (int)(sub->gh % 50));
}

static void body_g(void)
{
	pid_t h = spawn(G, body_h);
	play(G);
	int hs = reap(G, H, h);
	_exit(30 + (hs + (int)(sub->writes % 7)) % 40);
}

static void body_a(void)
{
	sub = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sub == MAP_FAILED)
		die("A: mmap: %s", strerror(errno));
	sub->gh = FNV_INIT;
	pid_t g = spawn(A, body_g);
	play(A);
	int gs = reap(A, G, g);
	_exit(70 + (gs + (int)(shm->slot[A] % 11)) % 50);
}

static void body_b(void)
{
	play(B);
	_exit(120 + (int)(shm->acc % 100));
}

int main(int argc, char **argv)
{
	rounds = arg_long(argc, argv, 1, 150);
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			sleep_us = atol(argv[i] + 6);
		else
			die("unknown option %s", argv[i]);
	}
	shm = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	shm->acc = FNV_INIT;
	out("tree of %d processes, %ld rounds\n", NPROC, rounds);
	pid_t a = spawn(R, body_a);
	pid_t b = spawn(R, body_b);
	play(R);
	reap(R, A, a);
	reap(R, B, b);
	out("final acc %08x slots %ld %ld %ld %ld %ld turn %ld\n", shm->acc, shm->slot[R],
	    shm->slot[A], shm->slot[G], shm->slot[H], shm->slot[B], shm->turn);
	return 0;
}
