/* sysvall: a parent and child working through all three kinds of System V IPC object.
 *
 * usage: sysvall STEPS READY_AT        (the IPC objects; see below)
 *        sysvall mq [notify]           (POSIX message queues, see mq_mode)
 *
 * Made at start, their IDs written to ./ids ("shm ID", "shm2 ID", "sem ID", "msg ID"):
 * - shm: a segment (IPC_PRIVATE, 3 pages, mode 0640) attached by both;
 * - shm2: a segment with a key, written to once and attached by no one (its contents
 *   live only in the kernel);
 * - sem: a set of three semaphores (owner changed to 65534:65534, mode 0660), values
 *   0 (the child's turn), 7 and 40; the parent takes 5 from semaphore 2 and the child
 *   gives it 3, both with SEM_UNDO, so the child's exit takes its 3 back (the parent's
 *   adjustment would give 5 back at its exit, after it removed the set);
 * - msg: a queue created as user 65534 (so its creator is 65534) with two messages that
 *   stay queued until the end (types 9 and 8).
 * Each step the parent adds 1 to the segment's slot 0, sends "step N" (type 1) and posts
 * semaphore 0; the child takes semaphore 0, receives the step, adds 2 to slot 1 and
 * answers "ack N" (type 2); the parent prints what it saw and adds 1 to semaphore 1.
 * After READY_AT steps the parent prints "ready" and waits for a line on stdin (the
 * child waits on semaphore 0). At the end the parent prints what the kernel holds (the
 * unattached segment's text, the semaphores, the queued messages in order), removes
 * every object and prints "removed". */
#include "util.h"

#include <fcntl.h>
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>

struct msg {
	long type;
	char text[64];
};

static void sem_add_flags(int id, int num, int op, int flags)
{
	struct sembuf b = {.sem_num = (unsigned short)num, .sem_op = (short)op, .sem_flg = (short)flags};
	while (semop(id, &b, 1) < 0)
		if (errno != EINTR)
			die("semop: %s", strerror(errno));
}

static void sem_add(int id, int num, int op)
{
	sem_add_flags(id, num, op, 0);
}

static void send(int q, long type, const char *text)
{
	struct msg m = {.type = type};
	snprintf(m.text, sizeof m.text, "%s", text);
	if (msgsnd(q, &m, strlen(m.text) + 1, 0) < 0)
		die("msgsnd: %s", strerror(errno));
}

static void recv(int q, long type, struct msg *m)
{
	while (msgrcv(q, m, sizeof m->text, type, 0) < 0)
		if (errno != EINTR)
			die("msgrcv: %s", strerror(errno));
}

static void mq_show(const char *tag, mqd_t q)
{
	struct mq_attr a;
	struct stat st;
	if (mq_getattr(q, &a) < 0 || fstat(q, &st) < 0)
		die("mq_getattr: %s", strerror(errno));
	out("%s maxmsg=%ld msgsize=%ld cur=%ld nonblock=%d owner=%d:%d mode=%o\n", tag,
	    a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs, (a.mq_flags & O_NONBLOCK) != 0,
	    (int)st.st_uid, (int)st.st_gid, (unsigned)(st.st_mode & 07777));
	long n = a.mq_curmsgs;
	for (long i = 0; i < n; i++) {
		char buf[64];
		unsigned prio = 0;
		ssize_t r = mq_receive(q, buf, sizeof buf, &prio);
		out("%s %zd %s %u\n", tag, r, r > 0 ? buf : "", prio);
	}
}

static void mq_put(mqd_t q, const char *text, unsigned prio)
{
	if (mq_send(q, text, strlen(text) + 1, prio) < 0)
		die("mq_send: %s", strerror(errno));
}

/* mq [notify]: a queue removed while open (owner 65534:65534, mode 0640) with four
 * messages of three priorities, and a named queue (non-blocking descriptor) with one;
 * with "notify", a notification registered on the first. */
