/* uring DIR STEPS MODE [sleep=MS]
 *
 * An io_uring instance (8 submission entries, 16 completion entries) as fd 3, with two
 * registered files (/dev/null and DIR/data) and one registered buffer, three NOPs
 * queued of which it submits one (io_uring_enter): the ring then holds two submissions
 * the kernel has not consumed and one completion not reaped. MODE mapped: its rings
 * stay mapped; MODE unmapped: it unmaps them (the descriptor alone holds the instance).
 * Then one "step N" line a step, and "done". */
#include "util.h"
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

static char buf[4096];

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: uring DIR STEPS MODE [sleep=MS]");
	long steps = arg_long(argc, argv, 2, 0);
	const char *mode = argv[3];
	long sleep_each = 20;
	if (argc > 4) {
		if (strncmp(argv[4], "sleep=", 6))
			die("unknown option %s", argv[4]);
		sleep_each = strtol(argv[4] + 6, NULL, 0);
	}
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	int fd = (int)syscall(SYS_io_uring_setup, 8, &p);
	if (fd != 3)
		die("io_uring_setup: %d %s", fd, strerror(errno));
	char path[4096];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	int files[2] = { open("/dev/null", O_RDONLY), open(path, O_RDWR | O_CREAT, 0600) };
	if (files[0] < 0 || files[1] < 0)
		die("open: %s", strerror(errno));
	if (syscall(SYS_io_uring_register, fd, IORING_REGISTER_FILES, files, 2))
		die("register files: %s", strerror(errno));
	close(files[0]);
	close(files[1]);
	struct iovec iov = { buf, sizeof buf };
	if (syscall(SYS_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1))
		die("register buffers: %s", strerror(errno));
	size_t sqlen = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cqlen = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t len = sqlen > cqlen ? sqlen : cqlen;
	char *sq = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			IORING_OFF_SQ_RING);
	size_t sqeslen = p.sq_entries * sizeof(struct io_uring_sqe);
	struct io_uring_sqe *sqes = mmap(NULL, sqeslen, PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || sqes == MAP_FAILED)
		die("mmap the rings: %s", strerror(errno));
	unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned *array = (unsigned *)(sq + p.sq_off.array);
	for (unsigned i = 0; i < 3; i++) {
		memset(&sqes[i], 0, sizeof sqes[i]);
		sqes[i].opcode = IORING_OP_NOP;
		sqes[i].user_data = 100 + i;
		array[i] = i;
	}
	__atomic_store_n(tail, 3, __ATOMIC_RELEASE);
	if (syscall(SYS_io_uring_enter, fd, 1, 0, 0, NULL, 0) != 1)
		die("io_uring_enter: %s", strerror(errno));
	if (!strcmp(mode, "unmapped")) {
		munmap(sq, len);
		munmap(sqes, sqeslen);
	} else if (strcmp(mode, "mapped")) {
		die("unknown mode %s", mode);
	}
	out("holding an io_uring instance\n");
	for (long step = 1; step <= steps; step++) {
		out("step %ld\n", step);
		sleep_ms(sleep_each);
	}
	out("done\n");
	return 0;
}
