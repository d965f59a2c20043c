/* evloop STEPS [signalfd] [sleep=MS]
 *
 * An event loop: one epoll instance watching an eventfd, a periodic timerfd (every 20
 * ms) and the read end of a pipe, and with `signalfd` also a signalfd for SIGUSR1
 * (blocked). All level-triggered, each registered with its own 64-bit data value
 * (which the loop uses to tell them apart, so a lost data value shows). The eventfd
 * and the pipe stay readable (see below), so once the loop has seen them in a step it
 * switches them off (EPOLL_CTL_MOD to no events) and on again at the next step: at a
 * checkpoint some registrations have an empty event mask, which must survive too.
 *
 * Each step it adds step+1 to the eventfd counter (read back only every fourth step,
 * so the counter carries a sum across steps), writes two bytes into the pipe and
 * reads one (so unread bytes pile up in the pipe), and with `signalfd` sigqueue()s
 * itself SIGUSR1 with a value every third step. Then it waits in epoll_wait until the
 * timer has ticked and every other expected event has come, and prints what it read,
 * the number of bytes left in the pipe, the timer's interval and the epoll data values
 * it saw. Then it sleeps a little. */
#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#define D_EVENT 0x1111000000000001ull
#define D_TIMER 0x2222000000000002ull
#define D_PIPE 0x3333000000000003ull
#define D_SIG 0x4444000000000004ull

static void ctl(int ep, int op, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, op, fd, &ev))
		die("epoll_ctl: %s", strerror(errno));
}

static void add(int ep, int fd, uint64_t data)
{
	ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN, data);
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	int use_sig = 0;
	long sleep_each = 10;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "signalfd"))
			use_sig = 1;
		else if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	int efd = eventfd(0, EFD_NONBLOCK);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int p[2];
	if (efd < 0 || tfd < 0 || pipe2(p, O_NONBLOCK))
		die("eventfd/timerfd/pipe: %s", strerror(errno));
	struct itimerspec its = { { 0, 20000000 }, { 0, 20000000 } };
	if (timerfd_settime(tfd, 0, &its, NULL))
		die("timerfd_settime: %s", strerror(errno));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1: %s", strerror(errno));
	add(ep, efd, D_EVENT);
	add(ep, tfd, D_TIMER);
	add(ep, p[0], D_PIPE);
	int sfd = -1;
	if (use_sig) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR1);
		if (sigprocmask(SIG_BLOCK, &s, NULL))
			die("sigprocmask: %s", strerror(errno));
		sfd = signalfd(-1, &s, SFD_NONBLOCK | SFD_CLOEXEC);
		if (sfd < 0)
			die("signalfd: %s", strerror(errno));
		add(ep, sfd, D_SIG);
	}
	out("evloop: %ld steps%s\n", steps, use_sig ? " with signalfd" : "");

	uint32_t h = FNV_INIT;
	for (long step = 0; step < steps; step++) {
		uint64_t add_val = (uint64_t)step + 1;
		if (write(efd, &add_val, 8) != 8)
			die("write eventfd: %s", strerror(errno));
		char two[2] = { (char)('a' + step % 26), (char)('A' + step % 26) };
		if (write(p[1], two, 2) != 2)
			die("write pipe: %s", strerror(errno));
		int want_sig = use_sig && step % 3 == 0;
		if (want_sig) {
			union sigval v = { .sival_int = (int)(step * 100 + 1) };
			if (sigqueue(getpid(), SIGUSR1, v))
				die("sigqueue: %s", strerror(errno));
		}
		ctl(ep, EPOLL_CTL_MOD, efd, EPOLLIN, D_EVENT);
		ctl(ep, EPOLL_CTL_MOD, p[0], EPOLLIN, D_PIPE);
		int read_event = step % 4 == 3;
		/* 1 eventfd, 2 timer, 4 pipe, 8 signalfd */
		int want = 2 | 4 | (want_sig ? 8 : 0), seen = 0, seen_data = 0;
		uint64_t counter = 0, ticks = 0;
		char got = 0;
		struct signalfd_siginfo si = { 0 };
		for (int rounds = 0; (seen & want) != want; rounds++) {
			if (rounds > 200)
				die("step %ld: events %#x of %#x after 200 waits", step, seen, want);
			struct epoll_event evs[8];
			int n = epoll_wait(ep, evs, 8, 1000);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				die("epoll_wait: %s", strerror(errno));
			for (int i = 0; i < n; i++) {
				switch (evs[i].data.u64) {
				case D_EVENT:
					seen_data |= 1;
					if (read_event && !(seen & 1) && read(efd, &counter, 8) == 8)
						seen |= 1;
					ctl(ep, EPOLL_CTL_MOD, efd, 0, D_EVENT);
					break;
				case D_TIMER: {
					uint64_t k;
					seen_data |= 2;
					if (read(tfd, &k, 8) == 8) {
						ticks += k;
						seen |= 2;
					}
					break;
				}
				case D_PIPE:
					seen_data |= 4;
					if (!(seen & 4) && read(p[0], &got, 1) == 1)
						seen |= 4;
					ctl(ep, EPOLL_CTL_MOD, p[0], 0, D_PIPE);
					break;
				case D_SIG:
					seen_data |= 8;
					if (read(sfd, &si, sizeof si) == sizeof si)
						seen |= 8;
					break;
				default:
					die("step %ld: unknown epoll data %#llx", step,
					    (unsigned long long)evs[i].data.u64);
				}
			}
		}
		int left = -1;
		if (ioctl(p[0], FIONREAD, &left))
			die("FIONREAD: %s", strerror(errno));
		struct itimerspec cur;
		if (timerfd_gettime(tfd, &cur))
			die("timerfd_gettime: %s", strerror(errno));
		h = fnv(h, &got, 1);
		h = fnv(h, &counter, sizeof counter);
		char sig[64] = "";
		if (want_sig)
			snprintf(sig, sizeof sig, " signal %u code %d value %d", si.ssi_signo,
				 si.ssi_code, si.ssi_int);
		out("step %ld pipe %c left %d eventfd %llu timer %s interval %ldms seen %#x%s "
		    "hash %08x\n",
		    step, got, left, (unsigned long long)counter, ticks >= 1 ? "ticked" : "NO",
		    (long)(cur.it_interval.tv_nsec / 1000000), seen_data, sig, h);
		sleep_ms(sleep_each);
	}
	uint64_t rest = 0;
	if (read(efd, &rest, 8) != 8)
		rest = 0;
	char buf[256];
	ssize_t n = read(p[0], buf, sizeof buf);
	out("end: eventfd %llu, %zd bytes left in the pipe, hash %08x\n",
	    (unsigned long long)rest, n, fnv(h, buf, n > 0 ? (size_t)n : 0));
	return 0;
}
