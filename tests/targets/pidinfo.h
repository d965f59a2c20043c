/* Pidfd helpers shared by the test targets that look at pidfds (pidgone, uinflight). */
#ifndef CKPT_TARGET_PIDINFO_H
#define CKPT_TARGET_PIDINFO_H

#include "util.h"
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

/* struct pidfd_info and PIDFD_GET_INFO (linux/pidfd.h, 6.13; exit information 6.15). */
struct info {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define GET_INFO _IOWR(0xFF, 11, struct info)
#define INFO_CGROUPID (1u << 2)
#define INFO_EXIT (1u << 3)

static inline int pidfd_open(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

/* The value of fdinfo line `key` of descriptor `fd` ("(none)" without one). */
static inline const char *fdinfo(int fd, const char *key)
{
	static char line[256];
	char p[64], b[1024];
	snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, b, sizeof b - 1);
	if (f >= 0)
		close(f);
	if (n < 0)
		die("read %s: %s", p, strerror(errno));
	b[n] = 0;
	char *save = NULL;
	for (char *l = strtok_r(b, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		size_t k = strlen(key);
		if (!strncmp(l, key, k) && l[k] == ':') {
			l += k + 1;
			while (*l == ' ' || *l == '\t')
				l++;
			snprintf(line, sizeof line, "%s", l);
			return line;
		}
	}
	return "(none)";
}

#endif
