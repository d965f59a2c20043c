/* signals: signal dispositions, an alternate signal stack, a blocked mask and pending
 * signals, printed every step so that any difference after a restore shows.
 *
 * usage: signals STEPS USR2_STEP USR1_STEP [sleep=MS]
 *
 * Set up at start:
 *   SIGUSR1  handler, SA_SIGINFO|SA_ONSTACK|SA_RESTART, sa_mask {SIGINT}, runs on the
 *            sigaltstack (a static 64 KiB buffer);
 *   SIGUSR2  handler, SA_RESTART; blocked for the whole run;
 *   SIGHUP   ignored;
 *   SIGALRM  handler, SA_NODEFER|SA_RESETHAND, sa_mask {SIGQUIT, SIGTERM} (never sent);
 *   SIGWINCH blocked and raised at start, so it is pending (thread-directed) all along.
 *
 * At USR2_STEP it prints "step N: waiting for SIGUSR2" and polls sigpending() until the
 * test has sent SIGUSR2 (process-directed; it stays pending since it is blocked).
 * At USR1_STEP it prints "step N: waiting for SIGUSR1" and waits in sigsuspend() until
 * the SIGUSR1 handler has run. At the end it unblocks SIGUSR2 and SIGWINCH, so the
 * pending SIGUSR2 is delivered, and prints the result. */
#include "util.h"

#include <signal.h>

static char altstack[65536] __attribute__((aligned(64)));

static volatile sig_atomic_t usr1_count, usr1_signo, usr1_code = -1, usr1_onstack = -1;
static volatile sig_atomic_t usr2_count, usr2_onstack = -1;

static int on_altstack(const void *p)
{
	return (const char *)p >= altstack && (const char *)p < altstack + sizeof altstack;
}

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	char local;
	(void)sig;
	(void)uc;
	usr1_count++;
	usr1_signo = si->si_signo;
	usr1_code = si->si_code;
	usr1_onstack = on_altstack(&local);
}

static void on_usr2(int sig)
{
	char local;
	(void)sig;
	usr2_count++;
	usr2_onstack = on_altstack(&local);
}

static void on_alrm(int sig)
{
	(void)sig;
}

static unsigned long long mask_bits(const sigset_t *s)
{
	unsigned long long m = 0;
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(s, sig) == 1)
			m |= 1ULL << (sig - 1);
	return m;
}

static void install(int sig, void (*h)(int), void (*sh)(int, siginfo_t *, void *), int flags,
		    int mask1, int mask2)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	if (sh)
		sa.sa_sigaction = sh;
	else
		sa.sa_handler = h;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (mask1)
		sigaddset(&sa.sa_mask, mask1);
	if (mask2)
		sigaddset(&sa.sa_mask, mask2);
	if (sigaction(sig, &sa, NULL))
		die("sigaction %d: %s", sig, strerror(errno));
}

