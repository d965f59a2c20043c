/* watch STEPS GOFILE [sleep=MS]
 *
 * A program under a debugger's hardware watchpoint. Built without PIE (`-no-pie`), so
 * the address of `watched` is the same in every run and may be printed.
 *
 * It installs a SIGTRAP handler (SA_SIGINFO), prints "watched at ADDR", and waits until
 * GOFILE exists: meanwhile the debugger (the test) attaches with ptrace, sets DR0 to
 * ADDR and DR7 to a 4-byte write watchpoint, and detaches. Then, each step, it writes
 * the step number to `watched` and prints the step; every write traps, and the handler
 * prints "hit N at step S (si_code C)" (si_addr is not printed: for a data watchpoint
 * it is not the data address). Without the watchpoint there are no hit lines. */
#include "util.h"

#include <signal.h>

volatile int watched;
static volatile long cur_step;
static volatile int hits;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	hits++;
	/* The trap comes right after the store in main, never inside out(). */
	out("hit %d at step %ld (si_code %d)\n", hits, cur_step, si->si_code);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: watch STEPS GOFILE [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	const char *go = argv[2];
	long sleep_each = 20;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGTRAP, &sa, NULL))
		die("sigaction: %s", strerror(errno));

	out("watched at %p\n", (void *)&watched);
	for (long i = 0; access(go, F_OK) != 0; i++) {
		if (i > 2000)
			die("no %s after 10 s", go);
		sleep_ms(5);
	}
	out("go\n");
	for (long step = 1; step <= steps; step++) {
		cur_step = step;
		watched = (int)step;
		out("step %ld watched %d hits %d\n", step, watched, hits);
		sleep_ms(sleep_each);
	}
	out("done: %d hits\n", hits);
	return 0;
}
