/* belowmnt DIR [shared|nested|peers]
 *
 * A tree whose child made a mount namespace of its own (issue 15). The root forks a
 * child that calls unshare(CLONE_NEWNS), makes every mount of its copy private, mounts a
 * tmpfs on DIR/inner, binds the host directory DIR/host (the test made it, with a file
 * host.txt holding "host") on DIR/inner/bound, moves its working directory into the
 * tmpfs and forks a grandchild, which stays in that namespace. Both count (every 10 ms)
 * and write their count into the file NAME.count of their working directory (open,
 * write, close each time).
 *
 *   shared  the child leaves its copy's propagation as it is and makes its tmpfs shared;
 *           the grandchild makes a mount namespace of its own (a copy whose tmpfs is a
 *           peer of the child's: ckpt refuses it).
 *   nested  the grandchild makes a mount namespace of its own (private): two deep.
 *   peers   the child leaves its copy's propagation as it is: its copies of the shared
 *           mounts of the namespace it was copied from stay in their peer groups.
 *
 * Each says "ready" on its own pipe once set up; the root then prints "ready". On a line
 * "report" from stdin the root asks each to check itself and prints "report: " and the
 * answers (NAME=ok or NAME=bad:WHY): its count went on since the last check and the
 * file holds it, bound/host.txt holds "host", its working directory is on a tmpfs, it is
 * in another mount namespace than its parent (the child; the grandchild: the same one,
 * or its own). On "exit" or end of file the root tells them to exit, waits, exits 0. */
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#define TMPFS_MAGIC_ 0x01021994

struct rep {
	const char *name;
	int cmd[2];
	int res[2];
};
static struct rep reps[2];
static int life[2];
static const char *mode = "";

static unsigned long ns_ino(const char *pid, const char *kind)
{
	char p[64];
	struct stat st;
	snprintf(p, sizeof p, "/proc/%s/ns/%s", pid, kind);
	if (stat(p, &st) != 0)
		return 0;
	return (unsigned long)st.st_ino;
}

static int apart_from_parent(void)
{
	char pp[32];
	snprintf(pp, sizeof pp, "%d", (int)getppid());
	unsigned long mine = ns_ino("self", "mnt"), theirs = ns_ino(pp, "mnt");
	return mine != 0 && theirs != 0 && mine != theirs;
}

static void answer(struct rep *r, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		_exit(102);
	write_all(r->res[1], buf, (size_t)n);
}

static long count, last;

static void write_count(const char *name)
{
	char p[64], b[32];
	snprintf(p, sizeof p, "%s.count", name);
	int n = snprintf(b, sizeof b, "%ld\n", count);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open %s: %s", p, strerror(errno));
	write_all(fd, b, (size_t)n);
	close(fd);
}

static int file_is(const char *p, const char *want)
{
	char b[64];
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	if (n < 0)
		return 0;
	b[n] = 0;
	return strcmp(b, want) == 0;
}

static void check(struct rep *r, int want_apart)
{
	char p[64], b[32];
	struct statfs sf;
	snprintf(p, sizeof p, "%s.count", r->name);
	snprintf(b, sizeof b, "%ld\n", count);
	const char *bad = NULL;
	if (count <= last)
		bad = "count-stopped";
	else if (!file_is(p, b))
		bad = "count-file";
	else if (!file_is("bound/host.txt", "host\n"))
		bad = "bound";
	else if (statfs(".", &sf) != 0 || sf.f_type != TMPFS_MAGIC_)
		bad = "cwd-not-tmpfs";
	else if (apart_from_parent() != want_apart)
		bad = "namespace";
	last = count;
	if (bad)
		answer(r, "%s=bad:%s\n", r->name, bad);
	else
		answer(r, "%s=ok\n", r->name);
}

/* Count and answer reports (each after the next count, so that it shows the counting
 * went on) until the root says exit. */
static void serve(struct rep *r, int want_apart)
{
	int pending = 0;
	answer(r, "ready\n");
	for (;;) {
		struct pollfd p[2] = { { r->cmd[0], POLLIN, 0 }, { life[0], POLLIN, 0 } };
		int n = poll(p, 2, 10);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (p[1].revents)
			_exit(0);
		if (p[0].revents) {
			char c;
			ssize_t k = read(r->cmd[0], &c, 1);
			if (k <= 0 && !(k < 0 && errno == EINTR))
				_exit(0);
			if (k == 1)
				pending = 1;
			continue;
		}
		count++;
		write_count(r->name);
		if (pending)
			check(r, want_apart);
		pending = 0;
	}
}

