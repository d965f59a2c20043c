/* killrestore: a small tree for tests/e2e_killrestore.rs -- ckpt restore killed at any
 * moment. A TCP connection to the test (so restore uses the network lock), a deleted
 * file still open (restore recreates it, a "ghost"), with a hole in it, and a child.
 *
 * usage: killrestore PORT DIR
 * Connects to 127.0.0.1:PORT, creates DIR/deleted (4 KiB of data, a 1 MiB hole, 4 KiB
 * of data), unlinks it, forks a child that sleeps, prints "ready". Then answers each
 * line "MSG" from the connection with "N:MSG:SUM:BLOCKS:CHILD" (N counts the lines,
 * SUM is the FNV hash of the file's contents read through the descriptor, BLOCKS its
 * st_blocks, CHILD 1 while the child lives); "bye" ends both. Prints nothing else. */
#include "util.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: killrestore PORT DIR");
	long port = arg_long(argc, argv, 1, 0);
	char path[4096];
	snprintf(path, sizeof path, "%s/deleted", argv[2]);
	int f = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (f < 0)
		die("open %s: %s", path, strerror(errno));
	char blk[4096];
	for (int i = 0; i < 4096; i++)
		blk[i] = (char)('a' + i % 26);
	if (pwrite(f, blk, sizeof blk, 0) != sizeof blk ||
	    pwrite(f, blk, sizeof blk, (1 << 20) + 4096) != sizeof blk)
		die("pwrite: %s", strerror(errno));
	if (unlink(path))
		die("unlink: %s", strerror(errno));

	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a))
		die("connect: %s", strerror(errno));

	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		for (;;)
			pause();
	}
	out("ready\n");

	FILE *in = fdopen(s, "r");
	if (!in)
		die("fdopen: %s", strerror(errno));
	char line[256];
	long n = 0;
	while (fgets(line, sizeof line, in)) {
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "bye"))
			break;
		n++;
		uint32_t h = FNV_INIT;
		char buf[65536];
		off_t off = 0;
		ssize_t r;
		while ((r = pread(f, buf, sizeof buf, off)) > 0) {
			h = fnv(h, buf, (size_t)r);
			off += r;
		}
		struct stat st;
		if (fstat(f, &st))
			die("fstat: %s", strerror(errno));
		int alive = waitpid(child, NULL, WNOHANG) == 0 && kill(child, 0) == 0;
		char reply[512];
		int len = snprintf(reply, sizeof reply, "%ld:%s:%08x:%lld:%d\n", n, line, h,
				   (long long)st.st_blocks, alive);
		write_all(s, reply, (size_t)len);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
