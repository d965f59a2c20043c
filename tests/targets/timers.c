/* timers TICKS UNBLOCK_TICK [itimer=US] [ptimer=US]
 *
 * Pending signals with their siginfo, an interval timer and POSIX timers.
 *
 * At start, with SIGUSR2, SIGRTMIN and SIGRTMIN+1 blocked, the process queues to itself:
 *   - SIGUSR2 with value 7 (sigqueue: process-wide pending),
 *   - SIGRTMIN three times, with values 1, 2, 3 (a real-time signal queues every one),
 *   - SIGRTMIN+1 with value 11 to its own thread (rt_tgsigqueueinfo: per-thread pending).
 * It arms ITIMER_REAL (SIGALRM every 100 ms), a POSIX timer on CLOCK_MONOTONIC (SIGUSR1
 * every 50 ms), a one-shot POSIX timer 60 s away, and creates a third POSIX timer it never
 * arms (the periods can be changed: itimer=US, ptimer=US). Every tick (a 100 ms
 * nanosleep) it prints facts that hold whatever the scheduling but not if timer or
 * signal state were lost:
 *   - each periodic timer fired at least once in the last 4 ticks (with the default
 *     periods it expires 4-8 times in that window), and not absurdly often (no more than
 *     ten times what its period allows in 400 ms: a wrong interval);
 *   - getitimer/timer_gettime still report the intervals that were set, the one-shot
 *     timer is armed with 10-60 s to go and the third timer is disarmed;
 *   - none of the queued signals has been delivered yet.
 * At UNBLOCK_TICK it unblocks them; the handler (which blocks every signal while it
 * runs, so that deliveries do not nest) records each one, and the process prints them
 * in delivery order with their siginfo: each exactly once, per-thread before
 * process-wide, lower numbers first, real-time ones in the order they were queued. */
#include "util.h"
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>

static volatile sig_atomic_t alrm, usr1;

struct rec {
	int sig, value, code, from_self, uid_ok;
};
static struct rec recs[32];
static volatile sig_atomic_t nrec;

static void handler(int s, siginfo_t *si, void *uc)
{
	(void)uc;
	if (s == SIGALRM) {
		alrm++;
	} else if (s == SIGUSR1) {
		usr1++;
	} else if (nrec < 32) {
		struct rec *r = &recs[nrec];
		r->sig = s;
		r->value = si->si_value.sival_int;
		r->code = si->si_code;
		r->from_self = si->si_pid == getpid();
		r->uid_ok = si->si_uid == getuid();
		nrec++;
	}
}

static const char *signame(int s)
{
	static char buf[32];
	if (s == SIGUSR2)
		return "SIGUSR2";
	if (s >= SIGRTMIN && s <= SIGRTMAX) {
		snprintf(buf, sizeof buf, "SIGRTMIN+%d", s - SIGRTMIN);
		return buf;
	}
	snprintf(buf, sizeof buf, "signal %d", s);
	return buf;
}

static long ns(const struct timespec *t)
{
	return t->tv_sec * 1000000000L + t->tv_nsec;
}

