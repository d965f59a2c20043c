/* urel MODE DIR [STEPS]
 *
 * Unix sockets bound to a name relative to the working directory DIR ("rel.sock": the
 * kernel shows the name as it was given). MODE:
 *   listener  a stream listener (fd 3) bound to rel.sock;
 *   conn      the same, with a client (fd 4) whose connection it accepted (fd 5, which
 *             shows the relative name) and which sent "hi"; the listener is closed;
 *   pending   the listener (fd 3) with a client (fd 4) waiting in its queue, silent;
 *   moved     the listener (fd 3), after which the process moved to "/" (the name no
 *             longer leads to the socket from its working directory).
 * It prints "ready", then "step N" every 20 ms for STEPS steps, then checks its sockets:
 * their names and peers, what the connection holds, and that a new client reaches the
 * listener by its relative name (from DIR). */
#include "util.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t rel_addr(struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	strcpy(sa->sun_path, "rel.sock");
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen("rel.sock") + 1);
}

/* Whether the name (or, with peer, the peer's name) of s is rel.sock. */
static const char *is_rel(int s, int peer)
{
	struct sockaddr_un got;
	socklen_t gl = sizeof got;
	memset(&got, 0, sizeof got);
	int r = peer ? getpeername(s, (struct sockaddr *)&got, &gl)
		     : getsockname(s, (struct sockaddr *)&got, &gl);
	if (r != 0)
		return strerror(errno);
	return strcmp(got.sun_path, "rel.sock") == 0 ? "rel.sock" : "ANOTHER name";
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: urel MODE DIR [STEPS]");
	const char *mode = argv[1], *dir = argv[2];
	long steps = arg_long(argc, argv, 3, 60);
	struct sockaddr_un sa;
	socklen_t sl = rel_addr(&sa);
	if (chdir(dir))
		die("chdir: %s", strerror(errno));
	unlink("rel.sock");
	int L = socket(AF_UNIX, SOCK_STREAM, 0);
	if (L != 3 || bind(L, (struct sockaddr *)&sa, sl) || listen(L, 4))
		die("listen: %s", strerror(errno));
	if (!strcmp(mode, "conn") || !strcmp(mode, "pending")) {
		int C = socket(AF_UNIX, SOCK_STREAM, 0);
		if (C != 4 || connect(C, (struct sockaddr *)&sa, sl))
			die("connect: %s", strerror(errno));
	}
	if (!strcmp(mode, "conn")) {
		if (write(4, "hi", 2) != 2 || accept(L, NULL, NULL) != 5 || close(L))
			die("accept: %s", strerror(errno));
	}
	if (!strcmp(mode, "moved") && chdir("/"))
		die("chdir /: %s", strerror(errno));
	out("ready\n");
	for (long i = 1; i <= steps; i++) {
		out("step %ld\n", i);
		sleep_ms(20);
	}
	if (chdir(dir))
		die("chdir: %s", strerror(errno));
	char buf[8] = {0};
	if (!strcmp(mode, "conn")) {
		out("the client's peer is %s, the accepted end is %s\n", is_rel(4, 1), is_rel(5, 0));
		if (read(5, buf, 2) != 2)
			die("read: %s", strerror(errno));
		out("the accepted end got %s\n", buf);
	} else {
		out("the listener is %s\n", is_rel(3, 0));
		if (!strcmp(mode, "pending")) {
			int a = accept(3, NULL, NULL);
			out("the waiting client's peer is %s, accepted as %s\n", is_rel(4, 1),
			    a < 0 ? strerror(errno) : is_rel(a, 0));
		}
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		int r = connect(c, (struct sockaddr *)&sa, sl);
		int a = r ? -1 : accept(3, NULL, NULL);
		out("a new client by the relative name: %s\n",
		    r ? strerror(errno) : a < 0 ? "not accepted" : "accepted");
	}
	unlink("rel.sock");
	return 0;
}
