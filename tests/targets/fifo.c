/* fifo STEPS AHEAD DIR [sleep=MS]
 *
 * Two processes talking through a FIFO (named pipe) DIR/chan, with data in flight.
 * The parent makes the FIFO, opens it read-write first (a keeper, so that neither open
 * below blocks; the child inherits it), sets its capacity to 16 KiB and forks. The
 * child opens it read-only, the parent write-only. The parent writes AHEAD records at
 * once, then one more per step; the child reads one record per step (blocking when
 * none is there) and prints it with the FIFO's capacity as its descriptor sees it. Only
 * the child prints during the steps, so the output is the same on every run; a record
 * lost, duplicated or reordered, or a capacity not kept, shows in it. */
#include "util.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define REC 32

static void record(char *buf, long i)
{
	memset(buf, '.', REC);
	int n = snprintf(buf, REC, "record %04ld %08x", i, fnv(FNV_INIT, &i, sizeof i));
	buf[n] = '.';
	buf[REC - 1] = '\n';
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: fifo STEPS AHEAD DIR [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	long ahead = arg_long(argc, argv, 2, 5);
	const char *dir = argv[3];
	long ms = 30;
	if (argc > 4 && strncmp(argv[4], "sleep=", 6) == 0)
		ms = strtol(argv[4] + 6, NULL, 10);
	char path[4096];
	snprintf(path, sizeof path, "%s/chan", dir);
	unlink(path);
	if (mkfifo(path, 0600) != 0)
		die("mkfifo %s: %s", path, strerror(errno));
	int keep = open(path, O_RDWR | O_NONBLOCK);
	if (keep < 0)
		die("open keeper: %s", strerror(errno));
	if (fcntl(keep, F_SETPIPE_SZ, 16384) < 0)
		die("F_SETPIPE_SZ: %s", strerror(errno));
	out("fifo ready, %ld records ahead\n", ahead);
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		int r = open(path, O_RDONLY);
		if (r < 0)
			die("child open: %s", strerror(errno));
		for (long i = 0; i < steps; i++) {
			char buf[REC + 1] = { 0 }, want[REC];
			size_t got = 0;
			while (got < REC) {
				ssize_t n = read(r, buf + got, REC - got);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					die("child read: %s", n ? strerror(errno) : "EOF");
				got += (size_t)n;
			}
			record(want, i);
			out("child: %.*s (%s, capacity %d)\n", REC - 1, buf,
			    memcmp(buf, want, REC) ? "WRONG" : "ok", fcntl(r, F_GETPIPE_SZ));
			sleep_ms(ms);
		}
		_exit(0);
	}
	int w = open(path, O_WRONLY);
	if (w < 0)
		die("parent open: %s", strerror(errno));
	for (long i = 0; i < steps; i++) {
		if (i >= ahead)
			sleep_ms(ms);
		char buf[REC];
		record(buf, i);
		write_all(w, buf, REC);
	}
	int st;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("child exited with %d; capacity %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
	    fcntl(w, F_GETPIPE_SZ));
	unlink(path);
	return 0;
}
