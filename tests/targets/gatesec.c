/* gatesec: a program under seccomp filters that watches its /proc (tests/e2e_gate.rs:
 * threads under seccomp wait behind restore's release gate too).
 *
 * Run as PID 1 of a PID namespace with a /proc of its own. It sets no_new_privs, starts
 * a thread (waiting in a read of a pipe), installs with SECCOMP_FILTER_FLAG_TSYNC a
 * filter that makes uname fail with EPERM and lets everything else through, then the
 * thread adds one of its own making getppid fail with EACCES. It prints "ready", then
 * every 5 ms counts the processes its /proc lists and prints "saw N processes" whenever
 * that is not 1 (just itself). At "go" (or end of input) it prints what uname and the
 * thread's getppid give, then "done", and exits 0.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static int ask[2], answer[2];

static void die(const char *what) {
    fprintf(stderr, "gatesec: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A filter that makes system call `nr` fail with `err`, and lets the rest through. */
static void install(int nr, int err, unsigned flags) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) != 0)
        die("seccomp");
}

static void *worker(void *arg) {
    (void)arg;
    char b;
    /* Told to install its own filter, then to report. */
    if (read(ask[0], &b, 1) != 1)
        return NULL;
    install(SYS_getppid, EACCES, 0);
    if (write(answer[1], "i", 1) != 1)
        return NULL;
    if (read(ask[0], &b, 1) != 1)
        return NULL;
    long r = syscall(SYS_getppid);
    int e = r < 0 ? errno : 0;
    if (write(answer[1], &e, sizeof e) != sizeof e)
        return NULL;
    return NULL;
}

static int count_procs(void) {
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
            n++;
    closedir(d);
    return n;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pipe(ask) || pipe(answer))
        die("pipe");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        die("no_new_privs");
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL))
        die("pthread_create");
    install(SYS_uname, EPERM, SECCOMP_FILTER_FLAG_TSYNC);
    char b;
    if (write(ask[1], "i", 1) != 1 || read(answer[0], &b, 1) != 1)
        die("worker");
    printf("ready\n");
    int last = 1;
    for (;;) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = poll(&p, 1, 5);
        if (r < 0 && errno != EINTR)
            die("poll");
        if (r > 0) {
            char line[64];
            if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) == 0)
                break;
        }
        int n = count_procs();
        if (n != last) {
            printf("saw %d processes\n", n);
            last = n;
        }
    }
    struct utsname u;
    int ue = uname(&u) < 0 ? errno : 0;
    int ge = -1;
    if (write(ask[1], "r", 1) != 1 || read(answer[0], &ge, sizeof ge) != sizeof ge)
        die("worker report");
    pthread_join(t, NULL);
    printf("uname: %s; worker's getppid: %s\n", strerror(ue), strerror(ge));
    printf("done\n");
    return 0;
}
