/* relinked DIR STEPS
 *
 * Files removed under the name they were opened by but still linked under another.
 * In DIR/PID: a (opened read-write as fd 3, "data" written, offset 4) is linked as b in
 * the same directory, then removed; c (opened read-only as fd 4) is linked as sub/c2,
 * which is opened too (fd 5), then removed. A directory DIR/PID/gone (mode 0751) is
 * opened as fd 6 and removed. A FIFO DIR/PID/p (mode 0640) is opened read-write as
 * fd 7, "in the fifo" written into it, and removed. It prints "ready", then "step N" every 20 ms for STEPS
 * steps, then for each descriptor its /proc link (DIR/PID left out), mode, link count
 * and offset, writes "+" through fd 3 and reads b back, reads c2 through fd 4, lists
 * the removed directory (getdents) and tries to make a file in it, and reads the
 * FIFO. A file DIR/PID/w is opened read-write as fd 8 and watched by inotify instance
 * fd 9 (IN_MODIFY, IN_ATTRIB, IN_DELETE_SELF), then removed (its IN_ATTRIB read): at the
 * end a byte is written to it and it is closed, and the events are listed. */
#include "util.h"
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static void show(int fd, const char *dir)
{
	char p[64], l[4096];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof l - 1);
	if (n < 0)
		die("readlink: %s", strerror(errno));
	l[n] = 0;
	size_t dl = strlen(dir);
	const char *shown = strncmp(l, dir, dl) ? l : l + dl;
	struct stat st;
	if (fstat(fd, &st))
		die("fstat: %s", strerror(errno));
	out("fd %d: %s, mode %o, %ld links, offset %ld\n", fd, shown, (unsigned)st.st_mode,
	    (long)st.st_nlink, (long)lseek(fd, 0, SEEK_CUR));
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: relinked DIR STEPS");
	char dir[2048], a[4096], b[4096], c[4096], sub[4096], c2[4096];
	snprintf(dir, sizeof dir, "%s/%d", argv[1], (int)getpid());
	long steps = arg_long(argc, argv, 2, 0);
	snprintf(a, sizeof a, "%s/a", dir);
	snprintf(b, sizeof b, "%s/b", dir);
	snprintf(c, sizeof c, "%s/c", dir);
	snprintf(sub, sizeof sub, "%s/sub", dir);
	snprintf(c2, sizeof c2, "%s/sub/c2", dir);
	if (mkdir(dir, 0755) || mkdir(sub, 0755))
		die("mkdir %s: %s", dir, strerror(errno));
	int fa = open(a, O_RDWR | O_CREAT | O_EXCL, 0644);
	if (fa != 3 || write(fa, "data", 4) != 4 || link(a, b) || unlink(a))
		die("a: %s", strerror(errno));
	int fc = open(c, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fc < 0 || write(fc, "cccc", 4) != 4 || close(fc))
		die("c: %s", strerror(errno));
	fc = open(c, O_RDONLY);
	if (fc != 4 || link(c, c2) || open(c2, O_RDONLY) != 5 || unlink(c))
		die("c2: %s", strerror(errno));
	if (lseek(fc, 1, SEEK_SET) != 1)
		die("lseek: %s", strerror(errno));
	char gone[4096];
	snprintf(gone, sizeof gone, "%s/gone", dir);
	if (mkdir(gone, 0700) || chmod(gone, 0751) || open(gone, O_RDONLY | O_DIRECTORY) != 6 ||
	    rmdir(gone))
		die("gone: %s", strerror(errno));
	char fifo[4096];
	snprintf(fifo, sizeof fifo, "%s/p", dir);
	if (mkfifo(fifo, 0600) || chmod(fifo, 0640) || open(fifo, O_RDWR) != 7 ||
	    write(7, "in the fifo", 11) != 11 || unlink(fifo))
		die("fifo: %s", strerror(errno));
	char w[4096];
	snprintf(w, sizeof w, "%s/w", dir);
	if (open(w, O_RDWR | O_CREAT | O_EXCL, 0600) != 8 || inotify_init1(IN_NONBLOCK) != 9 ||
	    inotify_add_watch(9, w, IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF) != 1 || unlink(w))
		die("watch: %s", strerror(errno));
	char ev[4096];
	if (read(9, ev, sizeof ev) <= 0)
		die("read the unlink's event: %s", strerror(errno));
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	for (int fd = 3; fd <= 7; fd++)
		show(fd, dir);
	char buf[16] = {0};
	int fb = open(b, O_RDONLY);
	if (write(3, "+", 1) != 1 || fb < 0 || read(fb, buf, sizeof buf - 1) < 0)
		die("write/read: %s", strerror(errno));
	out("b now reads [%s]\n", buf);
	memset(buf, 0, sizeof buf);
	if (read(4, buf, sizeof buf - 1) < 0)
		die("read c: %s", strerror(errno));
	out("c read from its offset: [%s]\n", buf);
	char ents[4096];
	long n = syscall(SYS_getdents64, 6, ents, sizeof ents);
	out("listing the removed directory: %s\n", n < 0 ? strerror(errno) : n ? "entries" : "nothing");
	int made = openat(6, "new", O_RDWR | O_CREAT, 0600);
	out("a file made in it: %s\n", made >= 0 ? "yes" : strerror(errno));
	memset(buf, 0, sizeof buf);
	if (read(7, buf, sizeof buf - 1) < 0)
		die("read fifo: %s", strerror(errno));
	out("the fifo held [%s]\n", buf);
	show(8, dir);
	if (write(8, "x", 1) != 1 || close(8))
		die("write/close w: %s", strerror(errno));
	ssize_t got = read(9, ev, sizeof ev);
	for (ssize_t off = 0; got > 0 && off < got;) {
		struct inotify_event *e = (struct inotify_event *)(ev + off);
		out("watch %d: event %#x\n", e->wd, e->mask);
		off += (ssize_t)sizeof *e + e->len;
	}
	return 0;
}
