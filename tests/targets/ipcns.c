/* ipcns: the objects of an IPC namespace of the program's own (run it under
 * `unshare --ipc --fork`, or as a container's program), and its limits.
 *
 * usage: ipcns [file]
 *
 * With `file` (a container's program: its /proc/sys is read-only, the runtime sets the
 * limits), it sets no limit and waits for a file /go instead of a line on stdin.
 *
 * Made at start (only the namespace holds most of them), their IDs written to stdout
 * as "ids shm=ID shm2=ID sem=ID msg=ID":
 * - limits: kernel.msgmax 4000, kernel.shmmni 300, fs.mqueue.msg_max 20;
 * - shm: a segment with key 0x1c0ffee, 2 pages, mode 0640, written to and attached by
 *   no one; shm2: a segment (IPC_PRIVATE) the program keeps attached and counts in;
 * - sem: a set of 3 semaphores (values 3, 9, 0; owner 65534:65534, mode 0660) on which
 *   the program holds an undo adjustment of -2 on semaphore 1 (value 7 then);
 * - msg: a queue (key 0x2c0ffee, created as user 65534) with messages of types 5, 1,
 *   5, 7 that stay queued, its qbytes lowered to 1000;
 * - POSIX queues: /q-open (kept open, O_NONBLOCK; maxmsg 5, msgsize 32, owner
 *   65534:65534, mode 0640) with "a" (prio 1), "b" (prio 9), "c" (prio 1); /q-closed
 *   (closed, mode 0604; maxmsg 4, msgsize 16) with "x" (prio 2), "y" (prio 2);
 *   /q-notify (kept open, empty) with a notification registered (SIGEV_NONE).
 * Then it prints "ready" and waits for a line on stdin; then it prints what it finds
 * (the limits, the segments' texts, the semaphore values, the SysV messages in order,
 * each POSIX queue's attributes, owner, mode and messages in order, whether the
 * notification is still registered), removes everything
 * and prints "done". */
#include "util.h"

#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

struct msg {
	long type;
	char text[64];
};

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	write_all(fd, text, strlen(text));
	close(fd);
}

static void show_file(const char *path)
{
	char buf[128] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		die("read %s: %s", path, strerror(errno));
	for (char *c = buf; *c; c++)
		if (*c == '\n' || *c == '\t')
			*c = ' ';
	out("limit %s %s\n", path, buf);
}

static void send(int q, long type, const char *text)
{
	struct msg m = {.type = type};
	snprintf(m.text, sizeof m.text, "%s", text);
	if (msgsnd(q, &m, strlen(m.text) + 1, 0) < 0)
		die("msgsnd: %s", strerror(errno));
}

