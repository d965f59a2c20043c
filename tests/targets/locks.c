/* locks DIR STEPS [sleep=MS]
 *
 * A parent and a child holding file locks on DIR/locked.dat (which must exist, at least
 * 400 bytes; it is never written) and on DIR itself:
 *   parent: flock LOCK_EX (fd a), POSIX write lock on bytes 0-99 and read lock from 200
 *           to EOF (fd b), OFD write lock on bytes 100-149 (fd c), flock LOCK_SH on DIR;
 *   child:  POSIX write lock on bytes 150-199 (its own descriptor); it inherits a, b, c.
 * Every step the parent probes the locks through open file descriptions of its own
 * (flock LOCK_NB, F_OFD_GETLK; opened once: closing a descriptor of the file would drop
 * the parent's POSIX locks) and prints what holds each range: "self" (a POSIX lock of
 * the parent), "child", "ofd" (an OFD lock), or "free". A lock lost at restore shows. */
#include "util.h"
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>

static pid_t child;

static void setlk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, cmd, &fl) != 0)
		die("fcntl lock %ld+%ld: %s", (long)start, (long)len, strerror(errno));
}

static const char *who(int p, off_t at)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };
	if (fcntl(p, F_OFD_GETLK, &fl) != 0)
		die("F_OFD_GETLK: %s", strerror(errno));
	if (fl.l_type == F_UNLCK)
		return "free";
	const char *t = fl.l_type == F_WRLCK ? "W" : "R";
	static char buf[16][32];
	static int k;
	char *b = buf[k++ % 16];
	snprintf(b, 32, "%s:%s", t,
		 fl.l_pid == getpid() ? "self" : fl.l_pid == child ? "child" : fl.l_pid == -1 ? "ofd" : "other");
	return b;
}

static const char *flock_state(int p)
{
	if (flock(p, LOCK_EX | LOCK_NB) != 0)
		return errno == EWOULDBLOCK ? "busy" : "error";
	flock(p, LOCK_UN);
	return "free";
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: locks DIR STEPS [sleep=MS]");
	const char *dir = argv[1];
	long steps = arg_long(argc, argv, 2, 30);
	long ms = 30;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);
	char file[4096];
	snprintf(file, sizeof file, "%s/locked.dat", dir);
	int a = open(file, O_RDWR), b = open(file, O_RDWR), c = open(file, O_RDWR);
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	if (a < 0 || b < 0 || c < 0 || d < 0)
		die("open: %s", strerror(errno));
	if (flock(a, LOCK_EX) || flock(d, LOCK_SH))
		die("flock: %s", strerror(errno));
	setlk(b, F_SETLK, F_WRLCK, 0, 100);
	setlk(b, F_SETLK, F_RDLCK, 200, 0);
	setlk(c, F_OFD_SETLK, F_WRLCK, 100, 50);
	int go[2], stop[2];
	if (pipe(go) || pipe(stop))
		die("pipe: %s", strerror(errno));
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		int e = open(file, O_RDWR);
		if (e < 0)
			die("child open: %s", strerror(errno));
		setlk(e, F_SETLK, F_WRLCK, 150, 50);
		write_all(go[1], "x", 1);
		/* Hold the lock until the parent has probed for the last time. */
		char y;
		while (read(stop[0], &y, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	char x;
	if (read(go[0], &x, 1) != 1)
		die("child did not start");
	int probe = open(file, O_RDWR), fprobe = open(file, O_RDONLY);
	int dprobe = open(dir, O_RDONLY | O_DIRECTORY);
	if (probe < 0 || fprobe < 0 || dprobe < 0)
		die("open probes: %s", strerror(errno));
	out("locks taken\n");
	for (long i = 0; i < steps; i++) {
		out("step %ld: flock %s; dir %s; 0 %s; 99 %s; 100 %s; 149 %s; 150 %s; 199 %s; 200 %s; "
		    "99999 %s\n",
		    i, flock_state(fprobe), flock_state(dprobe), who(probe, 0), who(probe, 99),
		    who(probe, 100), who(probe, 149), who(probe, 150), who(probe, 199), who(probe, 200),
		    who(probe, 99999));
		sleep_ms(ms);
	}
	write_all(stop[1], "x", 1);
	int st;
	if (waitpid(child, &st, 0) != child)
		die("waitpid: %s", strerror(errno));
	out("child exited with %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
