/* nestuserns STEPS [sleep=MS] [top] [wide] [base=N] [uts] [ipcnet] [cgroup=DIR] [mnt] [time]
 *            [grand] [join] [threads]
 *
 * A tree in which a process below the root makes a user namespace (run as root).
 *
 * With `top`, the root first makes a user namespace of its own, as `unshare -U -r`
 * does (setgroups denied, root inside mapped to its own IDs outside), or, with `wide`,
 * mapped by a helper it forked before from outside: IDs 0-65535 inside are
 * N-(N+65535) outside (N: 123400 unless `base=N`), setgroups allowed, and it becomes
 * root inside; the child's
 * user namespace is then nested two levels below the host's.
 *
 * The root forks a child that unshares CLONE_NEWUSER, denies setgroups and maps root
 * inside to its own user and group IDs (one each, as its parent namespace shows them);
 * with `uts` it then unshares CLONE_NEWUTS (owned by its new user namespace) and names
 * the host "ckpt-nested"; with `ipcnet` it then unshares CLONE_NEWIPC and
 * CLONE_NEWNET (owned by its new user namespace), sets the IPC namespace's msgmax to
 * 23456, makes a System V segment there (key 0x4545, "nested-shm") it keeps attached,
 * brings the loopback up and binds a UDP socket to 127.0.0.1:4242; with `cgroup=DIR`
 * it moves into cgroup v2 directory DIR before it makes its user namespace (through
 * DIR/cgroup.procs, which the root opened before `top`) and then unshares
 * CLONE_NEWCGROUP (owned by its new user namespace, rooted at DIR); with `mnt` it
 * unshares CLONE_NEWNS; with `time` it unshares CLONE_NEWTIME (for its children: the
 * grandchild is in it) and sets that namespace's CLOCK_MONOTONIC and CLOCK_BOOTTIME
 * 100 days ahead (as its root: CAP_SYS_TIME over it). With `grand`, the child
 * forks a grandchild that stays in its namespaces. With `join`, the root then forks a
 * second child that enters the first child's user namespace with setns (and stays in
 * the root's other namespaces). With `threads`, the child and the grandchild each
 * start a thread that checks, as they do, its own IDs and capabilities (each thread
 * has its own) every step.
 *
 * Every step the root prints its step, IDs and capabilities, uid_map and host name;
 * the child and grandchild check every step, by using them, that they are still root
 * with every capability in their user namespace, with the same maps, and (`uts`) that
 * they may rename their host (CAP_SYS_ADMIN over the UTS namespace: it is owned by
 * their user namespace) and read back the name, and (`ipcnet`) that msgmax reads
 * 23456, that they may write it (they are the IPC namespace's root), that the segment
 * is found by its key with its data, and (the child) that a datagram sent to
 * 127.0.0.1:4242 reaches its socket, and (`cgroup=DIR`) that /proc/self/cgroup shows
 * every hierarchy at "/" (the namespace's root) and that it is not the root's cgroup
 * namespace, and (`time`) that its clocks never go back and are (the grandchild) at
 * least 100 days or (the child) less than 100 days ahead of the boot; one that finds
 * anything else exits 43 (the child also when its grandchild ended), which the root
 * reports ("child lost: ..."). At the end the root stops the
 * child (SIGTERM), which kills and reaps the grandchild first. Nothing printed
 * depends on IDs outside the namespaces but the maps. */
#include "util.h"
#include "usermap.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <pthread.h>
#include <time.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* `time`: how far ahead the time namespace the child makes for its children is. */
#define AHEAD_S (100LL * 86400)

static unsigned long long effective(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) != 0)
		die("capget: %s", strerror(errno));
	return ((unsigned long long)d[1].effective << 32) | d[0].effective;
}

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

/* `ipcnet`: the segment, and the UDP socket of the process that made it. */
static int ipcnet, shm_id = -1, udp_fd = -1;
/* `cgroup=DIR`: DIR/cgroup.procs opened by the root; the cgroup namespace the root is
 * in (its inode). */
static int cg_procs = -1, cgns;
static ino_t root_cgns;
static pid_t udp_owner;
static char *shm;

