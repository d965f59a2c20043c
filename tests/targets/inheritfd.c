/* inheritfd FD
 *
 * Moves descriptor FD (a pipe from whoever started it) to descriptor 5, prints "ready",
 * then reads lines from descriptor 5 and prints each as "line N: TEXT h=HASH" (HASH
 * covers every byte read so far). At end of file it prints how many lines it read. */
#include "util.h"

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: inheritfd FD");
	int fd = (int)arg_long(argc, argv, 1, 0);
	if (fd != 5) {
		if (dup2(fd, 5) != 5)
			die("dup2: %s", strerror(errno));
		close(fd);
	}
	out("ready\n");
	uint32_t h = FNV_INIT;
	char line[1024];
	size_t len = 0;
	long n = 0;
	for (;;) {
		char c;
		ssize_t r = read(5, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read: %s", strerror(errno));
		if (r == 0)
			break;
		h = fnv(h, &c, 1);
		if (c != '\n' && len < sizeof line - 1) {
			line[len++] = c;
			continue;
		}
		n++;
		out("line %ld: %.*s h=%08x\n", n, (int)len, line, h);
		len = 0;
	}
	out("end of input after %ld lines\n", n);
	return 0;
}
