/* Processes sharing a descriptor table (clone with CLONE_FILES) or their working
 * directory, root and umask (CLONE_FS) without being threads (tests/e2e_clonefiles.rs).
 *
 *   clonefiles parent       a child made with clone(CLONE_FILES) shares the root's table
 *   clonefiles three        two such children: three processes share one table
 *   clonefiles siblings     two children share a table their parent does not: made
 *                           with CLONE_FILES, after which the parent called
 *                           unshare(CLONE_FILES) and opened a file of its own; the
 *                           first child opened one too (in the children's table only)
 *   clonefiles fs           a child made with clone(CLONE_FS) shares the root's working
 *                           directory (a subdirectory "start") and umask (027)
 *   clonefiles fssiblings   two children share them, their parent does not (it called
 *                           unshare(CLONE_FS) and went to "parent")
 *   clonefiles both         a child made with clone(CLONE_FILES | CLONE_FS), and a
 *                           grandchild made so by it: all three share both
 *   clonefiles cousins      a table shared by a child of the root's child and a
 *                           grandchild the root adopted (subreaper; the process that
 *                           made it exited), not by their parents: refused at dump
 *   clonefiles outside      like parent; the test dumps the child alone (its table
 *                           is shared with a process outside the dumped tree): refused
 *   clonefiles vm           a child made with clone(CLONE_VM | CLONE_SIGHAND) on a
 *                           stack of its own (not a thread): refused at dump
 *
 * Every child waits for commands from the root on a pipe of its own. Prints "ready"
 * once set up; on a line "go" on stdin the root has the first child open a file (or
 * change directory and umask) and asks every process whether it sees it, printing
 * what each says (deterministic lines); then it ends the children and exits 0. End of
 * file on stdin ends the tree too. */
#include "util.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define MAXC 4

struct msg {
	char op;
	int a, b;
};

static int cmd[MAXC][2];
static int reply[2];
static pid_t kids[MAXC];
static int nkids;
static char base[4096];

static void path_of(char *buf, size_t n, const char *prefix, int k)
{
	snprintf(buf, n, "%s/%s%d", base, prefix, k);
}

/* Whether descriptor `fd` of the calling process is the file "f<k>". */
static int fd_is(int fd, int k)
{
	char p[4200];
	struct stat a, b;
	path_of(p, sizeof p, "f", k);
	if (fstat(fd, &a) || stat(p, &b))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Whether the working directory is "d<k>". */
static int cwd_is(int k)
{
	char p[4200];
	struct stat a, b;
	path_of(p, sizeof p, "d", k);
	if (stat(".", &a) || stat(p, &b))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static void child_loop(int i)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		struct msg m;
		ssize_t n = read(cmd[i][0], &m, sizeof m);
		if (n == 0)
			_exit(0);
		if (n != (ssize_t)sizeof m) {
			if (n < 0 && errno == EINTR)
				continue;
			_exit(3);
		}
		int r = -1;
		char p[4200];
		switch (m.op) {
		case 'o': /* open f<a>: its number */
			path_of(p, sizeof p, "f", m.a);
			r = open(p, O_RDWR | O_CREAT, 0600);
			break;
		case 'c': /* is descriptor a the file f<b>? */
			r = fd_is(m.a, m.b);
			break;
		case 'd': /* chdir to d<a> */
			path_of(p, sizeof p, "d", m.a);
			r = chdir(p);
			break;
		case 'w': /* is the working directory d<a>? */
			r = cwd_is(m.a);
			break;
		case 'u': /* umask a; the old one */
			r = (int)umask((mode_t)m.a);
			break;
		case 'g': /* make child 1 (CLONE_FILES | CLONE_FS): its PID */
			r = (int)syscall(SYS_clone, CLONE_FILES | CLONE_FS | SIGCHLD, 0, 0, 0, 0);
			if (r == 0) { /* the new child: serves child 1's commands */
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				i = 1;
				continue;
			}
			break;
		case 'U': /* the umask */
			r = (int)umask(0);
			umask((mode_t)r);
			break;
		}
		write_all(reply[1], (char *)&r, sizeof r);
	}
}

static int ask(int i, char op, int a, int b)
{
	struct msg m = { op, a, b };
	write_all(cmd[i][1], (char *)&m, sizeof m);
	int r;
	if (read(reply[0], &r, sizeof r) != (ssize_t)sizeof r)
		die("no reply from child %d", i);
	return r;
}

static char vm_stack[64 * 1024] __attribute__((aligned(16)));

