/* rmdirs DIR STEPS MODE
 *
 * A process whose working or root directory was removed under it. In DIR/PID:
 *   cwd     a directory d (mode 0751) is made, the process moves into it (chdir) and
 *           removes it (rmdir by its absolute path): its working directory is removed;
 *   root    a directory r (mode 0751) is made, the process takes it as its root
 *           (chroot, chdir "/") and removes it through a descriptor of DIR/PID taken
 *           before: its root and working directories are removed;
 *   nested  DIR/PID/n/d is made, the process moves into d, and removes d then n: the
 *           directory that held its working directory is gone too.
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then what the removed
 * directory shows: its mode and link count (fstatat "."), what getcwd, a listing
 * (getdents), making a file in it and opening one give (errno names), and whether ".."
 * leads to DIR/PID (cwd, nested: its parent; root: ".." of the root is the root). In
 * mode cwd it then prints its /proc/self/cwd link (DIR/PID left out), moves to ".."
 * and prints getcwd (DIR/PID left out). Output is the same for every run. */
#include "util.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static const char *err(int r)
{
	return r < 0 ? strerrorname_np(errno) : "ok";
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: rmdirs DIR STEPS MODE");
	char dir[2048], d[4096], n[4096];
	snprintf(dir, sizeof dir, "%s/%d", argv[1], (int)getpid());
	long steps = arg_long(argc, argv, 2, 0);
	const char *mode = argv[3];
	int cwd = !strcmp(mode, "cwd"), root = !strcmp(mode, "root"), nested = !strcmp(mode, "nested");
	if (!cwd && !root && !nested)
		die("unknown mode %s", mode);
	if (mkdir(dir, 0755))
		die("mkdir %s: %s", dir, strerror(errno));
	struct stat parent;
	if (stat(dir, &parent))
		die("stat %s: %s", dir, strerror(errno));
	if (cwd) {
		snprintf(d, sizeof d, "%s/d", dir);
		if (mkdir(d, 0700) || chmod(d, 0751) || chdir(d) || rmdir(d))
			die("d: %s", strerror(errno));
	} else if (root) {
		snprintf(d, sizeof d, "%s/r", dir);
		int p = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (p < 0 || mkdir(d, 0700) || chmod(d, 0751) || chroot(d) || chdir("/") ||
		    unlinkat(p, "r", AT_REMOVEDIR) || close(p))
			die("r: %s", strerror(errno));
	} else {
		snprintf(n, sizeof n, "%s/n", dir);
		snprintf(d, sizeof d, "%s/n/d", dir);
		if (mkdir(n, 0755) || mkdir(d, 0700) || chdir(d) || rmdir(d) || rmdir(n))
			die("n/d: %s", strerror(errno));
	}
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	struct stat st;
	if (fstatat(AT_FDCWD, ".", &st, 0))
		die("stat .: %s", strerror(errno));
	out("removed directory: mode %o, %ld links\n", (unsigned)st.st_mode, (long)st.st_nlink);
	char buf[4096];
	out("getcwd: %s\n", getcwd(buf, sizeof buf) ? "ok" : strerrorname_np(errno));
	int fd = open(".", O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die("open .: %s", strerror(errno));
	char ents[4096];
	out("listing: %s\n", err((int)syscall(SYS_getdents64, fd, ents, sizeof ents)));
	close(fd);
	out("a file made in it: %s\n", err(open("new", O_RDWR | O_CREAT | O_EXCL, 0600)));
	out("a file opened in it: %s\n", err(open("new", O_RDONLY)));
	struct stat up;
	if (stat("..", &up))
		die("stat ..: %s", strerror(errno));
	if (root)
		out("its parent is itself: %s\n",
		    up.st_dev == st.st_dev && up.st_ino == st.st_ino ? "yes" : "no");
	else
		out("its parent is DIR/PID: %s\n",
		    up.st_dev == parent.st_dev && up.st_ino == parent.st_ino ? "yes" : "no");
	if (cwd) {
		ssize_t l = readlink("/proc/self/cwd", buf, sizeof buf - 1);
		if (l < 0)
			die("readlink: %s", strerror(errno));
		buf[l] = 0;
		size_t dl = strlen(dir);
		out("cwd link: %s\n", strncmp(buf, dir, dl) ? buf : buf + dl);
		if (chdir("..") || !getcwd(buf, sizeof buf))
			die("chdir ..: %s", strerror(errno));
		out("after cd ..: [%s]\n", strncmp(buf, dir, dl) ? buf : buf + dl);
	}
	out("done\n");
	return 0;
}