int main(int argc, char **argv)
{
	long ticks = arg_long(argc, argv, 1, 40);
	long unblock = arg_long(argc, argv, 2, 30);
	long itimer_us = 100000, ptimer_us = 50000;
	for (int i = 3; i < argc; i++) {
		if (strncmp(argv[i], "itimer=", 7) == 0)
			itimer_us = atol(argv[i] + 7);
		else if (strncmp(argv[i], "ptimer=", 7) == 0)
			ptimer_us = atol(argv[i] + 7);
		else
			die("unknown option %s", argv[i]);
	}
	if (itimer_us <= 0 || itimer_us >= 1000000 || ptimer_us <= 0 || ptimer_us >= 1000000)
		die("timer periods must be in (0, 1 s)");
	int max_alrm = (int)(10 * 400000 / itimer_us + 10);
	int max_usr1 = (int)(10 * 400000 / ptimer_us + 10);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigfillset(&sa.sa_mask);
	int sigs[] = { SIGALRM, SIGUSR1, SIGUSR2, SIGRTMIN, SIGRTMIN + 1 };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigaction(sigs[i], &sa, NULL) != 0)
			die("sigaction: %s", strerror(errno));

	sigset_t q;
	sigemptyset(&q);
	sigaddset(&q, SIGUSR2);
	sigaddset(&q, SIGRTMIN);
	sigaddset(&q, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &q, NULL);
	union sigval v;
	v.sival_int = 7;
	if (sigqueue(getpid(), SIGUSR2, v) != 0)
		die("sigqueue: %s", strerror(errno));
	for (int i = 1; i <= 3; i++) {
		v.sival_int = i;
		if (sigqueue(getpid(), SIGRTMIN, v) != 0)
			die("sigqueue: %s", strerror(errno));
	}
	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = SIGRTMIN + 1;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = 11;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 1, &si) != 0)
		die("rt_tgsigqueueinfo: %s", strerror(errno));

	struct itimerval it = { { 0, itimer_us }, { 0, itimer_us } };
	if (setitimer(ITIMER_REAL, &it, NULL) != 0)
		die("setitimer: %s", strerror(errno));
	struct sigevent ev;
	memset(&ev, 0, sizeof ev);
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR1;
	timer_t periodic, oneshot, idle;
	if (timer_create(CLOCK_MONOTONIC, &ev, &periodic) != 0)
		die("timer_create: %s", strerror(errno));
	ev.sigev_signo = SIGALRM;
	if (timer_create(CLOCK_MONOTONIC, &ev, &oneshot) != 0 ||
	    timer_create(CLOCK_REALTIME, &ev, &idle) != 0)
		die("timer_create: %s", strerror(errno));
	struct itimerspec its = { { 0, ptimer_us * 1000 }, { 0, ptimer_us * 1000 } };
	if (timer_settime(periodic, 0, &its, NULL) != 0)
		die("timer_settime: %s", strerror(errno));
	struct itimerspec once = { { 0, 0 }, { 60, 0 } };
	if (timer_settime(oneshot, 0, &once, NULL) != 0)
		die("timer_settime: %s", strerror(errno));
	out("timers: ids %ld %ld %ld; %ld ticks, unblock at %ld\n", (long)periodic, (long)oneshot,
	    (long)idle, ticks, unblock);

	int hist_alrm[4] = { 0 }, hist_usr1[4] = { 0 };
	for (long i = 0; i < ticks; i++) {
		sleep_ms(100);
		int a = alrm, u = usr1;
		char window[96] = "window filling";
		if (i >= 4) {
			int da = a - hist_alrm[i % 4], du = u - hist_usr1[i % 4];
			snprintf(window, sizeof window, "alrm alive %d sane %d, usr1 alive %d sane %d",
				 da >= 1, da <= max_alrm, du >= 1, du <= max_usr1);
		}
		hist_alrm[i % 4] = a;
		hist_usr1[i % 4] = u;

		struct itimerval cur;
		getitimer(ITIMER_REAL, &cur);
		struct itimerspec p, o, d;
		timer_gettime(periodic, &p);
		timer_gettime(oneshot, &o);
		int r = timer_gettime(idle, &d);
		int settings = cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == itimer_us &&
			       ns(&p.it_interval) == ptimer_us * 1000 && ns(&o.it_interval) == 0 &&
			       ns(&o.it_value) > 10000000000L && ns(&o.it_value) <= 60000000000L &&
			       r == 0 && ns(&d.it_value) == 0 && ns(&d.it_interval) == 0;
		out("tick %ld: %s; timer settings ok %d; queued delivered %d\n", i, window,
		    settings, (int)nrec);
		if (i == unblock) {
			sigprocmask(SIG_UNBLOCK, &q, NULL);
			out("unblocked: %d delivered\n", (int)nrec);
			for (int k = 0; k < nrec; k++)
				out("  %d: %s value %d si_code %d from self %d uid ok %d\n", k,
				    signame(recs[k].sig), recs[k].value, recs[k].code,
				    recs[k].from_self, recs[k].uid_ok);
		}
	}
	out("final: queued delivered %d, alrm fired %d, usr1 fired %d\n", (int)nrec, alrm > 0,
	    usr1 > 0);
	return 0;
}
