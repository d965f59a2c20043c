/* ptypair: pseudo-terminal pairs whose both sides live in the tree.
 *
 * The parent P opens pty A (posix_openpt), puts its master in packet mode and forks C.
 * C starts a session, opens A's slave by name (so it becomes the session's controlling
 * terminal) on 0-2 and /dev/tty on descriptor 7, gives the terminal its own settings
 * (no ECHO, ^H as erase character, window size 40x100) and forks G into a process group
 * of its own, which it makes the terminal's foreground group; C then waits for G. G
 * says hello once in the foreground, then answers every line it reads on its terminal ("ping N") with what it sees of it.
 * P also holds pty B: packet mode, its slave opened and closed again, then locked; and
 * both sides of pty C, its slave opened with TIOCGPTPEER, in raw mode.
 *
 * P reads commands on its stdin:
 *   step     ping G through A's master and print G's answer and what P sees of A and B
 *   report   the same, as a "report:" line (the state oracle's tests)
 *   queue    ask G to write a line that P leaves unread in A's master
 *   drain    read one such line and print it
 *   flush    have G flush its input (tcflush): a packet-mode status byte for P
 *   status   read that status byte and print it
 *   excl     have G put the terminal in exclusive mode (TIOCEXCL); noexcl: out of it
 *   nap      ask G to sleep 3 s, then type a line it does not read meanwhile
 *   exit     tell G to exit, wait for C, exit 0
 * It prints "ready" once set up. Output is deterministic but for the pty numbers. */
#include "util.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static int master_a, master_b, master_c, slave_c;
static long step_no;

static void child_g(void)
{
	char line[256];
	while (tcgetpgrp(0) != getpgrp())
		usleep(1000);
	write_all(1, "hello\n", 6);
	for (;;) {
		size_t n = 0;
		while (n < sizeof line - 1) {
			ssize_t r = read(0, line + n, 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				_exit(4);
			if (line[n] == '\n')
				break;
			n++;
		}
		line[n] = 0;
		if (strcmp(line, "exit") == 0)
			_exit(0);
		if (strcmp(line, "excl") == 0 || strcmp(line, "noexcl") == 0) {
			if (ioctl(7, line[0] == 'e' ? TIOCEXCL : TIOCNXCL) != 0)
				_exit(6);
			write_all(1, "done\n", 5);
			continue;
		}
		if (strcmp(line, "flush") == 0) { /* no answer: a status byte for P */
			tcflush(7, TCIFLUSH);
			continue;
		}
		if (strcmp(line, "nap") == 0) {
			sleep(3);
			continue;
		}
		struct winsize w = { 0 };
		struct termios t;
		int tty = 7;
		if (ioctl(tty, TIOCGWINSZ, &w) != 0 || tcgetattr(tty, &t) != 0)
			_exit(5);
		char buf[512];
		const char *name = ttyname(0);
		int len = snprintf(buf, sizeof buf,
				   "%s: tty %s leader-session %d controlling %d foreground %d "
				   "size %dx%d echo %d icanon %d erase %d\n",
				   line, name ? name : "(none)", getsid(0) == getppid(),
				   tcgetsid(tty) == getsid(0), tcgetpgrp(tty) == getpgrp(), w.ws_row,
				   w.ws_col, !!(t.c_lflag & ECHO), !!(t.c_lflag & ICANON),
				   t.c_cc[VERASE]);
		write_all(1, buf, (size_t)len);
	}
}

static void child_c(const char *slave)
{
	close(master_a);
	close(master_b);
	close(master_c);
	close(slave_c);
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	int s = open(slave, O_RDWR); /* the session's controlling terminal now */
	if (s < 0)
		die("open %s: %s", slave, strerror(errno));
	dup2(s, 0);
	dup2(s, 1);
	dup2(s, 2);
	if (s > 2)
		close(s);
	int tty = open("/dev/tty", O_RDWR);
	if (tty < 0 || dup2(tty, 7) != 7)
		die("/dev/tty: %s", strerror(errno));
	close(tty);
	struct termios t;
	if (tcgetattr(0, &t) != 0)
		die("tcgetattr: %s", strerror(errno));
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOCTL);
	t.c_oflag &= ~(tcflag_t)ONLCR;
	t.c_cc[VERASE] = 8;
	if (tcsetattr(0, TCSANOW, &t) != 0)
		die("tcsetattr: %s", strerror(errno));
	struct winsize ws = { .ws_row = 40, .ws_col = 100 };
	if (ioctl(0, TIOCSWINSZ, &ws) != 0)
		die("TIOCSWINSZ: %s", strerror(errno));
	signal(SIGTTOU, SIG_IGN);
	pid_t g = fork();
	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0) {
		setpgid(0, 0);
		signal(SIGTTOU, SIG_DFL);
		child_g();
	}
	setpgid(g, g);
	if (tcsetpgrp(0, g) != 0)
		die("tcsetpgrp: %s", strerror(errno));
	int st;
	while (waitpid(g, &st, 0) < 0 && errno == EINTR)
		;
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 9);
}

/* Read one answer line from A's master (packet mode: each read starts with a status
 * byte). */
