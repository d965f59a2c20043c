// The cgo build of gobusy (tests/e2e_killgo.rs): a thread of its C code, started with
// pthread_create, that never runs Go code. It keeps rewriting and checking 64 KiB on
// its own stack (the frame ckpt writes for it goes right below its stack pointer) and
// counts its turns; the main goroutine checks it goes on.
//
// A build without cgo (CGO_ENABLED=0) leaves this file out: see nocthread.go.
package main

/*
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static volatile uint64_t c_turns, c_bad;

static uint64_t c_want(uint64_t i, uint64_t gen) { return (i * 0x9E3779B97F4A7C15ULL) ^ gen; }

static void *c_worker(void *arg) {
	(void)arg;
	volatile uint64_t area[8192];
	for (uint64_t i = 0; i < 8192; i++)
		area[i] = c_want(i, 0);
	for (uint64_t gen = 0;; gen++) {
		for (uint64_t i = 0; i < 8192; i++) {
			if (area[i] != c_want(i, gen))
				c_bad = 1;
			area[i] = c_want(i, gen + 1);
		}
		c_turns++;
		struct timespec t = {0, 1000000};
		nanosleep(&t, 0);
	}
	return 0;
}

static int c_start(void) {
	pthread_t t;
	return pthread_create(&t, 0, c_worker, 0);
}

static uint64_t c_turns_now(void) { return c_turns; }
static uint64_t c_bad_now(void) { return c_bad; }
*/
import "C"

// cThread starts the C thread.
func cThread() {
	if C.c_start() != 0 {
		corrupt("pthread_create")
	}
}

// cTurns is how many turns the C thread made; it calls corrupt if the thread saw its
// memory changed.
func cTurns() uint64 {
	if C.c_bad_now() != 0 {
		corrupt("C thread memory")
	}
	return uint64(C.c_turns_now())
}