static int vm_child(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void spawn(int i, unsigned long flags)
{
	if (pipe(cmd[i]))
		die("pipe");
	pid_t c = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	if (c < 0)
		die("clone: %s", strerror(errno));
	if (c == 0)
		child_loop(i);
	kids[i] = c;
	nkids = i + 1;
}

static const char *yes(int r)
{
	return r == 1 ? "yes" : "no";
}

static void go_files(void)
{
	int fd = ask(0, 'o', 0, 0);
	if (fd < 0)
		die("child 0 could not open f0");
	for (int k = 1; k < nkids; k++)
		out("child %d sees child 0's new descriptor: %s\n", k, yes(ask(k, 'c', fd, 0)));
	out("the parent sees child 0's new descriptor: %s\n", yes(fd_is(fd, 0)));
	char p[4200];
	path_of(p, sizeof p, "f", 9);
	int mine = open(p, O_RDWR | O_CREAT, 0600);
	if (mine < 0)
		die("open f9");
	for (int k = 0; k < nkids; k++)
		out("child %d sees the parent's new descriptor: %s\n", k,
		    yes(ask(k, 'c', mine, 9)));
}

static void go_fs(void)
{
	if (ask(0, 'd', 0, 0))
		die("child 0 could not chdir");
	for (int k = 1; k < nkids; k++)
		out("child %d is in child 0's new directory: %s\n", k, yes(ask(k, 'w', 0, 0)));
	out("the parent is in child 0's new directory: %s\n", yes(cwd_is(0)));
	int old = ask(0, 'u', 077, 0);
	out("child 0's umask was %03o\n", old);
	for (int k = 1; k < nkids; k++)
		out("child %d's umask: %03o\n", k, ask(k, 'U', 0, 0));
	mode_t m = umask(0);
	umask(m);
	out("the parent's umask: %03o\n", (int)m);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: clonefiles MODE");
	const char *mode = argv[1];
	if (!getcwd(base, sizeof base))
		die("getcwd");
	for (int k = 0; k < 3; k++) {
		char p[4200];
		path_of(p, sizeof p, "d", k);
		mkdir(p, 0755);
	}
	mkdir("start", 0755);
	mkdir("parent", 0755);
	if (pipe(reply))
		die("pipe");
	int fs = 0, both = 0;
	if (!strcmp(mode, "parent") || !strcmp(mode, "outside")) {
		spawn(0, CLONE_FILES);
	} else if (!strcmp(mode, "three")) {
		spawn(0, CLONE_FILES);
		spawn(1, CLONE_FILES);
	} else if (!strcmp(mode, "siblings")) {
		spawn(0, CLONE_FILES);
		spawn(1, CLONE_FILES);
		if (unshare(CLONE_FILES))
			die("unshare(CLONE_FILES)");
		if (open("parent-own", O_RDWR | O_CREAT, 0600) < 0)
			die("open parent-own");
		if (ask(0, 'o', 5, 0) < 0)
			die("child 0 could not open f5");
	} else if (!strcmp(mode, "fs")) {
		fs = 1;
		if (chdir("start"))
			die("chdir");
		umask(027);
		spawn(0, CLONE_FS);
	} else if (!strcmp(mode, "fssiblings")) {
		fs = 1;
		if (chdir("start"))
			die("chdir");
		umask(027);
		spawn(0, CLONE_FS);
		spawn(1, CLONE_FS);
		if (unshare(CLONE_FS))
			die("unshare(CLONE_FS)");
		if (chdir("../parent"))
			die("chdir");
		umask(022);
	} else if (!strcmp(mode, "both")) {
		both = 1;
		if (chdir("start"))
			die("chdir");
		umask(027);
		/* the child makes the next one (a grandchild of the root), and must know
		 * its command pipe */
		if (pipe(cmd[1]))
			die("pipe");
		spawn(0, CLONE_FILES | CLONE_FS);
		if (ask(0, 'g', 0, 0) <= 0)
			die("the grandchild");
		nkids = 2;
	} else if (!strcmp(mode, "cousins")) {
		/* root -> A (own table) -> X (CLONE_FILES), M (CLONE_FILES) -> Y (CLONE_FILES);
		 * M exits, Y goes to the root; A leaves the table (unshare). */
		if (prctl(PR_SET_CHILD_SUBREAPER, 1))
			die("PR_SET_CHILD_SUBREAPER");
		int up[2];
		if (pipe(up))
			die("pipe");
		pid_t a = fork();
		if (a < 0)
			die("fork");
		if (a == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			pid_t x = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
			if (x == 0)
				for (;;)
					pause();
			pid_t m = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
			if (m == 0) {
				pid_t y = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
				if (y == 0)
					for (;;)
						pause();
				write_all(up[1], (char *)&y, sizeof y);
				_exit(0);
			}
			waitpid(m, NULL, 0);
			if (unshare(CLONE_FILES))
				_exit(2);
			write_all(up[1], (char *)&x, sizeof x);
			for (;;)
				pause();
		}
		pid_t y, x;
		if (read(up[0], &y, sizeof y) != (ssize_t)sizeof y ||
		    read(up[0], &x, sizeof x) != (ssize_t)sizeof x)
			die("the first child did not set up");
		out("ready\n");
		char line[64];
		while (read(0, line, sizeof line) > 0)
			;
		kill(a, SIGKILL);
		kill(x, SIGKILL);
		kill(y, SIGKILL);
		while (wait(NULL) > 0)
			;
		out("done\n");
		return 0;
	} else if (!strcmp(mode, "vm")) {
		pid_t c = clone(vm_child, vm_stack + sizeof vm_stack,
				CLONE_VM | CLONE_SIGHAND | SIGCHLD, NULL);
		if (c < 0)
			die("clone(CLONE_VM)");
		kids[0] = c;
		nkids = 0; /* no command pipe */
		out("ready\n");
		char line[64];
		while (read(0, line, sizeof line) > 0)
			;
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
		out("done\n");
		return 0;
	} else {
		die("unknown mode %s", mode);
	}
	out("ready\n");
	char line[64];
	ssize_t n;
	while ((n = read(0, line, sizeof line - 1)) > 0) {
		line[n] = 0;
		if (!strncmp(line, "go", 2)) {
			if (fs || both)
				go_fs();
			if (!fs)
				go_files();
			break;
		}
	}
	for (int k = 0; k < nkids; k++) {
		if (kids[k]) {
			kill(kids[k], SIGKILL);
			waitpid(kids[k], NULL, 0);
		}
	}
	/* (a grandchild dies with its parent: PR_SET_PDEATHSIG) */
	out("done\n");
	return 0;
}