static int mq_mode(int notify)
{
	struct mq_attr a = {.mq_maxmsg = 6, .mq_msgsize = 40};
	struct mq_attr a2 = {.mq_maxmsg = 3, .mq_msgsize = 16};
	char name[64], kept[64];
	snprintf(name, sizeof name, "/ckpt-sysvall-%d", (int)getpid());
	snprintf(kept, sizeof kept, "/ckpt-sysvall-kept-%d", (int)getpid());
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0640, &a);
	mqd_t k = mq_open(kept, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &a2);
	if (q < 0 || k < 0)
		die("mq_open: %s", strerror(errno));
	mq_unlink(name);
	if (fchown(q, 65534, 65534) < 0)
		die("fchown: %s", strerror(errno));
	mq_put(q, "hello", 3);
	mq_put(q, "low", 1);
	mq_put(q, "high", 7);
	mq_put(q, "hello again", 3);
	mq_put(k, "named", 2);
	if (notify) {
		struct sigevent ev = {.sigev_notify = SIGEV_NONE};
		if (mq_notify(q, &ev) < 0)
			die("mq_notify: %s", strerror(errno));
	}
	out("ready\n");
	char line[16];
	if (read(0, line, sizeof line) < 0)
		die("read: %s", strerror(errno));
	mq_show("removed", q);
	mq_show("named", k);
	out("unlink %d\n", mq_unlink(kept));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "mq") == 0)
		return mq_mode(argc > 2 && strcmp(argv[2], "notify") == 0);
	if (argc < 3)
		die("usage: sysvall STEPS READY_AT | sysvall mq");
	long steps = arg_long(argc, argv, 1, 1);
	long ready_at = arg_long(argc, argv, 2, 0);

	int shm = shmget(IPC_PRIVATE, 3 * 4096, IPC_CREAT | 0640);
	key_t key2 = (key_t)(0x5c000000 | (getpid() & 0xffffff));
	int shm2 = shmget(key2, 4096, IPC_CREAT | IPC_EXCL | 0600);
	int sem = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
	if (shm < 0 || shm2 < 0 || sem < 0)
		die("shmget/semget: %s", strerror(errno));
	/* The queue is created as user 65534: its creator (cuid) is that user. */
	if (setegid(65534) < 0 || seteuid(65534) < 0)
		die("seteuid: %s", strerror(errno));
	int q = msgget(IPC_PRIVATE, IPC_CREAT | 0620);
	if (q < 0)
		die("msgget: %s", strerror(errno));
	if (seteuid(0) < 0 || setegid(0) < 0)
		die("seteuid back: %s", strerror(errno));

	char *t = shmat(shm2, NULL, 0);
	if (t == (void *)-1)
		die("shmat: %s", strerror(errno));
	strcpy(t, "kept by the kernel alone");
	shmdt(t);

	struct semid_ds ds;
	union {
		int val;
		struct semid_ds *buf;
		unsigned short *array;
	} arg;
	unsigned short init[3] = {0, 7, 40};
	arg.array = init;
	if (semctl(sem, 0, SETALL, arg) < 0)
		die("SETALL: %s", strerror(errno));
	arg.buf = &ds;
	semctl(sem, 0, IPC_STAT, arg);
	ds.sem_perm.uid = 65534;
	ds.sem_perm.gid = 65534;
	ds.sem_perm.mode = 0660;
	if (semctl(sem, 0, IPC_SET, arg) < 0)
		die("IPC_SET: %s", strerror(errno));
	send(q, 9, "first kept");
	send(q, 8, "second kept");
	sem_add_flags(sem, 2, -5, SEM_UNDO);

	FILE *f = fopen("ids", "w");
	if (!f)
		die("ids: %s", strerror(errno));
	fprintf(f, "shm %d\nshm2 %d\nsem %d\nmsg %d\n", shm, shm2, sem, q);
	fclose(f);

	volatile long *p = shmat(shm, NULL, 0);
	if (p == (void *)-1)
		die("shmat: %s", strerror(errno));
	pid_t c = fork();
	if (c == 0) {
		sem_add_flags(sem, 2, 3, SEM_UNDO);
		for (long s = 1; s <= steps; s++) {
			struct msg m;
			sem_add(sem, 0, -1);
			recv(q, 1, &m);
			p[1] += 2;
			char a[32];
			snprintf(a, sizeof a, "ack %ld", s);
			send(q, 2, a);
		}
		_exit(0);
	}
	for (long s = 1; s <= steps; s++) {
		char text[32];
		struct msg m;
		p[0] += 1;
		snprintf(text, sizeof text, "step %ld", s);
		send(q, 1, text);
		sem_add(sem, 0, 1);
		recv(q, 2, &m);
		sem_add(sem, 1, 1);
		out("step %ld slots=%ld,%ld reply=%s sem1=%d\n", s, p[0], p[1], m.text,
		    semctl(sem, 1, GETVAL));
		if (s == ready_at) {
			out("ready\n");
			char line[16];
			if (read(0, line, sizeof line) < 0)
				die("read: %s", strerror(errno));
		}
	}
	int st;
	waitpid(c, &st, 0);
	out("child %d\n", WEXITSTATUS(st));
	t = shmat(shm2, NULL, SHM_RDONLY);
	if (t == (void *)-1)
		die("shmat: %s", strerror(errno));
	out("shm2 %s\n", t);
	shmdt(t);
	unsigned short v[3];
	arg.array = v;
	semctl(sem, 0, GETALL, arg);
	out("sems %d %d %d\n", v[0], v[1], v[2]);
	struct msg m;
	while (msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT) >= 0)
		out("queued %ld %s\n", m.type, m.text);
	shmdt((void *)p);
	int r = shmctl(shm, IPC_RMID, NULL) | shmctl(shm2, IPC_RMID, NULL) |
		semctl(sem, 0, IPC_RMID) | msgctl(q, IPC_RMID, NULL);
	out(r == 0 ? "removed\n" : "remove failed\n");
	return 0;
}
