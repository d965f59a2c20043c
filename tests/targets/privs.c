/* privs: credentials, securebits and resource limits, printed at every step.
 *
 * usage: privs STEPS [sleep=MS] [thread] [thread-uid=UID] [nofile=SOFT:HARD]
 *              [pdeathsig=SIG]
 *
 * At start it lowers its RLIMIT_NOFILE (nofile=), asks for a parent-death signal
 * (pdeathsig=) and, with `thread`, starts a second thread. Credentials belong to each
 * thread, so at every step both threads print their own view: the securebits
 * (PR_GET_SECUREBITS), the Uid, Gid, Groups, Cap* and NoNewPrivs lines of
 * /proc/thread-self/status, and (main thread) the dumpable flag, the parent-death signal
 * and every resource limit; then it sleeps. The second thread prints when the main
 * thread asks it to (through a pipe), so the output is deterministic.
 *
 * With thread-uid=UID the second thread changes its own user IDs with a raw setresuid
 * system call (libc would change every thread's): its credentials then differ from the
 * main thread's, which dump refuses. (Needs CAP_SETUID.)
 *
 * Exits with status 0. */
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

static int ask[2], done[2];
static long thread_uid = -1;

/* "name=value ..." of the credential lines of /proc/thread-self/status. */
static void creds(char *buf, size_t len)
{
	static const char *keys[] = { "Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:",
				      "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:" };
	char text[8192];
	FILE *f = fopen("/proc/thread-self/status", "r");
	if (!f)
		die("open /proc/thread-self/status: %s", strerror(errno));
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = 0;
	size_t used = 0;
	buf[0] = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			size_t kl = strlen(keys[k]);
			if (strncmp(line, keys[k], kl))
				continue;
			char *v = line + kl;
			/* one space between fields, none at the ends */
			char val[256];
			size_t o = 0;
			for (char *tok = strtok_r(v, " \t", &v); tok; tok = strtok_r(NULL, " \t", &v))
				o += (size_t)snprintf(val + o, sizeof val - o, "%s%s", o ? "," : "", tok);
			val[o < sizeof val ? o : sizeof val - 1] = 0;
			used += (size_t)snprintf(buf + used, len - used, " %.*s=%s", (int)kl - 1,
						 keys[k], val);
			if (used >= len)
				die("creds: buffer too small");
		}
	}
}

static void *worker(void *arg)
{
	(void)arg;
	if (thread_uid >= 0 && syscall(SYS_setresuid, thread_uid, thread_uid, thread_uid))
		die("thread setresuid: %s", strerror(errno));
	if (write(done[1], "x", 1) != 1) /* set up */
		die("write: %s", strerror(errno));
	char c;
	while (read(ask[0], &c, 1) == 1) {
		char cr[2048];
		creds(cr, sizeof cr);
		out("  thread secbits=%#x%s\n", (unsigned)prctl(PR_GET_SECUREBITS), cr);
		if (write(done[1], "x", 1) != 1)
			die("write: %s", strerror(errno));
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: privs STEPS [sleep=MS] [thread] [thread-uid=UID] [nofile=SOFT:HARD] "
		    "[pdeathsig=SIG]");
	long steps = arg_long(argc, argv, 1, 0);
	long sleep_each = 20;
	int thread = 0;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!strncmp(a, "sleep=", 6)) {
			sleep_each = strtol(a + 6, NULL, 0);
		} else if (!strcmp(a, "thread")) {
			thread = 1;
		} else if (!strncmp(a, "thread-uid=", 11)) {
			thread = 1;
			thread_uid = strtol(a + 11, NULL, 0);
		} else if (!strncmp(a, "nofile=", 7)) {
			struct rlimit rl;
			if (sscanf(a + 7, "%lu:%lu", &rl.rlim_cur, &rl.rlim_max) != 2)
				die("bad %s", a);
			if (setrlimit(RLIMIT_NOFILE, &rl))
				die("setrlimit: %s", strerror(errno));
		} else if (!strncmp(a, "pdeathsig=", 10)) {
			if (prctl(PR_SET_PDEATHSIG, strtol(a + 10, NULL, 0)))
				die("PR_SET_PDEATHSIG: %s", strerror(errno));
		} else {
			die("unknown option %s", a);
		}
	}
	/* The parent-death signal, if any, is ignored: the restored process's parent is
	 * ckpt restore, which may exit before it does. */
	signal(SIGUSR1, SIG_IGN);
	pthread_t t;
	if (thread) {
		if (pipe(ask) || pipe(done))
			die("pipe: %s", strerror(errno));
		char c;
		if (pthread_create(&t, NULL, worker, NULL) || read(done[0], &c, 1) != 1)
			die("pthread_create failed");
	}
	unsigned long sum = 0;
	for (long step = 1; step <= steps; step++) {
		char cr[2048], lim[1024];
		creds(cr, sizeof cr);
		size_t o = 0;
		for (int r = 0; r < RLIM_NLIMITS; r++) {
			struct rlimit rl;
			if (getrlimit(r, &rl))
				die("getrlimit %d: %s", r, strerror(errno));
			o += (size_t)snprintf(lim + o, sizeof lim - o, "%s%lx:%lx", r ? "," : "",
					      (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
		}
		int pdeath = 0;
		prctl(PR_GET_PDEATHSIG, &pdeath);
		sum = sum * 31 + (unsigned long)step;
		out("step %ld/%ld sum=%lx secbits=%#x dumpable=%d pdeathsig=%d%s limits=%s\n", step,
		    steps, sum, (unsigned)prctl(PR_GET_SECUREBITS), prctl(PR_GET_DUMPABLE), pdeath,
		    cr, lim);
		if (thread) {
			char c;
			if (write(ask[1], "x", 1) != 1 || read(done[0], &c, 1) != 1)
				die("thread handshake: %s", strerror(errno));
		}
		sleep_ms(sleep_each);
	}
	out("done sum=%lx\n", sum);
	return 0;
}
