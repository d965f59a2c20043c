/* dumpplan: a program holding something a restore on the same host could not bring
 * back (or, for "listen", something only it holds), for the tests of dump's own plan
 * (tests/e2e_dumpplan.rs).
 *
 * usage: dumpplan MODE STEPS [ARG]
 *   plain         nothing special
 *   deleted-cwd   works in directory ARG, removed after it went there
 *   orphan-group  a child in a process group whose leader (another child) has exited
 *   listen        listens on the unix socket path ARG
 *   sysv          a System V segment attached and not removed (until the end)
 *
 * It prints "ready", then "step N" every 20 ms for STEPS steps (with a checksum of
 * what it holds), and exits 0. */
#include "util.h"

#include <signal.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static pid_t child_in(pid_t group)
{
	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0) {
		setpgid(0, group);
		for (;;)
			pause();
	}
	setpgid(c, group ? group : c);
	return c;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: dumpplan MODE STEPS [ARG]");
	const char *mode = argv[1];
	long steps = arg_long(argc, argv, 2, 0);
	const char *arg = argc > 3 ? argv[3] : "";
	pid_t member = 0;
	int shmid = -1;
	volatile long *shm = NULL;
	if (!strcmp(mode, "deleted-cwd")) {
		if (mkdir(arg, 0700) < 0 || chdir(arg) < 0 || rmdir(arg) < 0)
			die("%s: %s", arg, strerror(errno));
	} else if (!strcmp(mode, "orphan-group")) {
		pid_t leader = child_in(0);
		member = child_in(leader);
		kill(leader, SIGKILL);
		waitpid(leader, NULL, 0);
	} else if (!strcmp(mode, "listen")) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		snprintf(a.sun_path, sizeof a.sun_path, "%s", arg);
		unlink(arg);
		if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4) < 0)
			die("listen on %s: %s", arg, strerror(errno));
	} else if (!strcmp(mode, "sysv")) {
		shmid = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
		if (shmid < 0)
			die("shmget: %s", strerror(errno));
		shm = shmat(shmid, NULL, 0);
		if (shm == (void *)-1)
			die("shmat: %s", strerror(errno));
	} else if (strcmp(mode, "plain")) {
		die("unknown mode %s", mode);
	}
	out("ready\n");
	long sum = 0;
	for (long s = 1; s <= steps; s++) {
		sum += s;
		if (shm)
			shm[0] = sum;
		out("step %ld sum %ld\n", s, shm ? shm[0] : sum);
		sleep_ms(20);
	}
	if (member) {
		kill(member, SIGKILL);
		waitpid(member, NULL, 0);
	}
	if (shmid >= 0)
		shmctl(shmid, IPC_RMID, NULL);
	return 0;
}
