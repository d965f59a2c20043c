/* threadcreds: threads with credentials and names of their own.
 *
 * usage: threadcreds STEPS [sleep=MS]
 *
 * Three threads besides the main one each change their own credentials with raw system
 * calls (glibc's wrappers would change every thread's) and take a name of their own:
 *   "uids":    groups 5,6, group IDs 100/101/102, user IDs 1000/1001/1002 (which
 *              clears its capabilities);
 *   "caps":    drops CAP_SYS_ADMIN from its effective set, CAP_NET_ADMIN from its
 *              permitted one, adds CAP_KILL to its inheritable one and drops CAP_SYS_BOOT
 *              from its bounding set;
 *   "secbits": securebits noroot and keep_caps, and no_new_privs.
 * At every step the main thread prints its own view, then asks each thread in turn
 * (through a pipe) to print its name (PR_GET_NAME), securebits, no_new_privs and the
 * Uid, Gid, Groups, Cap* lines of /proc/thread-self/status; then it sleeps. Needs root.
 * Exits with status 0. */
#include "util.h"

#include <linux/capability.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define NTHREADS 3

static int ask[NTHREADS][2], done[NTHREADS][2];

/* " Key=v,v..." for the credential lines of /proc/thread-self/status. */
static void creds(char *buf, size_t len)
{
	static const char *keys[] = { "Uid:",	 "Gid:",    "Groups:", "CapInh:",
				      "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:" };
	char text[8192];
	FILE *f = fopen("/proc/thread-self/status", "r");
	if (!f)
		die("open /proc/thread-self/status: %s", strerror(errno));
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = 0;
	size_t used = 0;
	buf[0] = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			size_t kl = strlen(keys[k]);
			if (strncmp(line, keys[k], kl))
				continue;
			char *v = line + kl;
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

static void report(const char *who)
{
	char cr[2048], name[17] = { 0 };
	creds(cr, sizeof cr);
	prctl(PR_GET_NAME, name);
	out("  %s: name=%s secbits=%#x nnp=%d%s\n", who, name, (unsigned)prctl(PR_GET_SECUREBITS),
	    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), cr);
}

static void set_uids(void)
{
	gid_t groups[] = { 5, 6 };
	if (syscall(SYS_setgroups, 2, groups))
		die("setgroups: %s", strerror(errno));
	if (syscall(SYS_setresgid, 100, 101, 102))
		die("setresgid: %s", strerror(errno));
	if (syscall(SYS_setresuid, 1000, 1001, 1002))
		die("setresuid: %s", strerror(errno));
}

static void set_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		die("capget: %s", strerror(errno));
	d[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
	d[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
	d[CAP_NET_ADMIN / 32].permitted &= ~(1u << (CAP_NET_ADMIN % 32));
	d[CAP_KILL / 32].inheritable |= 1u << (CAP_KILL % 32);
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))
		die("PR_CAPBSET_DROP: %s", strerror(errno));
	if (syscall(SYS_capset, &h, d))
		die("capset: %s", strerror(errno));
}

static void set_secbits(void)
{
	/* SECBIT_NOROOT | SECBIT_KEEP_CAPS */
	if (prctl(PR_SET_SECUREBITS, 0x1 | 0x10, 0, 0, 0))
		die("PR_SET_SECUREBITS: %s", strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
}

static const char *names[NTHREADS] = { "uids", "caps", "secbits" };

static void *worker(void *arg)
{
	long i = (long)arg;
	if (prctl(PR_SET_NAME, names[i], 0, 0, 0))
		die("PR_SET_NAME: %s", strerror(errno));
	if (i == 0)
		set_uids();
	else if (i == 1)
		set_caps();
	else
		set_secbits();
	if (write(done[i][1], "x", 1) != 1)
		die("write: %s", strerror(errno));
	char c;
	while (read(ask[i][0], &c, 1) == 1) {
		report(names[i]);
		if (write(done[i][1], "x", 1) != 1)
			die("write: %s", strerror(errno));
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: threadcreds STEPS [sleep=MS]");
	long steps = arg_long(argc, argv, 1, 0);
	long sleep_each = 20;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++) {
		char c;
		if (pipe(ask[i]) || pipe(done[i]))
			die("pipe: %s", strerror(errno));
		if (pthread_create(&t[i], NULL, worker, (void *)i) || read(done[i][0], &c, 1) != 1)
			die("pthread_create failed");
	}
	unsigned long sum = 0;
	for (long step = 1; step <= steps; step++) {
		sum = sum * 31 + (unsigned long)step;
		out("step %ld/%ld sum=%lx\n", step, steps, sum);
		report("main");
		for (int i = 0; i < NTHREADS; i++) {
			char c;
			if (write(ask[i][1], "x", 1) != 1 || read(done[i][0], &c, 1) != 1)
				die("thread %d does not answer", i);
		}
		struct timespec ts = { sleep_each / 1000, (sleep_each % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	out("done\n");
	return 0;
}