static struct sockaddr_in lo4242(void)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons(4242);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int write_msgmax(void)
{
	int fd = open("/proc/sys/kernel/msgmax", O_WRONLY);
	int ok = fd >= 0 && write(fd, "23456", 5) == 5;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void make_ipcnet(void)
{
	if (unshare(CLONE_NEWIPC | CLONE_NEWNET) != 0)
		die("child: unshare(CLONE_NEWIPC|CLONE_NEWNET): %s", strerror(errno));
	if (!write_msgmax())
		die("child: write msgmax: %s", strerror(errno));
	shm_id = shmget(0x4545, 4096, IPC_CREAT | IPC_EXCL | 0600);
	shm = shm_id < 0 ? (char *)-1 : shmat(shm_id, NULL, 0);
	if (shm == (char *)-1)
		die("child: shm: %s", strerror(errno));
	strcpy(shm, "nested-shm");
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		die("child: SIOCGIFFLAGS: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		die("child: SIOCSIFFLAGS: %s", strerror(errno));
	close(s);
	udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = lo4242();
	if (udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&a, sizeof a) != 0)
		die("child: bind 4242: %s", strerror(errno));
	udp_owner = getpid();
}

/* Whether the IPC and network namespaces are as made (see the top). */
static int ipcnet_ok(void)
{
	char buf[32] = {0};
	get("/proc/sys/kernel/msgmax", buf, sizeof buf);
	if (strtol(buf, NULL, 10) != 23456 || !write_msgmax())
		return 0;
	if (shmget(0x4545, 0, 0) != shm_id || strcmp(shm, "nested-shm") != 0)
		return 0;
	if (getpid() != udp_owner)
		return 1;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = lo4242();
	int sent = s >= 0 && sendto(s, "ping", 4, 0, (struct sockaddr *)&a, sizeof a) == 4;
	if (s >= 0)
		close(s);
	struct pollfd p = {udp_fd, POLLIN, 0};
	char b[8];
	return sent && poll(&p, 1, 2000) == 1 && recv(udp_fd, b, sizeof b, 0) == 4 &&
	       memcmp(b, "ping", 4) == 0;
}

/* Whether every line of /proc/self/cgroup ends in ":/" (the cgroup namespace's root)
 * and the cgroup namespace is not the root's. */
static int cgroup_ok(void)
{
	char buf[1024] = {0};
	int fd = open("/proc/self/cgroup", O_RDONLY);
	ssize_t r = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (r <= 0)
		return 0;
	int lines = 0;
	for (char *l = buf; *l; lines++) {
		char *nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);
		if (n < 2 || l[n - 2] != ':' || l[n - 1] != '/')
			return 0;
		l += n + (nl ? 1 : 0);
	}
	struct stat st;
	return lines > 0 && stat("/proc/self/ns/cgroup", &st) == 0 && st.st_ino != root_cgns;
}

/* `time`: this process is in the time namespace the child made (1) or in the root's
 * (0); -1 without `time`. The clocks it read last (they never go back). */
static int in_time = -1;
static long long last_mono, last_boot;

