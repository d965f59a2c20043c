/* arch STEPS [sleep=MS]
 *
 * One source, built as a 64-bit program (arch64), a 32-bit one (arch32, gcc -m32) and a
 * static 32-bit one (arch32-static): the twins must print the same lines, except the
 * two that say how big a pointer is ("pointers are N bytes").
 *
 * State that a checkpoint must carry, all of it folded into every step line:
 *   - heap (a malloc'd block), stack (an array in main's frame), static data (.data
 *     initialised, .bss zeroed);
 *   - floating point: SSE (explicit SSE2 intrinsics, so both ABIs do the same math) with
 *     MXCSR set to flush-to-zero and denormals-are-zero, and x87 (long double) with the
 *     precision control set to 53 bits; both control words are printed every step, and
 *     the results with %.17g / %.21Lg, so a lost control word or register shows;
 *   - a SIGUSR1 and a SIGRTMIN+2 handler, SA_SIGINFO|SA_ONSTACK, on a sigaltstack: the
 *     program sigqueue()s itself values (SIGUSR1 every third step; three blocked
 *     SIGRTMIN+2 at once every fifth step, delivered in order when unblocked); the
 *     handler checks it runs on the alternate stack with the right si_code/si_pid, does
 *     SSE and x87 math of its own (which the kernel's signal frame must save and give
 *     back: 32-bit frames for the 32-bit builds), and folds the values into a sum;
 *   - a nanosleep per step that must never return early (a checkpoint landing in it
 *     must restart it, not make it fail with EINTR).
 *
 * It exits with a status derived from all of that (20..69), so a parent can print it. */
#include "util.h"

#include <emmintrin.h>
#include <signal.h>

#define HEAP_WORDS 16384
#define STACK_WORDS 1024

static uint32_t data_words[64] = { 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144 };
static uint32_t bss_words[512];

static char altstack[65536] __attribute__((aligned(64)));

static volatile uint32_t sig_count, sig_sum = 17, sig_bad;
static volatile uint32_t handler_mxcsr;
static volatile double handler_sse;
static volatile long double handler_x87;
static volatile int in_handler;

static int on_altstack(const void *p)
{
	return (const char *)p >= altstack && (const char *)p < altstack + sizeof altstack;
}

static uint16_t get_fcw(void)
{
	uint16_t cw;
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	return cw;
}

static void set_fcw(uint16_t cw)
{
	__asm__ volatile("fldcw %0" : : "m"(cw));
}

static void handler(int sig, siginfo_t *si, void *uc)
{
	char local;
	(void)uc;
	if (in_handler)
		sig_bad |= 8;
	in_handler = 1;
	if (!on_altstack(&local))
		sig_bad |= 1;
	if (si->si_code != SI_QUEUE)
		sig_bad |= 2;
	if (si->si_pid != getpid())
		sig_bad |= 4;
	sig_count++;
	sig_sum = sig_sum * 31u + (uint32_t)si->si_value.sival_int + (uint32_t)sig;
	/* Math of its own, in the handler's fresh FPU state. */
	__m128d a = _mm_set_sd((double)si->si_value.sival_int);
	a = _mm_div_sd(a, _mm_set_sd(7.0));
	a = _mm_sqrt_sd(a, a);
	handler_sse = _mm_cvtsd_f64(a);
	handler_mxcsr = _mm_getcsr() & ~0x3fu;
	volatile long double x = si->si_value.sival_int;
	handler_x87 = x / 3.0L + x * x / 11.0L;
	in_handler = 0;
}