static void new_mount_ns(int private)
{
	if (unshare(CLONE_NEWNS) != 0)
		die("unshare(CLONE_NEWNS): %s", strerror(errno));
	if (private && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		die("make / private: %s", strerror(errno));
}

static void as_grandchild(void)
{
	struct rep *r = &reps[1];
	close(life[1]);
	close(reps[0].cmd[1]);
	close(reps[0].res[0]);
	close(reps[1].cmd[1]);
	close(reps[1].res[0]);
	int own = 0;
	if (strcmp(mode, "shared") == 0) {
		new_mount_ns(0);
		own = 1;
	} else if (strcmp(mode, "nested") == 0) {
		new_mount_ns(1);
		own = 1;
	}
	serve(r, own);
}

static void as_child(const char *dir)
{
	char inner[512], host[512], bound[600];
	close(life[1]);
	close(reps[0].cmd[1]);
	close(reps[0].res[0]);
	snprintf(inner, sizeof inner, "%s/inner", dir);
	snprintf(host, sizeof host, "%s/host", dir);
	snprintf(bound, sizeof bound, "%s/bound", inner);
	int shared = strcmp(mode, "shared") == 0;
	new_mount_ns(!shared && strcmp(mode, "peers") != 0);
	if (mount("belowmnt", inner, "tmpfs", 0, "size=1m,mode=755") != 0)
		die("mount tmpfs on %s: %s", inner, strerror(errno));
	if (mkdir(bound, 0755) != 0)
		die("mkdir %s: %s", bound, strerror(errno));
	if (mount(host, bound, NULL, MS_BIND, NULL) != 0)
		die("bind %s on %s: %s", host, bound, strerror(errno));
	if (shared && mount(NULL, inner, NULL, MS_SHARED, NULL) != 0)
		die("make %s shared: %s", inner, strerror(errno));
	if (chdir(inner) != 0)
		die("chdir %s: %s", inner, strerror(errno));
	int fd = open("notes.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open notes.txt: %s", strerror(errno));
	write_all(fd, "made inside\n", 12);
	close(fd);
	pid_t g = fork();
	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0)
		as_grandchild();
	close(reps[1].cmd[0]);
	close(reps[1].res[1]);
	close(reps[1].cmd[1]);
	close(reps[1].res[0]);
	serve(&reps[0], 1);
}

static int read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		ssize_t k = read(fd, buf + n, 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: belowmnt DIR [shared|nested|peers]");
	if (argc > 2)
		mode = argv[2];
	reps[0].name = "child";
	reps[1].name = "grandchild";
	if (pipe2(life, O_CLOEXEC) != 0)
		die("pipe: %s", strerror(errno));
	for (int i = 0; i < 2; i++)
		if (pipe2(reps[i].cmd, O_CLOEXEC) != 0 || pipe2(reps[i].res, O_CLOEXEC) != 0)
			die("pipe: %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0)
		as_child(argv[1]);
	close(life[0]);
	char line[256];
	for (int i = 0; i < 2; i++) {
		close(reps[i].cmd[0]);
		close(reps[i].res[1]);
		if (read_line(reps[i].res[0], line, sizeof line) != 0 || strcmp(line, "ready") != 0)
			die("%s did not get ready", reps[i].name);
	}
	out("ready\n");
	while (read_line(0, line, sizeof line) == 0) {
		if (strcmp(line, "exit") == 0)
			break;
		if (strcmp(line, "report") != 0)
			continue;
		char a[2][128];
		for (int i = 0; i < 2; i++) {
			write_all(reps[i].cmd[1], "r", 1);
			if (read_line(reps[i].res[0], a[i], sizeof a[i]) != 0)
				snprintf(a[i], sizeof a[i], "%s=gone", reps[i].name);
		}
		out("report: %s %s\n", a[0], a[1]);
	}
	close(life[1]);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return 0;
}
