/* usock STEPS AHEAD LISTEN_STEP PATH ABSTRACT_NAME [sleep=MS]
 *
 * Unix sockets inside a process tree. Before forking, the parent makes a stream
 * socketpair, a listening socket bound to PATH and one bound to the abstract name
 * ABSTRACT_NAME (both are arguments so that two runs side by side do not clash; neither
 * is printed). Parent P and child C then talk over the socketpair in fixed 32-byte
 * records: each first sends AHEAD records without reading, then, every step, reads one
 * record of the other side and sends one more. So about AHEAD records are queued in
 * each direction all the time, which a dump must carry over. C mixes each record it
 * gets into a running hash that it puts into its replies; P prints every reply, so a
 * lost, repeated or reordered record changes the output.
 *
 * At step LISTEN_STEP, P connects to its own two listeners (a new client after a
 * restore), accepts the connections, sends a message over each and prints what the
 * accepted end received. At the end P waits for C and prints its exit status. */
#include "util.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define REC 32

static void read_full(int fd, char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = read(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("read: %s", n == 0 ? "end of file" : strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

static void send_rec(int fd, const char *fmt, long a, uint32_t b)
{
	char rec[REC];
	memset(rec, '.', sizeof rec);
	int n = snprintf(rec, sizeof rec, fmt, a, b);
	if (n < 0 || n >= REC)
		die("record too long");
	rec[n] = '.';
	rec[REC - 1] = ';';
	write_all(fd, rec, REC);
}

static socklen_t make_addr(struct sockaddr_un *sa, const char *name, int abstract)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	size_t len = strlen(name);
	if (len + 2 > sizeof sa->sun_path)
		die("socket name too long: %s", name);
	memcpy(sa->sun_path + (abstract ? 1 : 0), name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1); /* a NUL before (abstract) or after */
}

static int listener(const char *name, int abstract)
{
	struct sockaddr_un sa;
	socklen_t len = make_addr(&sa, name, abstract);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&sa, len) != 0 || listen(s, 4) != 0)
		die("listen on %s: %s", name, strerror(errno));
	return s;
}

static void serve_one(int lsn, const char *name, int abstract, const char *what, long step)
{
	struct sockaddr_un sa;
	socklen_t len = make_addr(&sa, name, abstract);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, len) != 0) {
		out("step %ld: connect to the %s listener failed: %s\n", step, what,
		    strerror(errno));
		return;
	}
	int a = accept(lsn, NULL, NULL);
	if (a < 0) {
		out("step %ld: accept on the %s listener failed: %s\n", step, what,
		    strerror(errno));
		close(c);
		return;
	}
	char msg[64];
	int n = snprintf(msg, sizeof msg, "hello %s listener at step %ld", what, step);
	write_all(c, msg, (size_t)n);
	char got[64] = { 0 };
	read_full(a, got, (size_t)n);
	write_all(a, "served", 6);
	char back[8] = { 0 };
	read_full(c, back, 6);
	out("step %ld: %s listener got \"%s\", client got \"%s\"\n", step, what, got, back);
	close(a);
	close(c);
}

int main(int argc, char **argv)
{
	if (argc < 6)
		die("usage: usock STEPS AHEAD LISTEN_STEP PATH ABSTRACT_NAME [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 100);
	long ahead = arg_long(argc, argv, 2, 5);
	long listen_step = arg_long(argc, argv, 3, 50);
	const char *path = argv[4];
	const char *abstract = argv[5];
	long ms = 10;
	if (argc > 6 && strncmp(argv[6], "sleep=", 6) == 0)
		ms = strtol(argv[6] + 6, NULL, 10);

	unlink(path);
	int lpath = listener(path, 0);
	int labs = listener(abstract, 1);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		die("socketpair: %s", strerror(errno));
	out("listening; socketpair made; %ld records ahead each way\n", ahead);

	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(sv[0]);
		close(lpath);
		close(labs);
		int s = sv[1];
		uint32_t h = FNV_INIT;
		for (long i = 0; i < ahead; i++)
			send_rec(s, "c%03ld h%08x", i, h);
		for (long i = 0; i < steps; i++) {
			char rec[REC];
			read_full(s, rec, REC);
			h = fnv(h, rec, REC);
			if (i + ahead < steps)
				send_rec(s, "c%03ld h%08x", i + ahead, h);
			sleep_ms(ms);
		}
		_exit((int)(h % 100));
	}
	close(sv[1]);
	int s = sv[0];
	for (long i = 0; i < ahead; i++)
		send_rec(s, "p%03ld x%08x", i, (uint32_t)(i * 2654435761u));
	for (long i = 0; i < steps; i++) {
		char rec[REC + 1] = { 0 };
		read_full(s, rec, REC);
		out("step %ld: got %s\n", i, rec);
		if (i + ahead < steps)
			send_rec(s, "p%03ld x%08x", i + ahead, (uint32_t)((i + ahead) * 2654435761u));
		if (i == listen_step) {
			serve_one(lpath, path, 0, "path", i);
			serve_one(labs, abstract, 1, "abstract", i);
		}
		sleep_ms(ms);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid: %s", strerror(errno));
	out("child exited: %s %d\n", WIFEXITED(st) ? "status" : "signal",
	    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	unlink(path);
	return 0;
}
