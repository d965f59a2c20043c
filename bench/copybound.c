/* copybound DIR MIB|BYTES: the one-copy bound for an image of that many bytes on the file
 * system holding DIR.
 *
 *   write: mmap anonymous memory and populate it (untimed), then time write(2) of all of
 *          it to a new file in DIR in large chunks, then close(2)            -> write_s
 *          the same plus fsync(2) before close (ckpt dump fsyncs its image)  -> write_fsync_s
 *          (write_fsync_s is measured on the same pass: write_s is taken before fsync)
 *   read:  unmap the source, mmap fresh (never touched) anonymous memory and time
 *          pread(2) of the whole file into it (page faults included, as a restore pays
 *          them in the new process)                                           -> read_s
 *
 * The file is left in the page cache (it was just written): "warm", as a restore
 * right after a dump. It is removed at the end. Output: one line of key=value. A size
 * with a suffix "b" is in bytes (e.g. 1073745920b), otherwise in MiB. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64ul << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "copybound: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: copybound DIR MIB|BYTESb\n");
		return 2;
	}
	char *end;
	size_t bytes = strtoull(argv[2], &end, 10);
	if (*end != 'b')
		bytes <<= 20;
	if (bytes == 0)
		bytes = 4096;
	char path[4096];
	snprintf(path, sizeof path, "%s/.copybound.%d", argv[1], (int)getpid());

	uint8_t *src = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (src == MAP_FAILED)
		die("mmap");
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i + 8 <= bytes; i += 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545f4914f6cdd1dull;
		memcpy(src + i, &v, 8);
	}

	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open for writing");
	double t0 = now();
	for (size_t off = 0; off < bytes;) {
		size_t len = bytes - off < CHUNK ? bytes - off : CHUNK;
		ssize_t n = write(fd, src + off, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			unlink(path);
			die("write");
		}
		off += (size_t)n;
	}
	double t1 = now();
	if (fsync(fd) < 0)
		die("fsync");
	double t2 = now();
	if (close(fd) < 0)
		die("close");
	double t3 = now();
	double write_s = (t1 - t0) + (t3 - t2);
	double write_fsync_s = t3 - t0;

	munmap(src, bytes);
	uint8_t *dst = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	if (dst == MAP_FAILED)
		die("mmap");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open for reading");
	double r0 = now();
	for (size_t off = 0; off < bytes;) {
		size_t len = bytes - off < CHUNK ? bytes - off : CHUNK;
		ssize_t n = pread(fd, dst + off, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			unlink(path);
			die("pread");
		}
		if (n == 0) {
			errno = EIO;
			die("short file");
		}
		off += (size_t)n;
	}
	double r1 = now();
	close(fd);
	unlink(path);
	if (memcmp(dst, dst + bytes / 2, 8) == 0 && bytes >= 16)
		fprintf(stderr, "copybound: warning: data looks repetitive\n");
	printf("bytes=%zu write_s=%.6f write_fsync_s=%.6f read_s=%.6f\n", bytes, write_s,
	       write_fsync_s, r1 - r0);
	return 0;
}
