/* threads ROUNDS [sleep=US]
 *
 * 8 worker threads take strict turns through one mutex and one condition variable per
 * thread: thread i waits on its own condition variable until the turn counter says i,
 * does its part of the round, hands the turn to thread i+1 and signals its condition
 * variable, then sleeps US microseconds (nanosleep) outside the lock. The last thread of
 * each round prints the round with a hash of the whole history of turns, so any turn
 * that was lost, repeated or taken out of order after a restore shows.
 *
 * Each thread also keeps state of its own on its stack, in thread-local storage (%fs
 * base) and in a heap block; main joins the threads (futex wait on their
 * clear_child_tid) and prints it all. Deterministic: the order of turns is forced. */
#include "util.h"
#include <pthread.h>

#define NT 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv[NT];
static long turn;
static uint32_t hist = FNV_INIT;
static long rounds;
static long sleep_us = 5000;
static __thread long tls_sum;
static __thread long tls_id = -1;

struct result {
	long local;
	long tls;
	uint32_t stack_hash;
	uint32_t heap_hash;
};

static void *worker(void *arg)
{
	long id = (long)arg;
	long local = 0;
	unsigned char stackbuf[512];
	unsigned char *heap = malloc(4096);
	if (!heap)
		die("malloc");
	tls_id = id;
	for (size_t i = 0; i < sizeof stackbuf; i++)
		stackbuf[i] = (unsigned char)(i * 7 + (size_t)id);
	for (size_t i = 0; i < 4096; i++)
		heap[i] = (unsigned char)(i * 13 + (size_t)id);

	for (long r = 0; r < rounds; r++) {
		pthread_mutex_lock(&mu);
		while (turn % NT != id)
			pthread_cond_wait(&cv[id], &mu);
		if (turn != r * NT + id)
			die("thread %ld: turn %ld in round %ld", id, turn, r);
		hist = fnv(hist, &id, sizeof id);
		hist = fnv(hist, &r, sizeof r);
		local += id * r + 1;
		tls_sum += r + tls_id;
		stackbuf[r % sizeof stackbuf] ^= (unsigned char)(id + 1);
		heap[(r * 37) % 4096] += (unsigned char)(id + r);
		if (id == NT - 1)
			out("round %ld hist %08x\n", r, hist);
		turn++;
		pthread_cond_signal(&cv[(id + 1) % NT]);
		pthread_mutex_unlock(&mu);
		if (sleep_us > 0) {
			struct timespec ts = { 0, sleep_us * 1000L };
			while (nanosleep(&ts, &ts) != 0)
				;
		}
	}
	struct result *res = malloc(sizeof *res);
	if (!res)
		die("malloc");
	res->local = local;
	res->tls = tls_id == id ? tls_sum : -1;
	res->stack_hash = fnv(FNV_INIT, stackbuf, sizeof stackbuf);
	res->heap_hash = fnv(FNV_INIT, heap, 4096);
	free(heap);
	return res;
}

int main(int argc, char **argv)
{
	rounds = arg_long(argc, argv, 1, 300);
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "sleep=", 6) == 0)
			sleep_us = atol(argv[i] + 6);
		else
			die("unknown option %s", argv[i]);
	}
	for (int i = 0; i < NT; i++)
		pthread_cond_init(&cv[i], NULL);
	out("threads %d rounds %ld\n", NT, rounds);
	pthread_t th[NT];
	for (long i = 0; i < NT; i++) {
		int e = pthread_create(&th[i], NULL, worker, (void *)i);
		if (e)
			die("pthread_create: %s", strerror(e));
	}
	struct result *res[NT];
	for (int i = 0; i < NT; i++) {
		void *p;
		int e = pthread_join(th[i], &p);
		if (e)
			die("pthread_join: %s", strerror(e));
		res[i] = p;
	}
	for (int i = 0; i < NT; i++) {
		out("thread %d local %ld tls %ld stack %08x heap %08x\n", i, res[i]->local,
		    res[i]->tls, res[i]->stack_hash, res[i]->heap_hash);
		free(res[i]);
	}
	out("done turns %ld hist %08x\n", turn, hist);
	return 0;
}
