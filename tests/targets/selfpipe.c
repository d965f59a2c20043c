/* selfpipe STEPS [sleep=MS]
 *
 * Holds both ends of one pipe, grown to 256 KiB with F_SETPIPE_SZ, and keeps a backlog
 * of unread data in it: it first writes 150000 bytes of a pattern, then each step
 * writes 1000 more and reads back 3000, printing a hash of what it read, how much is
 * left (FIONREAD) and the pipe's size; at the end it reads and hashes what is left.
 * Any byte lost or changed across a checkpoint changes the hashes; a lost capacity
 * shows in the size (and the first 150000-byte write could not even have been made
 * without it). The write end is O_NONBLOCK; the flags of both ends are printed too. */
#include "util.h"

#include <fcntl.h>
#include <sys/ioctl.h>

static uint32_t pos;

static void put(int fd, size_t n)
{
	unsigned char buf[4096];
	while (n > 0) {
		size_t k = n < sizeof buf ? n : sizeof buf;
		for (size_t i = 0; i < k; i++, pos++)
			buf[i] = (unsigned char)((pos * 131u) ^ (pos >> 9));
		ssize_t w = write(fd, buf, k);
		if (w != (ssize_t)k)
			die("write to the pipe: %zd of %zu (%s)", w, k, strerror(errno));
		n -= k;
	}
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 60);
	long sleep_each = 20;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	int p[2];
	if (pipe(p))
		die("pipe: %s", strerror(errno));
	if (fcntl(p[1], F_SETPIPE_SZ, 256 * 1024) < 0)
		die("F_SETPIPE_SZ: %s", strerror(errno));
	if (fcntl(p[1], F_SETFL, O_NONBLOCK))
		die("F_SETFL: %s", strerror(errno));
	put(p[1], 150000);
	out("selfpipe: pipe of %d bytes, flags %#o / %#o\n", fcntl(p[0], F_GETPIPE_SZ),
	    fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));
	uint32_t h = FNV_INIT;
	for (long step = 1; step <= steps; step++) {
		put(p[1], 1000);
		int avail = 0;
		if (ioctl(p[0], FIONREAD, &avail))
			die("FIONREAD: %s", strerror(errno));
		unsigned char buf[3000];
		size_t want = avail < 3000 ? (size_t)avail : 3000, got = 0;
		while (got < want) {
			ssize_t r = read(p[0], buf + got, want - got);
			if (r <= 0)
				die("read from the pipe: %zd (%s)", r, strerror(errno));
			got += (size_t)r;
		}
		h = fnv(h, buf, got);
		int left = -1;
		ioctl(p[0], FIONREAD, &left);
		out("step %ld read %zu hash %08x left %d size %d flags %#o / %#o\n", step, got, h,
		    left, fcntl(p[0], F_GETPIPE_SZ), fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));
		sleep_ms(sleep_each);
	}
	int left = 0;
	ioctl(p[0], FIONREAD, &left);
	uint32_t rest = FNV_INIT;
	unsigned char buf[4096];
	for (int got = 0; got < left;) {
		ssize_t r = read(p[0], buf, sizeof buf);
		if (r <= 0)
			die("read from the pipe: %zd (%s)", r, strerror(errno));
		rest = fnv(rest, buf, (size_t)r);
		got += (int)r;
	}
	out("done: %d bytes left, hash %08x\n", left, rest);
	return 0;
}
