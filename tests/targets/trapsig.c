/* trapsig STEPS handler|ignore
 *
 * Restore stops its stubs on an int3 after each injected system call, whose SIGTRAP the
 * kernel delivers by force (resetting a blocked or ignored disposition). This program
 * holds SIGTRAP in a given state and raises it every step: with a handler, the handler
 * must run each time (it counts); ignored, nothing may happen. Were the disposition lost
 * on restore, the restored process would die of SIGTRAP or miscount. */
#include "util.h"
#include <signal.h>

static volatile sig_atomic_t hits;

static void on_trap(int sig)
{
	(void)sig;
	hits++;
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 30);
	int ignore = argc > 2 && strcmp(argv[2], "ignore") == 0;
	struct sigaction sa = {0};
	sa.sa_handler = ignore ? SIG_IGN : on_trap;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTRAP, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	for (long i = 0; i < steps; i++) {
		raise(SIGTRAP);
		struct sigaction now;
		sigaction(SIGTRAP, NULL, &now);
		out("step %ld: handler calls %d, disposition %s\n", i, (int)hits,
		    now.sa_handler == SIG_IGN ? "ignored" : now.sa_handler == on_trap ? "handler" : "other");
		sleep_ms(25);
	}
	return 0;
}
