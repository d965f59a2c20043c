/* Netlink sockets: a route socket bound (port id autobound) to the link and IPv4 address
 * groups with IPv6 addresses added by NETLINK_ADD_MEMBERSHIP and NETLINK_NO_ENOBUFS on,
 * a uevent socket bound to its group with SO_PASSCRED (port ids autobound), and a generic socket not bound.
 *
 * It prints "ready" once set up. On "report" it prints what each socket shows (port
 * ids only as "same" or "changed"). On "check" it adds 127.77.0.1/32 to lo through a
 * new route socket and removes it, and prints the notifications the first socket got;
 * and asks the generic socket for the family "nlctrl". On "exit" or end of file it
 * exits 0. With the argument "queued", the route socket has a message waiting instead
 * (dump refuses it). */
#include "util.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>

static int route, uevent, generic;
static unsigned route_pid, uevent_pid;

static unsigned portid(int fd, unsigned *groups)
{
	struct sockaddr_nl a = { 0 };
	socklen_t l = sizeof a;
	if (getsockname(fd, (struct sockaddr *)&a, &l))
		die("getsockname");
	if (groups)
		*groups = a.nl_groups;
	return a.nl_pid;
}

static int geti(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt %d/%d: %s", level, name, strerror(errno));
}

/* Send an RTM_NEWADDR or RTM_DELADDR for 127.77.0.1/32 on lo through `fd`, and wait
 * for its acknowledgement. */
static void addr_request(int fd, int type)
{
	struct {
		struct nlmsghdr h;
		struct ifaddrmsg a;
		struct rtattr ra;
		unsigned char ip[4];
	} req = { 0 };
	req.h.nlmsg_len = sizeof req;
	req.h.nlmsg_type = (unsigned short)type;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (type == RTM_NEWADDR ? NLM_F_CREATE | NLM_F_EXCL : 0);
	req.h.nlmsg_seq = 1;
	req.a.ifa_family = AF_INET;
	req.a.ifa_prefixlen = 32;
	req.a.ifa_index = 1;
	req.ra.rta_len = RTA_LENGTH(4);
	req.ra.rta_type = IFA_LOCAL;
	req.ip[0] = 127, req.ip[1] = 77, req.ip[2] = 0, req.ip[3] = 1;
	if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req)
		die("send address request");
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof buf, 0);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (n < (ssize_t)sizeof *h || h->nlmsg_type != NLMSG_ERROR ||
	    ((struct nlmsgerr *)NLMSG_DATA(h))->error != 0)
		die("address request %d refused", type);
}

/* Wait for a notification of `type` about 127.77.0.1 on the route socket. */
static int notified(int type)
{
	char buf[16384];
	for (;;) {
		struct pollfd p = { .fd = route, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1)
			return 0;
		ssize_t n = recv(route, buf, sizeof buf, 0);
		if (n < 0)
			die("recv notification");
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type != type)
				continue;
			struct ifaddrmsg *a = NLMSG_DATA(h);
			int len = (int)IFA_PAYLOAD(h);
			for (struct rtattr *ra = IFA_RTA(a); RTA_OK(ra, len); ra = RTA_NEXT(ra, len)) {
				unsigned char *ip = RTA_DATA(ra);
				if (ra->rta_type == IFA_LOCAL && ip[0] == 127 && ip[1] == 77)
					return 1;
			}
		}
	}
}

static void setup(int queued)
{
	route = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR };
	if (route < 0 || bind(route, (struct sockaddr *)&a, sizeof a))
		die("route socket");
	seti(route, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_IPV6_IFADDR);
	seti(route, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
	seti(route, SOL_SOCKET, SO_RCVBUF, 1 << 18);
	route_pid = portid(route, NULL);

	uevent = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT);
	struct sockaddr_nl u = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	if (uevent < 0 || bind(uevent, (struct sockaddr *)&u, sizeof u))
		die("uevent socket");
	seti(uevent, SOL_SOCKET, SO_PASSCRED, 1);
	uevent_pid = portid(uevent, NULL);

	generic = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
	if (generic < 0)
		die("generic socket");
	if (queued) {
		struct {
			struct nlmsghdr h;
			struct rtgenmsg g;
		} req = { { sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0 }, { AF_UNSPEC } };
		if (send(route, &req, sizeof req, 0) != (ssize_t)sizeof req)
			die("send");
		usleep(100000);
	}
}

static void report(void)
{
	unsigned rg, ug;
	unsigned rp = portid(route, &rg), up = portid(uevent, &ug);
	unsigned words[4] = { 0 };
	socklen_t l = sizeof words;
	getsockopt(route, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words, &l);
	out("report: route port=%s groups=%#x members=%#x no_enobufs=%d rcvbuf=%d; uevent "
	    "port=%s groups=%#x passcred=%d; generic bound=%d\n",
	    rp == route_pid ? "same" : "changed", rg, words[0],
	    geti(route, SOL_NETLINK, NETLINK_NO_ENOBUFS), geti(route, SOL_SOCKET, SO_RCVBUF),
	    up == uevent_pid ? "same" : "changed",
	    ug, geti(uevent, SOL_SOCKET, SO_PASSCRED), portid(generic, NULL) != 0);
}

static void check(void)
{
	int req = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (req < 0)
		die("request socket");
	addr_request(req, RTM_NEWADDR);
	int got_new = notified(RTM_NEWADDR);
	addr_request(req, RTM_DELADDR);
	int got_del = notified(RTM_DELADDR);
	close(req);
	out("check: route notified new=%d del=%d\n", got_new, got_del);

	struct {
		struct nlmsghdr h;
		struct genlmsghdr g;
		struct nlattr a;
		char name[8];
	} q = { 0 };
	q.h.nlmsg_len = sizeof q;
	q.h.nlmsg_type = GENL_ID_CTRL;
	q.h.nlmsg_flags = NLM_F_REQUEST;
	q.h.nlmsg_seq = 7;
	q.g.cmd = CTRL_CMD_GETFAMILY;
	q.g.version = 1;
	q.a.nla_len = NLA_HDRLEN + 7;
	q.a.nla_type = CTRL_ATTR_FAMILY_NAME;
	memcpy(q.name, "nlctrl", 7);
	if (send(generic, &q, sizeof q, 0) != (ssize_t)sizeof q)
		die("generic send");
	char buf[8192];
	ssize_t n = recv(generic, buf, sizeof buf, 0);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	out("check: generic reply type=%d seq=%u\n", n > 0 ? h->nlmsg_type : -1, n > 0 ? h->nlmsg_seq : 0);
	out("check: done\n");
}

int main(int argc, char **argv)
{
	setup(argc > 1 && !strcmp(argv[1], "queued"));
	out("ready\n");
	char line[256];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(0, line + have, sizeof line - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
		line[have] = 0;
		char *nl;
		int quit = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (!strcmp(line, "report"))
				report();
			else if (!strcmp(line, "check"))
				check();
			else if (!strcmp(line, "exit"))
				quit = 1;
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, have - used + 1);
			have -= used;
		}
		if (quit)
			break;
	}
	return 0;
}
