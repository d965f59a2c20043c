/* A static program without libc (tests/e2e_killgo.rs): no `syscall; ret` and no
 * `rt_sigreturn` anywhere in it (it never installs a signal handler, and every system
 * call is inlined where it is used), so a kill-safe dump has to write its own into the
 * padding after its code. It blocks SIGUSR2, keeps a pattern in r12-r15 (checked after
 * every system call: registers a dump gives back wrong show there), rewrites 64 KiB of
 * its .bss with the next generation each turn after checking the last one, and prints
 * a progress line ("tick N") every 10 ms.
 *
 * Its ia32 build (`bare32`) makes its calls with `int $0x80`, keeps the pattern in ebp
 * and edi, and first unmaps its vDSO (as some sandboxes do): the ia32 vDSO holds both
 * an `int $0x80 ... ret` and an ia32 `rt_sigreturn`, so without it the task has
 * neither, and ckpt writes its ia32 ones into the padding.
 *
 * Anything wrong prints a line starting with CORRUPT and exits 1.
 */
#include <stdint.h>

#ifdef __i386__
#define SYS_write 4
#define SYS_munmap 91
#define SYS_nanosleep 162
#define SYS_rt_sigprocmask 175
#define SYS_exit_group 252
#else
#define SYS_write 1
#define SYS_rt_sigprocmask 14
#define SYS_nanosleep 35
#define SYS_exit_group 231
#endif

#define WORDS (64 << 7)
static uint64_t area[WORDS];

struct ts {
    long sec, nsec;
};

static volatile int bad_regs;

#ifdef __i386__
/* Every system call of the program, inlined where it is used (never a function ending
 * `int $0x80; ret`), with ebp and edi holding the pattern around it. */
static inline __attribute__((always_inline)) long sys4(long nr, long a, long b, long c,
                                                       long d) {
    long r;
    __asm__ volatile("push %%ebp\n\t"
                     "mov $0x12121212, %%ebp\n\t"
                     "mov $0x13131313, %%edi\n\t"
                     "int $0x80\n\t"
                     "cmp $0x12121212, %%ebp\n\t"
                     "setne %%cl\n\t"
                     "cmp $0x13131313, %%edi\n\t"
                     "setne %%ch\n\t"
                     "or %%ch, %%cl\n\t"
                     "movzbl %%cl, %%ecx\n\t"
                     "pop %%ebp"
                     : "=a"(r), "+c"(b)
                     : "0"(nr), "b"(a), "d"(c), "S"(d)
                     : "edi", "memory", "cc");
    if (b)
        bad_regs = 1;
    return r;
}
#else
/* Every system call of the program, inlined where it is used (never a function ending
 * `syscall; ret`), with r12-r15 holding the pattern around it: the registers the
 * program left there must be there after the call. */
static inline __attribute__((always_inline)) long sys4(long nr, long a, long b, long c,
                                                       long d) {
    long r;
    int bad;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("mov $0x1212121212121212, %%r12\n\t"
                     "mov $0x1313131313131313, %%r13\n\t"
                     "mov $0x1414141414141414, %%r14\n\t"
                     "mov $0x1515151515151515, %%r15\n\t"
                     "syscall\n\t"
                     "xor %%edx, %%edx\n\t"
                     "mov $0x1212121212121212, %%rcx\n\tcmp %%rcx, %%r12\n\tsetne %%dl\n\t"
                     "mov $0x1313131313131313, %%rcx\n\tcmp %%rcx, %%r13\n\tsetne %%cl\n\t"
                     "or %%cl, %%dl\n\t"
                     "mov $0x1414141414141414, %%rcx\n\tcmp %%rcx, %%r14\n\tsetne %%cl\n\t"
                     "or %%cl, %%dl\n\t"
                     "mov $0x1515151515151515, %%rcx\n\tcmp %%rcx, %%r15\n\tsetne %%cl\n\t"
                     "or %%cl, %%dl\n\t"
                     "mov %%edx, %1"
                     : "=a"(r), "=r"(bad), "+d"(c)
                     : "0"(nr), "D"(a), "S"(b), "r"(r10)
                     : "rcx", "r11", "r12", "r13", "r14", "r15", "memory");
    if (bad)
        bad_regs = 1;
    return r;
}
#endif

static void out(const char *s, long n) {
    sys4(SYS_write, 1, (long)s, n, 0);
}

static void die(const char *what, long n) {
    out("CORRUPT ", 8);
    out(what, n);
    out("\n", 1);
    sys4(SYS_exit_group, 1, 0, 0, 0);
    for (;;)
        ;
}

static uint64_t want(uint64_t i, uint64_t gen) {
    return (i * 0x9E3779B97F4A7C15ULL) ^ gen;
}

#ifdef __i386__
/* Unmap the vDSO (its address in the auxiliary vector after the environment, `sp` the
 * stack pointer at entry; its size from its own program headers). */
static void unmap_vdso(uint32_t *sp) {
    uint32_t *p = sp + 1 + sp[0] + 1;
    while (*p)
        p++;
    uint32_t base = 0;
    for (p++; p[0]; p += 2)
        if (p[0] == 33 /* AT_SYSINFO_EHDR */)
            base = p[1];
    if (!base)
        return;
    const unsigned char *eh = (const unsigned char *)base;
    uint32_t phoff = *(const uint32_t *)(eh + 28), end = 0;
    uint16_t phnum = *(const uint16_t *)(eh + 44);
    for (uint16_t i = 0; i < phnum; i++) {
        const uint32_t *ph = (const uint32_t *)(eh + phoff + 32 * i);
        if (ph[0] == 1 /* PT_LOAD */ && ph[2] + ph[5] > end)
            end = ph[2] + ph[5];
    }
    if (sys4(SYS_munmap, base, (end + 4095) & ~4095u, 0, 0) != 0)
        die("munmap vdso", 11);
}
#endif

__attribute__((used)) void bare_main(void *sp) {
#ifdef __i386__
    unmap_vdso(sp);
#else
    (void)sp;
#endif
    uint64_t block = 1ULL << (12 - 1); /* SIGUSR2 */
    sys4(SYS_rt_sigprocmask, 0 /* SIG_BLOCK */, (long)&block, 0, 8);
    for (uint64_t i = 0; i < WORDS; i++)
        area[i] = want(i, 0);
    for (uint64_t gen = 0;; gen++) {
        if (bad_regs)
            die("registers", 9);
        for (uint64_t i = 0; i < WORDS; i++) {
            if (area[i] != want(i, gen))
                die("memory", 6);
            area[i] = want(i, gen + 1);
        }
        char line[32], digits[20];
        int n = 0, k = 5;
        line[0] = 't', line[1] = 'i', line[2] = 'c', line[3] = 'k', line[4] = ' ';
        uint64_t v = gen;
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (n)
            line[k++] = digits[--n];
        line[k++] = '\n';
        out(line, k);
        struct ts t;
        t.sec = 0, t.nsec = 10000000;
        sys4(SYS_nanosleep, (long)&t, 0, 0, 0);
    }
}

/* The entry: align the stack, pass the stack pointer at entry (the auxiliary vector is
 * above it) and never return. */
#ifdef __i386__
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov %esp, %eax\n"
        "  and $-16, %esp\n"
        "  sub $12, %esp\n"
        "  push %eax\n"
        "  call bare_main\n"
        "  hlt\n");
#else
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call bare_main\n"
        "  hlt\n");
#endif
