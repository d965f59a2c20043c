/* epollmoved: an epoll instance whose watched descriptors were moved or closed since
 * they were added, the files living on under other numbers.
 *
 * usage: epollmoved STEPS [sleep=MS]
 * Items (their data): an eventfd still at the number it was added under (0x1111); an
 * eventfd added, then moved to descriptor 30 with dup2 (0x2222); a pipe's read end
 * added, then moved to 31 (0x3333); an eventfd added, duplicated with dup and the
 * number it was added under closed (0x5555). Each step makes one of them ready through
 * the number that holds it now, prints what epoll_wait reports and consumes it. */
#include "util.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep;

static void add(int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl(%d): %s", fd, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: epollmoved STEPS [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	long sleep_each = 20;
	if (argc > 2) {
		if (strncmp(argv[2], "sleep=", 6))
			die("unknown option %s", argv[2]);
		sleep_each = strtol(argv[2] + 6, NULL, 0);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	int a = eventfd(0, 0);
	add(a, 0x1111);
	int b = eventfd(0, 0);
	add(b, 0x2222);
	if (dup2(b, 30) != 30)
		die("dup2: %s", strerror(errno));
	close(b);
	/* Its old number now holds another file. */
	if (open("/dev/null", O_RDONLY) != b)
		die("open /dev/null: %s", strerror(errno));
	int p[2];
	if (pipe(p))
		die("pipe: %s", strerror(errno));
	add(p[0], 0x3333);
	if (dup2(p[0], 31) != 31)
		die("dup2: %s", strerror(errno));
	close(p[0]);
	if (open("/dev/null", O_RDONLY) != p[0])
		die("open /dev/null: %s", strerror(errno));
	int d = eventfd(0, 0);
	add(d, 0x5555);
	int e = dup(d);
	close(d);
	if (ep < 0 || a < 0 || e < 0)
		die("setup: %s", strerror(errno));
	out("epoll %d: eventfd %d, moved 30 (added as %d), pipe 31 (added as %d) write %d, "
	    "eventfd %d (added as %d)\n", ep, a, b, p[0], p[1], e, d);
	int writers[4] = { a, 30, p[1], e };
	for (long step = 1; step <= steps; step++) {
		int w = writers[step % 4];
		if (w == p[1]) {
			if (write(w, "x", 1) != 1)
				die("write pipe: %s", strerror(errno));
		} else {
			uint64_t one = 1;
			if (write(w, &one, sizeof one) != sizeof one)
				die("write eventfd: %s", strerror(errno));
		}
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, 5000);
		if (n < 0)
			die("epoll_wait: %s", strerror(errno));
		out("step %ld: %d ready:", step, n);
		for (int i = 0; i < n; i++)
			out(" %#llx", (unsigned long long)evs[i].data.u64);
		out("\n");
		if (w == p[1]) {
			char c;
			if (read(31, &c, 1) != 1)
				die("read pipe: %s", strerror(errno));
		} else {
			uint64_t v;
			if (read(w, &v, sizeof v) != sizeof v)
				die("read eventfd: %s", strerror(errno));
		}
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
