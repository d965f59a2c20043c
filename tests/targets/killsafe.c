/* A target that checks itself while ckpt dump is killed around it
 * (tests/e2e_killsafe.rs): MIB MiB of written memory, four worker threads, each with
 * its own signal mask and a pattern held in ymm9 (ymm7 built -m32, the ia32 twin) that
 * it checks every turn, and a main thread that prints a progress line every 10 ms once
 * every worker has moved on.
 *
 * Built with -DNO_ROOM (killroom, tests/e2e_killgo.rs), two of its four workers (1 and
 * 3) run on stacks with no room ckpt can tell below their stack pointer: coroutine
 * stacks in the program's .bss (makecontext), with other data right below them, which
 * they check. Worker 3 also has an alternate signal stack (in the heap).
 *
 *   killsafe MIB
 *
 * Anything wrong (a page or a register changed, a worker that stops) prints a line
 * starting with CORRUPT and exits 1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#ifdef NO_ROOM
#include <ucontext.h>
#endif
#include <unistd.h>

#define WORKERS 4
#define PAGE 4096

static uint64_t *mem;
static size_t pages;
static volatile uint64_t turns[WORKERS];

static void corrupt(const char *what, int id, uint64_t got, uint64_t want) {
    char b[160];
    int n = snprintf(b, sizeof b, "CORRUPT %s worker %d got %#lx want %#lx\n", what, id,
                     (unsigned long)got, (unsigned long)want);
    (void)!write(1, b, n);
    _exit(1);
}

/* The vector register that holds the pattern, and one to look at its upper half. */
#ifdef __x86_64__
#define VREG "9"
#define VTMP "10"
#else
#define VREG "7"
#define VTMP "6"
#endif

/* Sleep 1 ms with a raw system call: no libc code may touch the vector registers. */
static void nap(void) {
    struct timespec ts = {0, 1000000};
    long r;
#ifdef __x86_64__
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "0"((long)SYS_nanosleep), "D"(&ts), "S"(0L)
                     : "rcx", "r11", "memory");
#else
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "0"((long)SYS_nanosleep), "b"(&ts), "c"(0L)
                     : "memory");
#endif
    (void)r;
}

static uint64_t want(size_t page, uint64_t gen) {
    return (page * 0x9E3779B97F4A7C15ULL) ^ gen;
}

static void work(int id);

#ifdef NO_ROOM
/* The coroutine stacks, with a guard word below each that the worker checks: a frame
 * written below the stack's end would show there. */
#define CO_STACK (64 << 10)
static struct {
    uint64_t below[512];
    char stack[CO_STACK];
} co[WORKERS] __attribute__((aligned(64)));
static ucontext_t co_ctx[WORKERS], co_back[WORKERS];

static void co_main(int id) { work(id); }
#endif

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
#ifdef NO_ROOM
    if (id & 1) {
        for (int i = 0; i < 512; i++)
            co[id].below[i] = 0x600d600d600d600dULL ^ (uint64_t)i;
        if (id == 3) {
            stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
            if (!ss.ss_sp || sigaltstack(&ss, NULL))
                corrupt("sigaltstack", id, 0, 0);
        }
        getcontext(&co_ctx[id]);
        co_ctx[id].uc_stack.ss_sp = co[id].stack;
        co_ctx[id].uc_stack.ss_size = CO_STACK;
        co_ctx[id].uc_link = &co_back[id];
        makecontext(&co_ctx[id], (void (*)(void))co_main, 1, id);
        swapcontext(&co_back[id], &co_ctx[id]);
        corrupt("coroutine returned", id, 0, 0);
    }
#endif
    work(id);
    return NULL;
}

static void work(int id) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + id);
    sigaddset(&set, SIGUSR1);
    if (id & 1)
        sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    uint64_t pat = 0x0101010101010101ULL * (uint64_t)(id + 3);
    __asm__ volatile("vmovq %0, %%xmm" VREG "\n\tvpbroadcastq %%xmm" VREG ", %%ymm" VREG
                     ::"m"(pat)
                     : "xmm" VREG);
    size_t lo = pages * id / WORKERS, hi = pages * (id + 1) / WORKERS;
    size_t at = lo;
    uint64_t gen = 0;
    for (;;) {
        uint64_t a, b;
        __asm__ volatile("vmovq %%xmm" VREG ", %0\n\tvextracti128 $1, %%ymm" VREG
                         ", %%xmm" VTMP "\n\tvmovq %%xmm" VTMP ", %1"
                         : "=m"(a), "=m"(b)
                         :
                         : "xmm" VTMP);
        if (a != pat)
            corrupt("xmm" VREG, id, a, pat);
        if (b != pat)
            corrupt("ymm" VREG " upper half", id, b, pat);
        /* Check 64 pages and write them with the next generation. */
        for (int k = 0; k < 64; k++) {
            uint64_t *w = mem + at * (PAGE / 8);
            if (*w != want(at, gen))
                corrupt("page", id, *w, want(at, gen));
            *w = want(at, gen + 1);
            if (++at == hi) {
                at = lo;
                gen++;
            }
        }
#ifdef NO_ROOM
        if (id & 1) {
            char here;
            if (&here < co[id].stack || &here >= co[id].stack + CO_STACK)
                corrupt("not on the coroutine stack", id, (uint64_t)(uintptr_t)&here, 0);
            for (int i = 0; i < 512; i++)
                if (co[id].below[i] != (0x600d600d600d600dULL ^ (uint64_t)i))
                    corrupt("below the coroutine stack", id, co[id].below[i], (uint64_t)i);
        }
#endif
        turns[id]++;
        nap();
    }
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
    pages = mib << 8;
    mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 2;
    for (size_t p = 0; p < pages; p++) {
        uint64_t *w = mem + p * (PAGE / 8);
        w[0] = want(p, 0);
        w[1] = p; /* more non-zero data per page */
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    uint64_t seen[WORKERS] = {0};
    for (unsigned long tick = 0;; tick++) {
        /* Wait (up to 5 s) until every worker has turned since the last line. */
        for (int w = 0; w < WORKERS; w++) {
            int n = 0;
            while (turns[w] == seen[w]) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                if (++n > 5000)
                    corrupt("stalled", w, turns[w], seen[w]);
            }
            seen[w] = turns[w];
        }
        printf("tick %lu\n", tick);
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
}
