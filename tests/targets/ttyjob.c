/* ttyjob STEPS ASK_AT [sleep=MS]
 *
 * A program on a terminal (its 0-2, run under ptyrun.py). It first changes its
 * terminal's settings (window size 33x111, no ECHOCTL, ^H as erase character), which a
 * restore onto a new terminal must carry over. Every step it prints what it sees of its
 * terminal: whether 0-2 are terminals, the name of the one on 0, whether it leads its
 * session, whether that terminal is its controlling one (tcgetsid) and whether its group
 * is the terminal's foreground group (tcgetpgrp), and the settings. At step ASK_AT it
 * asks for a line and reads it from stdin (echoed by the terminal), then prints it. It
 * exits with status 3. */
#include "util.h"
#include <sys/ioctl.h>
#include <termios.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ttyjob STEPS ASK_AT [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 30);
	long ask_at = arg_long(argc, argv, 2, 10);
	long ms = 40;
	if (argc > 3 && strncmp(argv[3], "sleep=", 6) == 0)
		ms = strtol(argv[3] + 6, NULL, 10);

	struct winsize ws = { .ws_row = 33, .ws_col = 111 };
	if (ioctl(0, TIOCSWINSZ, &ws) != 0)
		die("TIOCSWINSZ: %s", strerror(errno));
	struct termios t;
	if (tcgetattr(0, &t) != 0)
		die("tcgetattr: %s", strerror(errno));
	t.c_lflag &= ~(tcflag_t)ECHOCTL;
	t.c_cc[VERASE] = 8;
	if (tcsetattr(0, TCSANOW, &t) != 0)
		die("tcsetattr: %s", strerror(errno));

	for (long i = 0; i < steps; i++) {
		if (i == ask_at) {
			out("step %ld: type a line\n", i);
			char line[256];
			size_t n = 0;
			while (n < sizeof line - 1) {
				ssize_t r = read(0, line + n, 1);
				if (r < 0 && errno == EINTR)
					continue;
				if (r <= 0 || line[n] == '\n')
					break;
				n++;
			}
			line[n] = 0;
			out("step %ld: got \"%s\"\n", i, line);
		}
		const char *name = ttyname(0);
		struct winsize w = { 0 };
		struct termios now;
		if (ioctl(0, TIOCGWINSZ, &w) != 0 || tcgetattr(0, &now) != 0)
			die("terminal settings: %s", strerror(errno));
		out("step %ld: isatty %d%d%d tty %s leader %d controlling %d foreground %d "
		    "size %dx%d echo %d echoctl %d icanon %d erase %d\n",
		    i, isatty(0), isatty(1), isatty(2), name ? name : "(none)",
		    getsid(0) == getpid(), tcgetsid(0) == getsid(0), tcgetpgrp(0) == getpgrp(),
		    w.ws_row, w.ws_col, !!(now.c_lflag & ECHO), !!(now.c_lflag & ECHOCTL),
		    !!(now.c_lflag & ICANON), now.c_cc[VERASE]);
		sleep_ms(ms);
	}
	return 3;
}
