/* stage MODE ARGS: one stage of a shell pipeline `stage produce N | stage transform MS |
 * stage consume MS`.
 *
 *   produce N       writes N numbered lines (about 120 bytes each) as fast as the pipe
 *                   takes them, so the pipe to the next stage stays full;
 *   transform MS    reads lines through its own 4 KiB buffer (data read but not yet
 *                   used is in its memory), upper-cases them, appends a running hash of
 *                   everything it has seen, writes them on and sleeps MS ms per line;
 *   consume MS      reads lines the same way, checks they arrive in order, prints one
 *                   short line per line read with a running hash, sleeps MS ms per line,
 *                   and at the end prints the count and the hash of everything.
 *
 * Data is in flight in both pipes almost all the time; any byte lost, duplicated or
 * reordered across a checkpoint changes the hashes (and the order check) printed after
 * it. */
#include "util.h"

#include <ctype.h>

struct reader {
	char buf[4096];
	size_t len, off;
};

/* The next line (without its newline) into `line`; its length, or -1 at end of file. */
static long next_line(struct reader *r, char *line, size_t cap)
{
	size_t n = 0;
	for (;;) {
		if (r->off == r->len) {
			ssize_t got = read(0, r->buf, sizeof r->buf);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				die("read: %s", strerror(errno));
			if (got == 0)
				return n ? (long)n : -1;
			r->len = (size_t)got;
			r->off = 0;
		}
		char c = r->buf[r->off++];
		if (c == '\n')
			return (long)n;
		if (n + 1 < cap)
			line[n++] = c;
	}
}

static void produce(long n)
{
	char line[256];
	for (long i = 0; i < n; i++) {
		int len = snprintf(line, sizeof line, "item %05ld ", i);
		for (int k = 0; k < 100; k++)
			line[len++] = (char)('a' + (i * 7 + k) % 26);
		line[len++] = '\n';
		write_all(1, line, (size_t)len);
	}
}

static void transform(long ms)
{
	static struct reader r;
	char line[512], outl[640];
	uint32_t h = FNV_INIT;
	long len;
	while ((len = next_line(&r, line, sizeof line)) >= 0) {
		h = fnv(h, line, (size_t)len);
		for (long k = 0; k < len; k++)
			line[k] = (char)toupper((unsigned char)line[k]);
		int n = snprintf(outl, sizeof outl, "%.*s %08x\n", (int)len, line, h);
		write_all(1, outl, (size_t)n);
		sleep_ms(ms);
	}
}

static void consume(long ms)
{
	static struct reader r;
	char line[640];
	uint32_t h = FNV_INIT;
	long len, count = 0;
	while ((len = next_line(&r, line, sizeof line)) >= 0) {
		long idx = -1;
		if (sscanf(line, "ITEM %ld", &idx) != 1 || idx != count)
			out("out of order: expected item %ld, got \"%.20s\"\n", count, line);
		h = fnv(h, line, (size_t)len);
		out("got %.10s ... %.8s hash %08x\n", line, len >= 8 ? line + len - 8 : line, h);
		count++;
		sleep_ms(ms);
	}
	out("consumer: %ld lines, hash %08x\n", count, h);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: stage produce N | transform MS | consume MS");
	long a = arg_long(argc, argv, 2, 0);
	if (!strcmp(argv[1], "produce"))
		produce(a);
	else if (!strcmp(argv[1], "transform"))
		transform(a);
	else if (!strcmp(argv[1], "consume"))
		consume(a);
	else
		die("unknown mode %s", argv[1]);
	return 0;
}
