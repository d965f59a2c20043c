/* workload MIB: a benchmark target for ckpt.
 *
 * Maps MIB MiB of private anonymous memory, fills every byte with xorshift64* output
 * (incompressible, no zero pages), prints "ready sum=<hex>" on stdout and then waits for
 * signals forever. On SIGUSR1 it recomputes the checksum over the whole area and prints
 * "sum=<hex>", so a benchmark can confirm that a restored process holds the same memory.
 * Every line is one write(2) (nothing is left in a stdio buffer across a checkpoint).
 *
 * It closes every fd >= 3 at start: ckpt refuses targets that hold pipes or sockets
 * beyond stdin/out/err, and a benchmark harness may leak some into its children. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t want_sum;

static void on_usr1(int sig)
{
	(void)sig;
	want_sum = 1;
}

static void say(const char *s)
{
	size_t len = strlen(s);
	while (len > 0) {
		ssize_t n = write(1, s, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(100);
		}
		s += n;
		len -= (size_t)n;
	}
}

/* Order-dependent checksum over 64-bit words. */
static uint64_t checksum(const uint64_t *w, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ w[i]) * 0x100000001b3ull + (h >> 29);
	return h;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: workload MIB\n");
		return 2;
	}
	syscall(SYS_close_range, 3u, ~0u, 0u);
	size_t mib = strtoull(argv[1], NULL, 10);
	size_t bytes = mib << 20;
	size_t n = bytes / 8;
	uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
	if (mem == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	uint64_t x = 0x2545f4914f6cdd1dull ^ (uint64_t)mib;
	for (size_t i = 0; i < n; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		mem[i] = x * 0x2545f4914f6cdd1dull;
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	sigdelset(&wait_mask, SIGUSR1);

	char line[64];
	snprintf(line, sizeof line, "ready sum=%016llx\n",
		 (unsigned long long)checksum(mem, n));
	say(line);
	for (;;) {
		sigsuspend(&wait_mask);
		if (want_sum) {
			want_sum = 0;
			snprintf(line, sizeof line, "sum=%016llx\n",
				 (unsigned long long)checksum(mem, n));
			say(line);
		}
	}
}
