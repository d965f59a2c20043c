/* System V semaphore undo lists, empty or shared between processes (tests/e2e_semundo.rs).
 *
 *   semundo runc      a process with an empty undo list, as runc's Go init leaves the
 *                     container's program: threads made with CLONE_SYSVSEM (pthread)
 *                     gave it one, then it executed its program (the list stays); it
 *                     forks a child, which has none.
 *   semundo shared    a process with an adjustment on a private set (semop SEM_UNDO),
 *                     a child sharing its list (clone CLONE_SYSVSEM without CLONE_VM)
 *                     and one with none (fork). At "go" the sharing child takes one
 *                     more unit with SEM_UNDO and exits: its list lives on in the
 *                     parent, so nothing is undone yet; the parent prints the value.
 *   semundo nolist    a process whose second thread was made without CLONE_SYSVSEM (no
 *                     list at all), and a forked child (none either).
 *   semundo siblings  two processes sharing a list that their parent does not have
 *                     (their own parent, which made them with CLONE_SYSVSEM, exited; the
 *                     root is their subreaper): refused at dump.
 *
 * Prints "ready" when set up; then each line on stdin: "go" runs the mode's step and
 * ends the tree (each process prints what it saw), EOF ends it too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "semundo: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A process that waits to be killed by its parent (or to be told by a pipe). */
static void wait_forever(void) {
    for (;;)
        pause();
}

static void *noop(void *arg) { return arg; }

/* fork() with CLONE_SYSVSEM: the child shares the caller's undo list. */
static pid_t fork_sharing(void) {
    pid_t p = (pid_t)syscall(SYS_clone, CLONE_SYSVSEM | SIGCHLD, 0, 0, 0, 0);
    if (p < 0)
        die("clone(CLONE_SYSVSEM)");
    return p;
}

static int semval(int id) { return semctl(id, 0, GETVAL); }

static char thread_stack[64 * 1024] __attribute__((aligned(16)));

static int bare_thread(void *arg) {
    (void)arg;
    for (;;)
        syscall(SYS_pause);
    return 0;
}

static void end_children(pid_t *kids, int n) {
    for (int i = 0; i < n; i++) {
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    }
}

static void wait_go(void) {
    char line[64];
    while (fgets(line, sizeof line, stdin))
        if (strncmp(line, "go", 2) == 0)
            return;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: semundo runc|shared|nolist|siblings\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "runc") == 0) {
        /* A thread (CLONE_SYSVSEM) gives the process its list; then the program is
         * executed again, as runc's init executes the container's. */
        pthread_t t;
        if (pthread_create(&t, NULL, noop, NULL) || pthread_join(t, NULL))
            die("pthread_create");
        execl("/proc/self/exe", argv[0], "runc-exec", (char *)NULL);
        die("exec");
    }
    pid_t kids[3] = {0, 0, 0};
    int id = -1;
    if (strcmp(mode, "runc-exec") == 0) {
        kids[0] = fork();
        if (kids[0] == 0)
            wait_forever();
    } else if (strcmp(mode, "shared") == 0) {
        id = semget(IPC_PRIVATE, 1, 0600);
        if (id < 0 || semctl(id, 0, SETVAL, 5) < 0)
            die("semget");
        struct sembuf down = {0, -1, SEM_UNDO};
        if (semop(id, &down, 1) < 0)
            die("semop");
        int go[2];
        if (pipe(go) < 0)
            die("pipe");
        kids[0] = fork_sharing();
        if (kids[0] == 0) {
            char b;
            close(go[1]);
            if (read(go[0], &b, 1) != 1)
                _exit(3);
            /* One more unit, undone only when the last holder of the list exits. */
            if (semop(id, &down, 1) < 0)
                _exit(4);
            _exit(0);
        }
        close(go[0]);
        kids[1] = fork();
        if (kids[1] == 0)
            wait_forever();
        printf("ready\n");
        wait_go();
        if (write(go[1], "g", 1) != 1)
            die("write");
        int st;
        if (waitpid(kids[0], &st, 0) < 0)
            die("waitpid");
        kids[0] = 0;
        printf("sharing child exited %d; value %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
               semval(id));
        end_children(kids, 3);
        /* Our exit undoes both units (the list is ours alone now); the set goes. */
        semctl(id, 0, IPC_RMID);
        printf("done\n");
        return 0;
    } else if (strcmp(mode, "nolist") == 0) {
        int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
        if (clone(bare_thread, thread_stack + sizeof thread_stack, flags, NULL) < 0)
            die("clone thread");
        kids[0] = fork();
        if (kids[0] == 0)
            wait_forever();
    } else if (strcmp(mode, "siblings") == 0) {
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
            die("PR_SET_CHILD_SUBREAPER");
        int done[2];
        if (pipe(done) < 0)
            die("pipe");
        pid_t mid = fork();
        if (mid == 0) {
            struct sembuf nothing = {65535, 0, SEM_UNDO | IPC_NOWAIT};
            semop(0x7fffffff, &nothing, 1); /* makes the list, fails */
            for (int i = 0; i < 2; i++) {
                pid_t k = fork_sharing();
                if (k == 0)
                    wait_forever();
                if (write(done[1], &k, sizeof k) != sizeof k)
                    _exit(3);
            }
            _exit(0);
        }
        if (waitpid(mid, NULL, 0) < 0)
            die("waitpid");
        /* Its two children are ours now. */
        for (int i = 0; i < 2; i++)
            if (read(done[0], &kids[i], sizeof kids[i]) != sizeof kids[i])
                die("read");
        close(done[0]);
        close(done[1]);
    } else {
        fprintf(stderr, "semundo: unknown mode %s\n", mode);
        return 2;
    }
    printf("ready\n");
    wait_go();
    printf("done\n");
    end_children(kids, 3);
    return 0;
}
