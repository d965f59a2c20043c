/* A tree for tests/e2e_freezer.rs (dump --freeze-cgroup). `freezer MODE N`: waits for
 * "go" on stdin (the test moves it into its cgroup first), then starts N workers and
 * says "ready". MODE quiet: each worker waits in read() on a pipe; MODE fork: each
 * worker forks a child that exits at once, reaps it, and counts, forever (a fork
 * storm). On stdin, "report" prints "report: workers=W alive=A forks=F" (F: the
 * workers' forks so far, in a shared page), "exit" ends the workers and exits 0. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX 256

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: freezer quiet|fork N\n");
        return 2;
    }
    int fork_mode = strcmp(argv[1], "fork") == 0;
    int n = atoi(argv[2]);
    if (n < 0 || n > MAX) return 2;
    volatile unsigned long *forks =
        mmap(NULL, 4096 * MAX, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (forks == MAP_FAILED) return 1;
    setvbuf(stdout, NULL, _IONBF, 0);
    /* No stdio buffer on the heap: the workers share no heap page with the parent. */
    setvbuf(stdin, NULL, _IONBF, 0);
    char line[128];
    if (!fgets(line, sizeof line, stdin) || strcmp(line, "go\n") != 0) return 3;
    int block[2];
    if (pipe(block)) return 1;
    pid_t kids[MAX];
    for (int i = 0; i < n; i++) {
        kids[i] = fork();
        if (kids[i] < 0) return 1;
        if (kids[i] == 0) {
            close(block[1]);
            if (!fork_mode) {
                char c;
                while (read(block[0], &c, 1) < 0) {
                }
                _exit(0);
            }
            for (;;) {
                pid_t c = fork();
                if (c == 0) _exit(0);
                if (c > 0) {
                    waitpid(c, NULL, 0);
                    forks[i * 512]++;
                }
            }
        }
    }
    close(block[0]);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (strcmp(line, "report\n") == 0) {
            int alive = 0;
            unsigned long total = 0;
            for (int i = 0; i < n; i++) {
                alive += kill(kids[i], 0) == 0 && waitpid(kids[i], NULL, WNOHANG) == 0;
                total += forks[i * 512];
            }
            printf("report: workers=%d alive=%d forks=%lu\n", n, alive, total);
        } else if (strcmp(line, "exit\n") == 0) {
            break;
        }
    }
    for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    printf("bye\n");
    return 0;
}
