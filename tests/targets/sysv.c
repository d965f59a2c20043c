/* sysv: a parent and child sharing a System V shared memory segment that was removed
 * (IPC_RMID) while attached, as programs do so that it goes away with them.
 *
 * usage: sysv STEPS
 *
 * Each step the parent adds 1 to slot 0 and the child adds 2 to slot 1, in turn; the
 * parent prints both slots: lost sharing or lost contents would show. */
#include "util.h"

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: sysv STEPS");
	long steps = arg_long(argc, argv, 1, 0);
	int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget: %s", strerror(errno));
	volatile long *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		die("shmat: %s", strerror(errno));
	shmctl(id, IPC_RMID, NULL);
	pid_t c = fork();
	if (c == 0) {
		for (long s = 1; s <= steps; s++) {
			while (p[2] < s)
				sleep_ms(1);
			p[1] += 2;
			p[3] = s;
		}
		/* Stay attached until the parent has printed its last line. */
		while (p[4] == 0)
			sleep_ms(1);
		_exit(0);
	}
	for (long s = 1; s <= steps; s++) {
		p[0] += 1;
		p[2] = s;
		while (p[3] < s)
			sleep_ms(1);
		struct shmid_ds ds;
		int st = shmctl(id, IPC_STAT, &ds);
		out("step %ld slots=%ld,%ld attached=%d\n", s, p[0], p[1],
		    st == 0 ? (int)ds.shm_nattch : -1);
		sleep_ms(20);
	}
	p[4] = 1;
	int st;
	waitpid(c, &st, 0);
	out("child %d done\n", WEXITSTATUS(st));
	return 0;
}