static void mq_put(mqd_t q, const char *text, unsigned prio)
{
	if (mq_send(q, text, strlen(text) + 1, prio) < 0)
		die("mq_send: %s", strerror(errno));
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

int main(int argc, char **argv)
{
	int by_file = argc > 1 && strcmp(argv[1], "file") == 0;
	if (!by_file) {
		put("/proc/sys/kernel/msgmax", "4000\n");
		put("/proc/sys/kernel/shmmni", "300\n");
		put("/proc/sys/fs/mqueue/msg_max", "20\n");
	}

	int shm = shmget(0x1c0ffee, 2 * 4096, IPC_CREAT | IPC_EXCL | 0640);
	int shm2 = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	int sem = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
	if (shm < 0 || shm2 < 0 || sem < 0)
		die("shmget/semget: %s", strerror(errno));
	char *t = shmat(shm, NULL, 0);
	if (t == (void *)-1)
		die("shmat: %s", strerror(errno));
	strcpy(t + 4096 + 100, "only the namespace keeps this");
	shmdt(t);
	volatile long *count = shmat(shm2, NULL, 0);
	if (count == (void *)-1)
		die("shmat: %s", strerror(errno));
	*count = 40;

	unsigned short init[3] = {3, 9, 0};
	union semun arg = {.array = init};
	if (semctl(sem, 0, SETALL, arg) < 0)
		die("SETALL: %s", strerror(errno));
	struct semid_ds ds;
	arg.buf = &ds;
	semctl(sem, 0, IPC_STAT, arg);
	ds.sem_perm.uid = 65534;
	ds.sem_perm.gid = 65534;
	ds.sem_perm.mode = 0660;
	if (semctl(sem, 0, IPC_SET, arg) < 0)
		die("IPC_SET: %s", strerror(errno));
	struct sembuf b = {.sem_num = 1, .sem_op = -2, .sem_flg = SEM_UNDO};
	if (semop(sem, &b, 1) < 0)
		die("semop: %s", strerror(errno));

	if (setegid(65534) < 0 || seteuid(65534) < 0)
		die("seteuid: %s", strerror(errno));
	int q = msgget(0x2c0ffee, IPC_CREAT | IPC_EXCL | 0620);
	if (q < 0)
		die("msgget: %s", strerror(errno));
	/* (as its owner: a container's root may lack CAP_SYS_ADMIN) */
	struct msqid_ds mds;
	if (msgctl(q, IPC_STAT, &mds) < 0)
		die("IPC_STAT: %s", strerror(errno));
	mds.msg_qbytes = 1000;
	if (msgctl(q, IPC_SET, &mds) < 0)
		die("msg IPC_SET: %s", strerror(errno));
	if (seteuid(0) < 0 || setegid(0) < 0)
		die("seteuid back: %s", strerror(errno));
	send(q, 5, "five first");
	send(q, 1, "one");
	send(q, 5, "five second");
	send(q, 7, "seven");

	struct mq_attr a1 = {.mq_maxmsg = 5, .mq_msgsize = 32};
	struct mq_attr a2 = {.mq_maxmsg = 4, .mq_msgsize = 16};
	mqd_t open_q = mq_open("/q-open", O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0640, &a1);
	mqd_t closed_q = mq_open("/q-closed", O_RDWR | O_CREAT | O_EXCL, 0604, &a2);
	if (open_q == (mqd_t)-1 || closed_q == (mqd_t)-1)
		die("mq_open: %s", strerror(errno));
	if (fchown(open_q, 65534, 65534) < 0)
		die("fchown: %s", strerror(errno));
	mq_put(open_q, "a", 1);
	mq_put(open_q, "b", 9);
	mq_put(open_q, "c", 1);
	mq_put(closed_q, "x", 2);
	mq_put(closed_q, "y", 2);
	mq_close(closed_q);
	/* /q-notify: empty, kept open, with a notification registered (SIGEV_NONE). */
	mqd_t notify_q = mq_open("/q-notify", O_RDWR | O_CREAT | O_EXCL, 0600, &a2);
	if (notify_q == (mqd_t)-1)
		die("mq_open /q-notify: %s", strerror(errno));
	struct sigevent ev = {.sigev_notify = SIGEV_NONE};
	if (mq_notify(notify_q, &ev) < 0)
		die("mq_notify: %s", strerror(errno));

	out("ids shm=%d shm2=%d sem=%d msg=%d\n", shm, shm2, sem, q);
	out("ready\n");
	if (by_file) {
		while (access("/go", F_OK) != 0)
			sleep_ms(10);
	} else {
		char line[16];
		if (read(0, line, sizeof line) < 0)
			die("read: %s", strerror(errno));
	}

	show_file("/proc/sys/kernel/msgmax");
	show_file("/proc/sys/kernel/shmmni");
	show_file("/proc/sys/fs/mqueue/msg_max");
	t = shmat(shm, NULL, SHM_RDONLY);
	if (t == (void *)-1)
		die("shmat again: %s", strerror(errno));
	out("shm %s\n", t + 4096 + 100);
	shmdt(t);
	out("shm2 count=%ld\n", ++*count);
	unsigned short v[3];
	arg.array = v;
	if (semctl(sem, 0, GETALL, arg) < 0)
		die("GETALL: %s", strerror(errno));
	out("sems %d %d %d\n", v[0], v[1], v[2]);
	if (msgctl(q, IPC_STAT, &mds) < 0)
		die("IPC_STAT: %s", strerror(errno));
	out("msg qbytes=%lu qnum=%lu\n", (unsigned long)mds.msg_qbytes, (unsigned long)mds.msg_qnum);
	struct msg m;
	while (msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT) >= 0)
		out("queued %ld %s\n", m.type, m.text);
	mq_show("q-open", open_q);
	closed_q = mq_open("/q-closed", O_RDWR);
	if (closed_q == (mqd_t)-1)
		die("mq_open /q-closed again: %s", strerror(errno));
	mq_show("q-closed", closed_q);
	/* Registered still: a second registration is refused (EBUSY); then it goes. */
	int again = mq_notify(notify_q, &ev);
	out("q-notify registered=%d\n", again < 0 && errno == EBUSY);
	out("q-notify unregister=%d\n", mq_notify(notify_q, NULL));
	shmdt((void *)count);
	int r = shmctl(shm, IPC_RMID, NULL) | shmctl(shm2, IPC_RMID, NULL) |
		semctl(sem, 0, IPC_RMID) | mq_unlink("/q-open") | mq_unlink("/q-closed") |
		mq_unlink("/q-notify");
	/* The queue as its owner (a container's root may lack CAP_SYS_ADMIN). */
	if (setegid(65534) < 0 || seteuid(65534) < 0)
		die("seteuid: %s", strerror(errno));
	r |= msgctl(q, IPC_RMID, NULL);
	out(r == 0 ? "done\n" : "remove failed\n");
	return 0;
}
