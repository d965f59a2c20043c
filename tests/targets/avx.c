/* avx STEPS [sleep=MS]
 *
 * A 64-bit program whose AVX (ymm) state is in use at any moment it sleeps: built with
 * -mavx2 -mno-vzeroupper, it does 256-bit integer and double math on a heap array each
 * step, and it sleeps in a raw nanosleep issued by one asm statement that loads ymm15
 * (upper half non-zero) right before the `syscall` instruction and stores it right
 * after: nothing in between can clear the upper halves (glibc's string functions end
 * with vzeroupper), so a checkpoint taken during the sleep sees the AVX xsave component
 * in use, and the value read back after the sleep (printed) shows whether it survived.
 * The image of this program can only be restored on a CPU with AVX. */
#include "util.h"

#include <immintrin.h>
#include <sys/syscall.h>

#define N 4096

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 30);
	long sleep_each = 20;
	for (int i = 2; i < argc; i++) {
		if (!strncmp(argv[i], "sleep=", 6))
			sleep_each = strtol(argv[i] + 6, NULL, 0);
		else
			die("unknown option %s", argv[i]);
	}
	uint32_t *v = aligned_alloc(32, N * sizeof *v);
	double *d = aligned_alloc(32, N * sizeof *d);
	if (!v || !d)
		die("aligned_alloc failed");
	for (int k = 0; k < N; k++) {
		v[k] = (uint32_t)k * 2654435761u;
		d[k] = 1.0 + k / 1024.0;
	}
	uint32_t probe_in[8] __attribute__((aligned(32)));
	uint32_t probe_out[8] __attribute__((aligned(32)));
	out("avx: %d words\n", N);
	for (long step = 1; step <= steps; step++) {
		__m256i mul = _mm256_set1_epi32((int)(step * 2 + 1));
		__m256i add = _mm256_set_epi32(1, 2, 3, 4, 5, 6, 7, (int)step);
		__m256d scale = _mm256_set1_pd(1.0 + step / 4096.0);
		__m256d acc = _mm256_setzero_pd();
		for (int k = 0; k < N; k += 8) {
			__m256i x = _mm256_load_si256((const __m256i *)&v[k]);
			x = _mm256_add_epi32(_mm256_mullo_epi32(x, mul), add);
			x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 7));
			_mm256_store_si256((__m256i *)&v[k], x);
		}
		for (int k = 0; k < N; k += 4) {
			__m256d y = _mm256_mul_pd(_mm256_load_pd(&d[k]), scale);
			_mm256_store_pd(&d[k], y);
			acc = _mm256_add_pd(acc, y);
		}
		double parts[4];
		_mm256_storeu_pd(parts, acc);
		out("step %ld ints %08x doubles %.17g %.17g %.17g %.17g\n", step,
		    fnv(FNV_INIT, v, N * sizeof *v), parts[0], parts[1], parts[2], parts[3]);

		for (int j = 0; j < 8; j++)
			probe_in[j] = (uint32_t)(step * 0x01010101L) + (uint32_t)j * 0x11111111u;
		memset(probe_out, 0, sizeof probe_out);
		struct timespec ts = { sleep_each / 1000, (sleep_each % 1000) * 1000000L };
		long ret;
		__asm__ volatile("vmovdqa (%[in]), %%ymm15\n\t"
				 "syscall\n\t"
				 "vmovdqa %%ymm15, (%[out])"
				 : "=a"(ret)
				 : "0"((long)SYS_nanosleep), "D"(&ts), "S"(&ts), [in] "r"(probe_in),
				   [out] "r"(probe_out)
				 : "rcx", "r11", "memory", "xmm15");
		if (ret != 0)
			out("nanosleep returned %ld\n", ret);
		if (memcmp(probe_in, probe_out, sizeof probe_in))
			out("ymm15 changed during the sleep: %08x %08x ... %08x\n", probe_out[0],
			    probe_out[1], probe_out[7]);
	}
	out("done\n");
	return 0;
}