static void read_answer(char *buf, size_t size)
{
	size_t n = 0;
	while (n < size - 1) {
		char pkt[600];
		ssize_t r = read(master_a, pkt, sizeof pkt < size - n ? sizeof pkt : size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("read master: %s", r < 0 ? strerror(errno) : "EOF");
		if (pkt[0] != 0) /* a control status byte alone */
			continue;
		memcpy(buf + n, pkt + 1, (size_t)r - 1);
		n += (size_t)r - 1;
		if (n > 0 && buf[n - 1] == '\n')
			break;
	}
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
}

static void exchange(const char *tag)
{
	char ping[64], answer[600];
	step_no++;
	int len = snprintf(ping, sizeof ping, "ping %ld\n", step_no);
	write_all(master_a, ping, (size_t)len);
	read_answer(answer, sizeof answer);
	int pkt_a = -1, pkt_b = -1, lck_a = -1, lck_b = -1;
	ioctl(master_a, TIOCGPKT, &pkt_a);
	ioctl(master_b, TIOCGPKT, &pkt_b);
	ioctl(master_a, TIOCGPTLCK, &lck_a);
	ioctl(master_b, TIOCGPTLCK, &lck_b);
	struct pollfd pb = { .fd = master_b, .events = POLLIN };
	poll(&pb, 1, 0);
	char c;
	ssize_t rb = read(master_b, &c, 1);
	int eb = rb < 0 ? errno : 0;
	struct winsize w = { 0 };
	ioctl(master_a, TIOCGWINSZ, &w);
	/* C: a byte through the raw pair, both ways. */
	char x = 'x', y = 0, z = 0;
	write_all(slave_c, &x, 1);
	ssize_t r1 = read(master_c, &y, 1);
	write_all(master_c, "z", 1);
	ssize_t r2 = read(slave_c, &z, 1);
	out("%s: [%s] A: packet %d locked %d size %dx%d; B: packet %d locked %d hup %d "
	    "read %zd %s; C: %c%c %s\n",
	    tag, answer, pkt_a, lck_a, w.ws_row, w.ws_col, pkt_b, lck_b,
	    !!(pb.revents & POLLHUP), rb, eb ? strerror(eb) : "-", r1 == 1 ? y : '?',
	    r2 == 1 ? z : '?', ttyname(slave_c) ? ttyname(slave_c) : "(none)");
}

int main(void)
{
	master_a = posix_openpt(O_RDWR | O_NOCTTY);
	if (master_a < 0 || grantpt(master_a) != 0 || unlockpt(master_a) != 0)
		die("pty A: %s", strerror(errno));
	int one = 1;
	if (ioctl(master_a, TIOCPKT, &one) != 0)
		die("TIOCPKT: %s", strerror(errno));
	char slave_a[64];
	if (ptsname_r(master_a, slave_a, sizeof slave_a) != 0)
		die("ptsname: %s", strerror(errno));

	master_b = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (master_b < 0 || unlockpt(master_b) != 0)
		die("pty B: %s", strerror(errno));
	if (ioctl(master_b, TIOCPKT, &one) != 0)
		die("TIOCPKT: %s", strerror(errno));
	int sb = ioctl(master_b, TIOCGPTPEER, O_RDWR | O_NOCTTY);
	if (sb < 0)
		die("TIOCGPTPEER: %s", strerror(errno));
	close(sb);
	if (ioctl(master_b, TIOCSPTLCK, &one) != 0)
		die("TIOCSPTLCK: %s", strerror(errno));

	/* Pty C: both sides in P, the slave opened with TIOCGPTPEER (no O_LARGEFILE). */
	master_c = posix_openpt(O_RDWR | O_NOCTTY);
	if (master_c < 0 || unlockpt(master_c) != 0)
		die("pty C: %s", strerror(errno));
	slave_c = ioctl(master_c, TIOCGPTPEER, O_RDWR | O_NOCTTY);
	if (slave_c < 0)
		die("TIOCGPTPEER: %s", strerror(errno));
	struct termios tc;
	if (tcgetattr(slave_c, &tc) != 0)
		die("tcgetattr C: %s", strerror(errno));
	cfmakeraw(&tc);
	if (tcsetattr(slave_c, TCSANOW, &tc) != 0)
		die("tcsetattr C: %s", strerror(errno));

	pid_t c = fork();
	if (c < 0)
		die("fork: %s", strerror(errno));
	if (c == 0)
		child_c(slave_a);
	/* Wait until G says hello: the session and its foreground group are set up. */
	char hello[64];
	read_answer(hello, sizeof hello);
	out("ready\n");

	char cmd[64];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(0, cmd + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (cmd[n] != '\n' && n < sizeof cmd - 2) {
			n++;
			continue;
		}
		cmd[n] = 0;
		n = 0;
		if (strcmp(cmd, "step") == 0) {
			exchange("step");
		} else if (strcmp(cmd, "report") == 0) {
			exchange("report");
		} else if (strcmp(cmd, "excl") == 0 || strcmp(cmd, "noexcl") == 0) {
			char answer[64];
			write_all(master_a, cmd, strlen(cmd));
			write_all(master_a, "\n", 1);
			read_answer(answer, sizeof answer);
			out("%s %s\n", cmd, answer);
		} else if (strcmp(cmd, "flush") == 0) {
			write_all(master_a, "flush\n", 6);
			usleep(100000);
			out("flushed\n");
		} else if (strcmp(cmd, "status") == 0) {
			unsigned char pkt[16];
			ssize_t r = read(master_a, pkt, sizeof pkt);
			out("status %zd %d\n", r, r > 0 ? pkt[0] : -1);
		} else if (strcmp(cmd, "drain") == 0) {
			char answer[600];
			read_answer(answer, sizeof answer);
			out("drained: [%s]\n", answer);
		} else if (strcmp(cmd, "queue") == 0) {
			write_all(master_a, "queued\n", 7);
			out("queued\n");
		} else if (strcmp(cmd, "nap") == 0) {
			write_all(master_a, "nap\n", 4);
			usleep(100000);
			write_all(master_a, "typed\n", 6);
			out("napping\n");
		} else if (strcmp(cmd, "exit") == 0) {
			break;
		}
	}
	write_all(master_a, "exit\n", 5);
	int st;
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	out("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