/* "NAME=HANDLER/FLAGS/MASK" for one signal, with the handler named symbolically. */
static void describe(char *buf, size_t len, const char *name, int sig)
{
	struct sigaction sa;
	if (sigaction(sig, NULL, &sa))
		die("sigaction query: %s", strerror(errno));
	const char *h;
	void *p = (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction : (void *)sa.sa_handler;
	if (p == (void *)SIG_DFL)
		h = "DFL";
	else if (p == (void *)SIG_IGN)
		h = "IGN";
	else if (p == (void *)on_usr1)
		h = "on_usr1";
	else if (p == (void *)on_usr2)
		h = "on_usr2";
	else if (p == (void *)on_alrm)
		h = "on_alrm";
	else
		h = "UNKNOWN";
	snprintf(buf, len, "%s=%s/%#x/%llx", name, h, (unsigned)sa.sa_flags, mask_bits(&sa.sa_mask));
}

static void state(char *buf, size_t len)
{
	sigset_t blocked, pending;
	if (sigprocmask(SIG_BLOCK, NULL, &blocked) || sigpending(&pending))
		die("sigprocmask/sigpending: %s", strerror(errno));
	stack_t ss;
	if (sigaltstack(NULL, &ss))
		die("sigaltstack: %s", strerror(errno));
	char a[5][96];
	describe(a[0], sizeof a[0], "USR1", SIGUSR1);
	describe(a[1], sizeof a[1], "USR2", SIGUSR2);
	describe(a[2], sizeof a[2], "HUP", SIGHUP);
	describe(a[3], sizeof a[3], "ALRM", SIGALRM);
	describe(a[4], sizeof a[4], "TERM", SIGTERM);
	snprintf(buf, len,
		 "blocked=%llx pending=%llx altstack=%s/%zu/%d usr1=%d(signo=%d code=%d onstack=%d) "
		 "usr2=%d %s %s %s %s %s",
		 mask_bits(&blocked), mask_bits(&pending),
		 ss.ss_sp == altstack ? "buf" : (ss.ss_flags & SS_DISABLE) ? "none" : "OTHER",
		 ss.ss_size, ss.ss_flags, (int)usr1_count, (int)usr1_signo, (int)usr1_code,
		 (int)usr1_onstack, (int)usr2_count, a[0], a[1], a[2], a[3], a[4]);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: signals STEPS USR2_STEP USR1_STEP [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	long usr2_step = arg_long(argc, argv, 2, 0);
	long usr1_step = arg_long(argc, argv, 3, 0);
	long sleep_each = 20;
	if (argc > 4) {
		if (strncmp(argv[4], "sleep=", 6))
			die("unknown option %s", argv[4]);
		sleep_each = strtol(argv[4] + 6, NULL, 0);
	}

	stack_t ss = { .ss_sp = altstack, .ss_flags = 0, .ss_size = sizeof altstack };
	if (sigaltstack(&ss, NULL))
		die("sigaltstack: %s", strerror(errno));
	install(SIGUSR1, NULL, on_usr1, SA_SIGINFO | SA_ONSTACK | SA_RESTART, SIGINT, 0);
	install(SIGUSR2, on_usr2, NULL, SA_RESTART, 0, 0);
	install(SIGALRM, on_alrm, NULL, SA_NODEFER | SA_RESETHAND, SIGQUIT, SIGTERM);
	if (signal(SIGHUP, SIG_IGN) == SIG_ERR)
		die("signal: %s", strerror(errno));
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGWINCH);
	if (sigprocmask(SIG_BLOCK, &block, NULL))
		die("sigprocmask: %s", strerror(errno));
	raise(SIGWINCH);

	char buf[1024];
	for (long step = 1; step <= steps; step++) {
		if (step == usr2_step) {
			out("step %ld: waiting for SIGUSR2\n", step);
			for (int i = 0;; i++) {
				sigset_t p;
				sigpending(&p);
				if (sigismember(&p, SIGUSR2) == 1)
					break;
				if (i > 30000)
					die("SIGUSR2 never came");
				sleep_ms(1);
			}
		}
		if (step == usr1_step) {
			sigset_t with_usr1, old;
			sigemptyset(&with_usr1);
			sigaddset(&with_usr1, SIGUSR1);
			sigprocmask(SIG_BLOCK, &with_usr1, &old);
			out("step %ld: waiting for SIGUSR1\n", step);
			while (!usr1_count)
				sigsuspend(&old);
			sigprocmask(SIG_SETMASK, &old, NULL);
		}
		state(buf, sizeof buf);
		out("step %ld %s\n", step, buf);
		sleep_ms(sleep_each);
	}

	out("unblocking SIGUSR2 and SIGWINCH\n");
	if (sigprocmask(SIG_UNBLOCK, &block, NULL))
		die("sigprocmask: %s", strerror(errno));
	state(buf, sizeof buf);
	out("end usr2 handled=%d onstack=%d %s\n", (int)usr2_count, (int)usr2_onstack, buf);
	out("done\n");
	return 0;
}