static long long clock_ns(clockid_t c)
{
	struct timespec ts;
	if (clock_gettime(c, &ts) != 0)
		return -1;
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether the clocks are as the top says (`time`). */
static int time_ok(void)
{
	if (in_time < 0)
		return 1;
	long long mono = clock_ns(CLOCK_MONOTONIC), boot = clock_ns(CLOCK_BOOTTIME);
	long long ahead = AHEAD_S * 1000000000LL;
	int ok = mono >= last_mono && boot >= last_boot && boot >= mono &&
		 (in_time ? mono >= ahead && boot >= ahead : mono < ahead && boot < ahead);
	last_mono = mono;
	last_boot = boot;
	return ok;
}

/* `threads`: what the thread checks against (its process's, at its start). */
struct thread_want {
	char map[256];
	unsigned long long caps;
};

/* A thread of the child or grandchild (`threads`): the process's checks of its own
 * credentials (each thread has its own) and clocks, every 20 ms; the whole process
 * exits 43 on a difference. */
static void *checker(void *arg)
{
	struct thread_want *w = arg;
	char map[256];
	for (;;) {
		get("/proc/thread-self/uid_map", map, sizeof map);
		if (strcmp(map, w->map) != 0 || geteuid() != 0 || getegid() != 0 ||
		    effective() != w->caps)
			_exit(43);
		sleep_ms(20);
	}
	return NULL;
}

static void start_checker(const char *map0, unsigned long long caps0)
{
	static struct thread_want w;
	snprintf(w.map, sizeof w.map, "%s", map0);
	w.caps = caps0;
	pthread_t t;
	if (pthread_create(&t, NULL, checker, &w) != 0)
		die("pthread_create");
}

/* The child's (and grandchild's) life: check every step; 43 on a difference. The
 * child ends on SIGTERM from the root, once it has killed and reaped the grandchild
 * (`grand`: its PID). */
static void nested(long ms, int uts, const char *map0, unsigned long long caps0, pid_t grand)
{
	char map[256], host[128];
	for (;;) {
		if (stop) {
			if (grand > 0) {
				kill(grand, SIGKILL);
				waitpid(grand, NULL, 0);
			}
			_exit(0);
		}
		get("/proc/self/uid_map", map, sizeof map);
		if (strcmp(map, map0) != 0 || geteuid() != 0 || getegid() != 0 ||
		    effective() != caps0)
			_exit(43);
		if (uts) {
			if (sethostname("ckpt-nested", 11) != 0)
				_exit(43);
			if (gethostname(host, sizeof host) != 0 || strcmp(host, "ckpt-nested") != 0)
				_exit(43);
		}
		if (ipcnet && !ipcnet_ok())
			_exit(43);
		if (cgns && !cgroup_ok())
			_exit(43);
		if (!time_ok())
			_exit(43);
		if (grand > 0 && waitpid(grand, NULL, WNOHANG) == grand)
			_exit(43);
		sleep_ms(ms);
	}
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long ms = 40;
	int top = 0, wide = 0, uts = 0, mnt = 0, time_ns = 0, grand = 0, join = 0, threads = 0;
	long base = 123400;
	for (int i = 2; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			ms = strtol(argv[i] + 6, NULL, 10);
		else if (strncmp(argv[i], "base=", 5) == 0)
			base = strtol(argv[i] + 5, NULL, 10);
		else if (strncmp(argv[i], "cgroup=", 7) == 0) {
			char p[512];
			snprintf(p, sizeof p, "%s/cgroup.procs", argv[i] + 7);
			/* Opened as the host's root: written from inside the user namespaces
			 * with the opener's rights. */
			cg_procs = open(p, O_WRONLY | O_CLOEXEC);
			if (cg_procs < 0)
				die("open %s: %s", p, strerror(errno));
		}
		else if (strcmp(argv[i], "top") == 0)
			top = 1;
		else if (strcmp(argv[i], "wide") == 0)
			wide = 1;
		else if (strcmp(argv[i], "uts") == 0)
			uts = 1;
		else if (strcmp(argv[i], "mnt") == 0)
			mnt = 1;
		else if (strcmp(argv[i], "time") == 0)
			time_ns = 1;
		else if (strcmp(argv[i], "ipcnet") == 0)
			ipcnet = 1;
		else if (strcmp(argv[i], "grand") == 0)
			grand = 1;
		else if (strcmp(argv[i], "join") == 0)
			join = 1;
		else if (strcmp(argv[i], "threads") == 0)
			threads = 1;
	struct stat cgst;
	if (stat("/proc/self/ns/cgroup", &cgst) != 0)
		die("stat /proc/self/ns/cgroup: %s", strerror(errno));
	root_cgns = cgst.st_ino;
	if (top) {
		enter_user_ns(wide, base);
		/* (Changing IDs made it undumpable: its /proc files, and its child's,
		 * would be the host root's.) */
		if (wide && prctl(PR_SET_DUMPABLE, 1) != 0)
			die("PR_SET_DUMPABLE: %s", strerror(errno));
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_term;
	if (sigaction(SIGTERM, &sa, NULL) != 0)
		die("sigaction: %s", strerror(errno));
	int ready[2];
	if (pipe(ready) != 0)
		die("pipe: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(ready[0]);
		uid_t uid = geteuid();
		gid_t gid = getegid();
		if (cg_procs >= 0 && write(cg_procs, "0", 1) != 1)
			die("child: move into the cgroup: %s", strerror(errno));
		if (unshare(CLONE_NEWUSER) != 0)
			die("child: unshare(CLONE_NEWUSER): %s", strerror(errno));
		self_map(uid, gid);
		if (uts) {
			if (unshare(CLONE_NEWUTS) != 0)
				die("child: unshare(CLONE_NEWUTS): %s", strerror(errno));
			if (sethostname("ckpt-nested", 11) != 0)
				die("child: sethostname: %s", strerror(errno));
		}
		if (ipcnet)
			make_ipcnet();
		if (cg_procs >= 0) {
			if (unshare(CLONE_NEWCGROUP) != 0)
				die("child: unshare(CLONE_NEWCGROUP): %s", strerror(errno));
			close(cg_procs);
			cgns = 1;
		}
		if (mnt && unshare(CLONE_NEWNS) != 0)
			die("child: unshare(CLONE_NEWNS): %s", strerror(errno));
		if (time_ns) {
			if (unshare(CLONE_NEWTIME) != 0)
				die("child: unshare(CLONE_NEWTIME): %s", strerror(errno));
			char off[128];
			int n = snprintf(off, sizeof off, "monotonic %lld 0\nboottime %lld 0\n",
					 AHEAD_S, AHEAD_S);
			int fd = open("/proc/self/timens_offsets", O_WRONLY);
			if (fd < 0 || write(fd, off, n) != n)
				die("child: write timens_offsets: %s", strerror(errno));
			close(fd);
			in_time = 0;
		}
		char map0[256];
		get("/proc/self/uid_map", map0, sizeof map0);
		unsigned long long caps0 = effective();
		pid_t g = -1;
		if (grand) {
			g = fork();
			if (g < 0)
				die("child: fork: %s", strerror(errno));
			if (g == 0) {
				close(ready[1]);
				if (time_ns)
					in_time = 1;
				if (threads)
					start_checker(map0, caps0);
				nested(ms, uts, map0, caps0, -1);
			}
		}
		if (threads)
			start_checker(map0, caps0);
		if (write(ready[1], "r", 1) != 1)
			_exit(44);
		close(ready[1]);
		nested(ms, uts, map0, caps0, g);
	}
	close(ready[1]);
	if (cg_procs >= 0) {
		close(cg_procs);
		cg_procs = -1;
	}
	char b;
	if (read(ready[0], &b, 1) != 1)
		die("the child failed to start");
	close(ready[0]);
	pid_t joiner = -1;
	if (join) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/ns/user", child);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die("open %s: %s", path, strerror(errno));
		joiner = fork();
		if (joiner < 0)
			die("fork: %s", strerror(errno));
		if (joiner == 0) {
			if (setns(fd, CLONE_NEWUSER) != 0)
				_exit(45);
			close(fd);
			char jmap[256];
			ipcnet = 0;
			get("/proc/self/uid_map", jmap, sizeof jmap);
			nested(ms, 0, jmap, effective(), -1);
		}
		close(fd);
	}
	char map[256], host[128];
	get("/proc/self/uid_map", map, sizeof map);
	for (long i = 1; i <= steps; i++) {
		int st;
		pid_t w = waitpid(child, &st, WNOHANG);
		if (w == child) {
			out("child lost: status %#x\n", st);
			return 1;
		}
		if (joiner > 0 && waitpid(joiner, &st, WNOHANG) == joiner) {
			out("joiner lost: status %#x\n", st);
			return 1;
		}
		if (gethostname(host, sizeof host) != 0)
			die("gethostname: %s", strerror(errno));
		out("step %ld uid=%u caps=%llx map=%s host-same=%d\n", i, geteuid(), effective(),
		    map, strcmp(host, "ckpt-nested") != 0);
		sleep_ms(ms);
	}
	int st;
	if (joiner > 0) {
		kill(joiner, SIGTERM);
		if (waitpid(joiner, &st, 0) != joiner || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			out("joiner ended with status %#x\n", st);
			return 1;
		}
	}
	kill(child, SIGTERM);
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		out("child ended with status %#x\n", st);
		return 1;
	}
	return 0;
}