static void queue(int sig, int value)
{
	union sigval v = { .sival_int = value };
	if (sigqueue(getpid(), sig, v))
		die("sigqueue: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 40);
	long sleep_each = 25;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	out("arch: pointers are %u bytes\n", (unsigned)sizeof(void *));

	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
	if (sigaltstack(&ss, NULL))
		die("sigaltstack: %s", strerror(errno));
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	int rt = SIGRTMIN + 2;
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(rt, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	sigset_t rtset;
	sigemptyset(&rtset);
	sigaddset(&rtset, rt);

	/* Flush-to-zero and denormals-are-zero for SSE; 53-bit precision for x87. */
	_mm_setcsr(_mm_getcsr() | 0x8040);
	set_fcw((uint16_t)((get_fcw() & ~0x300) | 0x200));

	uint32_t *heap = malloc(HEAP_WORDS * sizeof *heap);
	if (!heap)
		die("malloc failed");
	for (uint32_t k = 0; k < HEAP_WORDS; k++)
		heap[k] = k * 2654435761u;
	uint32_t stk[STACK_WORDS];
	for (uint32_t k = 0; k < STACK_WORDS; k++)
		stk[k] = k ^ 0x5a5a5a5au;

	__m128d sse = _mm_set_sd(1.0);
	const __m128d tiny = _mm_set_sd(1e-310); /* a denormal: DAZ reads it as 0 */
	volatile long double x87 = 1.0L;

	for (long step = 1; step <= steps; step++) {
		uint32_t s = (uint32_t)step;
		for (uint32_t k = 0; k < 512; k++) {
			heap[(s * 977u + k * 13u) % HEAP_WORDS] += k ^ s;
			stk[(s * 31u + k) % STACK_WORDS] ^= heap[k] + s;
			bss_words[(k + s) % 512] += k * s;
		}
		data_words[s % 64] = data_words[(s + 63) % 64] + data_words[(s + 62) % 64] + s;

		for (int k = 1; k <= 50; k++) {
			__m128d t = _mm_div_sd(_mm_set_sd(1.0), _mm_set_sd((double)(k + (int)s)));
			sse = _mm_add_sd(_mm_mul_sd(sse, _mm_set_sd(1.0000001)), t);
			sse = _mm_add_sd(sse, tiny);
			x87 = x87 * 1.0000001L + 1.0L / (long double)(k + (int)s);
		}
		__m128d root = _mm_sqrt_sd(sse, sse);

		if (step % 3 == 0)
			queue(SIGUSR1, (int)(step * 1000 + 7));
		if (step % 5 == 0) {
			sigprocmask(SIG_BLOCK, &rtset, NULL);
			for (int j = 1; j <= 3; j++)
				queue(rt, (int)(step * 10 + j));
			sigprocmask(SIG_UNBLOCK, &rtset, NULL);
		}

		uint32_t hh = fnv(FNV_INIT, heap, HEAP_WORDS * sizeof *heap);
		uint32_t hs = fnv(FNV_INIT, stk, sizeof stk);
		uint32_t hd = fnv(fnv(FNV_INIT, data_words, sizeof data_words), bss_words,
				  sizeof bss_words);
		out("step %ld heap %08x stack %08x static %08x sse %.17g sqrt %.17g x87 %.21Lg "
		    "mxcsr %#x fcw %#x signals %u sum %08x bad %u handler %#x %.17g %.21Lg\n",
		    step, hh, hs, hd, _mm_cvtsd_f64(sse), _mm_cvtsd_f64(root), (long double)x87,
		    _mm_getcsr() & ~0x3fu, get_fcw(), sig_count, sig_sum, sig_bad, handler_mxcsr,
		    handler_sse, (long double)handler_x87);

		struct timespec ts = { sleep_each / 1000, (sleep_each % 1000) * 1000000L };
		if (nanosleep(&ts, &ts) != 0)
			out("nanosleep failed at step %ld: %s\n", step, strerror(errno));
	}
	uint32_t all = fnv(FNV_INIT, heap, HEAP_WORDS * sizeof *heap);
	all = fnv(all, stk, sizeof stk);
	all = fnv(all, (const void *)&sig_sum, sizeof sig_sum);
	out("done; pointers are %u bytes\n", (unsigned)sizeof(void *));
	return 20 + (int)(all % 50);
}
