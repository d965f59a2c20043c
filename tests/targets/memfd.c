/* memfd STEPS DIR [sleep=MS]
 *
 * A memfd with contents and a seal (F_SEAL_SHRINK), and a regular file DIR/gone.txt
 * deleted while open, with contents not read yet. Every step reads the next 8 bytes of
 * the deleted file at its file offset (so the offset must survive too), appends a record
 * to both files, reads the whole memfd back, tries to shrink it (the seal must refuse)
 * and prints what it saw: contents, sizes, seals and a hash of each file. */
#include "util.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define INITIAL "deleted-but-open:0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

static uint32_t hash_fd(int fd, long *size)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		die("fstat: %s", strerror(errno));
	char buf[8192];
	if (st.st_size > (off_t)sizeof buf)
		die("file too large");
	ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size)
		die("pread: %s", strerror(errno));
	*size = (long)st.st_size;
	return fnv(FNV_INIT, buf, (size_t)n);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: memfd STEPS DIR [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	const char *dir = argv[2];
	long ms = 40;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);

	int m = memfd_create("state", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (m < 0)
		die("memfd_create: %s", strerror(errno));
	write_all(m, "hello-memfd;", 12);
	if (fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		die("F_ADD_SEALS: %s", strerror(errno));

	char path[4096];
	snprintf(path, sizeof path, "%s/gone.txt", dir);
	int d = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (d < 0)
		die("open %s: %s", path, strerror(errno));
	write_all(d, INITIAL, strlen(INITIAL));
	if (unlink(path) != 0)
		die("unlink: %s", strerror(errno));
	if (lseek(d, 0, SEEK_SET) != 0)
		die("lseek: %s", strerror(errno));
	out("memfd sealed, %s deleted while open\n", "gone.txt");

	for (long i = 0; i < steps; i++) {
		char next[9] = { 0 };
		ssize_t n = read(d, next, 8);
		if (n < 0)
			die("read: %s", strerror(errno));
		off_t pos = lseek(d, 0, SEEK_CUR);
		char rec[32];
		int len = snprintf(rec, sizeof rec, "[%02ld]", i);
		if (pwrite(d, rec, (size_t)len, lseek(d, 0, SEEK_END)) != len)
			die("pwrite deleted: %s", strerror(errno));
		if (lseek(d, pos, SEEK_SET) != pos)
			die("lseek back: %s", strerror(errno));
		write_all(m, rec, (size_t)len);
		int shrink = ftruncate(m, 4) == 0 ? 0 : errno;
		long msize, dsize;
		uint32_t mh = hash_fd(m, &msize);
		uint32_t dh = hash_fd(d, &dsize);
		char head[13] = { 0 };
		if (pread(m, head, 12, 0) != 12)
			die("pread memfd: %s", strerror(errno));
		out("step %ld: deleted read \"%s\" at %ld size %ld hash %08x; memfd \"%s\" size %ld "
		    "hash %08x seals %d shrink %s; links %ld\n",
		    i, next, (long)pos, dsize, dh, head, msize, mh, fcntl(m, F_GET_SEALS),
		    shrink == EPERM ? "refused" : shrink ? strerror(shrink) : "allowed",
		    ({
			    struct stat st;
			    fstat(d, &st) == 0 ? (long)st.st_nlink : -1L;
		    }));
		sleep_ms(ms);
	}
	return 0;
}
