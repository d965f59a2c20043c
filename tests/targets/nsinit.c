/* nsinit PROGRAM [ARGS...]
 *
 * A container's shape without a runtime (tests/e2e_tty.rs): run on a terminal (under
 * ptyrun.py), it makes a PID namespace and starts PROGRAM as PID 1 there, in a mount
 * namespace of its own (its mounts private, a new /proc), the leader of a new session whose
 * controlling terminal is the terminal on 0-2 (taken from nsinit's session,
 * TIOCSCTTY with force, as root may): the terminal's master stays outside the tree.
 * nsinit waits for it and exits with its status. */
#define _GNU_SOURCE
#include "util.h"

#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: nsinit PROGRAM [ARGS...]");
	if (unshare(CLONE_NEWPID) != 0)
		die("unshare: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		/* (the mount namespace is the tree's own: made by its init) */
		if (unshare(CLONE_NEWNS) != 0)
			die("unshare(CLONE_NEWNS): %s", strerror(errno));
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			die("make the mounts private: %s", strerror(errno));
		if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
			die("mount /proc: %s", strerror(errno));
		if (setsid() < 0)
			die("setsid: %s", strerror(errno));
		if (ioctl(0, TIOCSCTTY, 1) != 0)
			die("TIOCSCTTY: %s", strerror(errno));
		execv(argv[1], argv + 1);
		die("exec %s: %s", argv[1], strerror(errno));
	}
	int status;
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}
