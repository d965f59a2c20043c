/* User namespace set-up shared by the user-namespace targets (userns.c, nestuserns.c):
 * writing /proc files, the two ways a test's user namespace gets its maps, and reading
 * a /proc file with its blanks squeezed. Include after util.h. */
#ifndef CKPT_USERMAP_H
#define CKPT_USERMAP_H

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	write_all(fd, text, strlen(text));
	close(fd);
}

/* The contents of `path` (at most n - 1 bytes), runs of blanks squeezed to one space. */
static void get(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	ssize_t r = read(fd, buf, n - 1);
	close(fd);
	buf[r > 0 ? r : 0] = 0;
	char *w = buf;
	int blank = 1;
	for (char *c = buf; *c; c++) {
		if (*c == ' ' || *c == '\t' || *c == '\n') {
			if (!blank)
				*w++ = ' ';
			blank = 1;
		} else {
			*w++ = *c;
			blank = 0;
		}
	}
	if (w > buf && w[-1] == ' ')
		w--;
	*w = 0;
}

/* Own user namespace: deny setgroups, map root inside to `uid`/`gid` outside. */
static void self_map(uid_t uid, gid_t gid)
{
	char map[64];
	put("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "0 %u 1\n", uid);
	put("/proc/self/uid_map", map);
	snprintf(map, sizeof map, "0 %u 1\n", gid);
	put("/proc/self/gid_map", map);
}

/* Make a user namespace and enter it as root. `wide`: 65536 IDs from `base` outside,
 * the maps written from outside by a helper child (as newuidmap does; setgroups
 * stays allowed); otherwise only root, mapped onto our own IDs (`self_map`). */
static void enter_user_ns(int wide, long base)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int go[2], done[2];
	pid_t helper = -1;
	if (wide) {
		if (pipe(go) != 0 || pipe(done) != 0)
			die("pipe: %s", strerror(errno));
		helper = fork();
		if (helper < 0)
			die("fork: %s", strerror(errno));
		if (helper == 0) {
			char b, path[64], map[64];
			if (read(go[0], &b, 1) != 1)
				_exit(2);
			pid_t pp = getppid();
			snprintf(map, sizeof map, "0 %ld 65536\n", base);
			snprintf(path, sizeof path, "/proc/%d/uid_map", pp);
			put(path, map);
			snprintf(path, sizeof path, "/proc/%d/gid_map", pp);
			put(path, map);
			_exit(write(done[1], "d", 1) == 1 ? 0 : 3);
		}
	}
	if (unshare(CLONE_NEWUSER) != 0)
		die("unshare(CLONE_NEWUSER): %s", strerror(errno));
	if (!wide) {
		self_map(uid, gid);
		return;
	}
	char b;
	int st;
	if (write(go[1], "g", 1) != 1 || read(done[0], &b, 1) != 1)
		die("the map helper failed");
	if (waitpid(helper, &st, 0) != helper || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("the map helper failed");
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);
	if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
		die("becoming root inside: %s", strerror(errno));
}

#endif
