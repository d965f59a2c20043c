/* blocked_read: blocks in read(0) and echoes each line it reads as "N: line".
 *
 * usage: blocked_read [BUFSIZE]
 *
 * Reads stdin with read(2) directly (no stdio), so the process spends its life inside a
 * read system call; a checkpoint taken there must resume it. At end of input it prints
 * "eof after N lines" (and a partial last line, if any) and exits 0. */
#include "util.h"

int main(int argc, char **argv)
{
	long bufsize = arg_long(argc, argv, 1, 4096);
	if (bufsize < 2 || bufsize > 65536)
		die("BUFSIZE must be 2..65536");
	char buf[65536];
	size_t have = 0;
	long lines = 0;
	for (;;) {
		ssize_t n = read(0, buf + have, (size_t)bufsize - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read: %s", strerror(errno));
		}
		if (n == 0)
			break;
		have += (size_t)n;
		char *start = buf, *nl;
		while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
			*nl = 0;
			out("%ld: %s\n", ++lines, start);
			start = nl + 1;
		}
		have -= (size_t)(start - buf);
		memmove(buf, start, have);
		if (have == (size_t)bufsize) {
			out("%ld: %.*s (long line cut)\n", ++lines, (int)have, buf);
			have = 0;
		}
	}
	if (have)
		out("partial last line: %.*s\n", (int)have, buf);
	out("eof after %ld lines\n", lines);
	return 0;
}
