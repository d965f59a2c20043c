/* Helpers shared by the ckpt test targets.
 *
 * Every target writes its output with write(2), one complete line per call, so that an
 * observer sees progress immediately and nothing is left in a stdio buffer. Output must
 * be deterministic: never print addresses, PIDs, times or anything else that differs
 * between two runs with the same arguments. */
#ifndef CKPT_TARGET_UTIL_H
#define CKPT_TARGET_UTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(100);
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* printf-like, to stdout, one write(2) per call. */
__attribute__((format(printf, 1, 2))) static inline void out(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		_exit(101);
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	write_all(1, buf, (size_t)n);
}

__attribute__((format(printf, 1, 2), noreturn)) static inline void die(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		write_all(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
	write_all(2, "\n", 1);
	exit(1);
}

/* Sleep `ms` milliseconds with nanosleep, continuing after interruptions (a handler, or a
 * checkpoint landing mid-sleep) with the time that remains. */
static inline void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0) {
		if (errno != EINTR)
			die("nanosleep: %s", strerror(errno));
	}
}

/* FNV-1a, 32 bits, over `len` bytes, continuing from `h` (start with FNV_INIT). */
#define FNV_INIT 2166136261u
static inline uint32_t fnv(uint32_t h, const void *p, size_t len)
{
	const volatile unsigned char *b = p;
	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

static inline long arg_long(int argc, char **argv, int i, long dflt)
{
	if (i >= argc)
		return dflt;
	char *end;
	errno = 0;
	long v = strtol(argv[i], &end, 0);
	if (errno || *end || end == argv[i])
		die("bad number: %s", argv[i]);
	return v;
}

#endif
