/* filerace STEPS DIR [sleep=MS]
 *
 * Files restore must give back exactly: DIR/a.txt open read-only as descriptor 3 (kept),
 * DIR/b.bin mapped MAP_PRIVATE read-only (its descriptor closed), and, if DIR/ghost
 * exists, DIR/ghost open read-only as descriptor 4 (the test deletes it once the first
 * line is out, so its contents travel in the image), and, if DIR/fifo exists, that FIFO
 * open read-write as descriptor 5. Every step prints the first 16 bytes the descriptor
 * reads (pread at 0), the mapping shows, and the ghost reads, and sends a byte through
 * the FIFO and reads it back. */
#include "util.h"
#include <fcntl.h>
#include <sys/mman.h>

static void show16(char *dst, const char *src)
{
	for (int i = 0; i < 16; i++)
		dst[i] = (src[i] >= 32 && src[i] < 127) ? src[i] : '.';
	dst[16] = 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: filerace STEPS DIR [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	const char *dir = argv[2];
	long ms = 40;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);
	char path[4096];

	snprintf(path, sizeof path, "%s/a.txt", dir);
	int a = open(path, O_RDONLY);
	if (a != 3)
		die("open %s: %s (fd %d)", path, strerror(errno), a);
	snprintf(path, sizeof path, "%s/b.bin", dir);
	int bf = open(path, O_RDONLY);
	if (bf < 0)
		die("open %s: %s", path, strerror(errno));
	char *b = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, bf, 0);
	if (b == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	close(bf);
	snprintf(path, sizeof path, "%s/ghost", dir);
	int g = open(path, O_RDONLY);
	if (g >= 0 && g != 4)
		die("open %s: fd %d", path, g);
	snprintf(path, sizeof path, "%s/fifo", dir);
	int f = open(path, O_RDWR | O_NONBLOCK);
	if (f >= 0) {
		if (dup2(f, 5) != 5)
			die("dup2: %s", strerror(errno));
		close(f);
		f = 5;
	}

	for (long i = 0; i < steps; i++) {
		char buf[17] = { 0 }, sa[17], sb[17], sg[17] = "-";
		if (pread(a, buf, 16, 0) != 16)
			die("pread a: %s", strerror(errno));
		show16(sa, buf);
		show16(sb, b);
		if (g >= 0) {
			memset(buf, 0, sizeof buf);
			if (pread(g, buf, 16, 0) != 16)
				die("pread ghost: %s", strerror(errno));
			show16(sg, buf);
		}
		const char *sf = "-";
		if (f >= 0) {
			char c = 'x';
			if (write(f, &c, 1) != 1 || read(f, &c, 1) != 1 || c != 'x')
				die("fifo: %s", strerror(errno));
			sf = "ok";
		}
		out("step %ld a=%s b=%s g=%s f=%s\n", i, sa, sb, sg, sf);
		sleep_ms(ms);
	}
	out("done\n");
	return 0;
}
