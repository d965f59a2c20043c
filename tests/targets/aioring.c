/* aioring DIR STEPS MODE [sleep=MS]
 *
 * An AIO context (io_setup(4): a ring of 127 events) with completed events not reaped.
 * It writes DIR/data ("0123456789abcdef"), reads it through the context 5 times and
 * reaps those (the ring's head and tail are then 5), then submits 3 more reads (data
 * 100, 101, 102; 4 bytes at offsets 0, 4, 8), which complete at once, and leaves them
 * in the ring. Then one "step N" line a step; at step STEPS-2 it reaps the 3 events
 * (io_getevents) and prints, for each, its data, whether its obj is its iocb, its
 * result and the bytes read; then whether the ring is still mapped at the context's ID
 * (/proc/self/maps), and a new read submitted and reaped. At the end "done".
 * MODE plain: as above. MODE fork: a child forked after io_setup (it inherits a copy of
 * the ring's mapping, not the context) sleeps as long as the steps and exits; the
 * parent reaps it at the end. */
#include "util.h"
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static aio_context_t ctx;
static struct iocb cbs[4];
static char bufs[4][8];
static int fd;

static void submit(int i, long data, long off)
{
	struct iocb *cb = &cbs[i];
	memset(cb, 0, sizeof *cb);
	cb->aio_data = (uint64_t)data;
	cb->aio_fildes = (uint32_t)fd;
	cb->aio_lio_opcode = IOCB_CMD_PREAD;
	cb->aio_buf = (uint64_t)(uintptr_t)bufs[i];
	cb->aio_nbytes = 4;
	cb->aio_offset = off;
	struct iocb *p = cb;
	if (syscall(SYS_io_submit, ctx, 1, &p) != 1)
		die("io_submit: %s", strerror(errno));
}

static void reap(int n)
{
	struct io_event ev[4];
	long got = syscall(SYS_io_getevents, ctx, n, n, ev, NULL);
	if (got != n)
		die("io_getevents: %ld %s", got, strerror(errno));
	for (int k = 0; k < n; k++) {
		int i = -1;
		for (int j = 0; j < 4; j++)
			if (ev[k].obj == (uint64_t)(uintptr_t)&cbs[j])
				i = j;
		out("  event data %llu obj %s res %lld read [%.4s]\n",
		    (unsigned long long)ev[k].data, i >= 0 ? "its iocb" : "unknown",
		    (long long)ev[k].res, i >= 0 ? bufs[i] : "????");
	}
}

static int ring_mapped(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long a;
		if (sscanf(line, "%lx-", &a) == 1 && a == ctx && strstr(line, "/[aio]"))
			found = 1;
	}
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: aioring DIR STEPS MODE [sleep=MS]");
	long steps = arg_long(argc, argv, 2, 0);
	const char *mode = argv[3];
	long sleep_each = 20;
	if (argc > 4) {
		if (strncmp(argv[4], "sleep=", 6))
			die("unknown option %s", argv[4]);
		sleep_each = strtol(argv[4] + 6, NULL, 0);
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "0123456789abcdef", 16) != 16)
		die("write %s: %s", path, strerror(errno));
	if (syscall(SYS_io_setup, 4, &ctx))
		die("io_setup: %s", strerror(errno));
	pid_t child = 0;
	if (!strcmp(mode, "fork")) {
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0) {
			sleep_ms(steps * sleep_each);
			_exit(0);
		}
	} else if (strcmp(mode, "plain")) {
		die("unknown mode %s", mode);
	}
	for (int i = 0; i < 5; i++) {
		submit(0, i, 0);
		reap(1);
	}
	submit(0, 100, 0);
	submit(1, 101, 4);
	submit(2, 102, 8);
	out("holding 3 events\n");
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		if (step == steps - 2) {
			reap(3);
			out("  ring at its ID: %s\n", ring_mapped() ? "yes" : "no");
			submit(3, 103, 12);
			reap(1);
		}
		sleep_ms(sleep_each);
	}
	if (child > 0 && waitpid(child, NULL, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("done\n");
	return 0;
}
