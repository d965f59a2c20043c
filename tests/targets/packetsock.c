/* Packet sockets (AF_PACKET) on lo, each with what restore must bring back:
 *   descriptor 3: SOCK_RAW, protocol 0x88b5, bound to lo, PACKET_AUXDATA and
 *                 PACKET_IGNORE_OUTGOING on, a classic filter that passes only frames
 *                 whose first payload byte is 'y', locked (SO_LOCK_FILTER)
 *   descriptor 4: SOCK_DGRAM, protocol 0x88b6, every interface, PACKET_ORIGDEV and
 *                 PACKET_IGNORE_OUTGOING on
 *   descriptor 5: SOCK_RAW, protocol 0 (receives nothing), SO_PRIORITY 5
 * It prints "ready" once set up. On "report" it prints the options, protocols,
 * interfaces and filter lengths; on "check" it sends frames on lo through a new packet
 * socket and prints what each socket received; on "exit" it exits 0.
 * With the argument "fanout", descriptor 3 joins a fanout group instead (dump refuses
 * it); "check" then only prints "check: done". */
#include "util.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

static int lo;

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt %d/%d: %s", level, name, strerror(errno));
}

static int geti(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static int packet(int type, int proto, int bind_lo, int want)
{
	int s = socket(AF_PACKET, type, htons(proto));
	if (s != want)
		die("packet socket %d, not %d: %s", s, want, strerror(errno));
	if (bind_lo) {
		struct sockaddr_ll a = { .sll_family = AF_PACKET,
					 .sll_protocol = htons(proto),
					 .sll_ifindex = lo };
		if (bind(s, (struct sockaddr *)&a, sizeof a))
			die("bind: %s", strerror(errno));
	}
	return s;
}

static void report(void)
{
	for (int fd = 3; fd <= 5; fd++) {
		struct sockaddr_ll a;
		socklen_t l = sizeof a;
		memset(&a, 0, sizeof a);
		getsockname(fd, (struct sockaddr *)&a, &l);
		socklen_t blocks = 0;
		getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, NULL, &blocks);
		out("report: fd %d type %d protocol %#x on %s auxdata %d origdev %d ignore_out %d "
		    "priority %d filter %u locked %d\n",
		    fd, geti(fd, SOL_SOCKET, SO_TYPE), ntohs(a.sll_protocol),
		    a.sll_ifindex == lo ? "lo" : a.sll_ifindex == 0 ? "any" : "other",
		    geti(fd, SOL_PACKET, PACKET_AUXDATA), geti(fd, SOL_PACKET, PACKET_ORIGDEV),
		    geti(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING), geti(fd, SOL_SOCKET, SO_PRIORITY),
		    (unsigned)blocks, geti(fd, SOL_SOCKET, SO_LOCK_FILTER));
	}
}

static void send_frame(int s, int proto, const char *payload)
{
	unsigned char f[64] = { 0 };
	f[12] = (unsigned char)(proto >> 8);
	f[13] = (unsigned char)proto;
	size_t n = strlen(payload);
	memcpy(f + 14, payload, n);
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_ifindex = lo, .sll_halen = 6 };
	if (sendto(s, f, 14 + n, 0, (struct sockaddr *)&a, sizeof a) < 0)
		die("sendto: %s", strerror(errno));
}

/* What fd receives within ms milliseconds ("nothing" if nothing). */
static void received(int fd, int ms, char *got, size_t cap)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	strcpy(got, "nothing");
	if (poll(&p, 1, ms) != 1)
		return;
	unsigned char b[256];
	ssize_t n = recv(fd, b, sizeof b, 0);
	if (n < 0)
		die("recv");
	size_t off = geti(fd, SOL_SOCKET, SO_TYPE) == SOCK_RAW ? 14 : 0;
	size_t len = (size_t)n > off ? (size_t)n - off : 0;
	if (len >= cap)
		len = cap - 1;
	memcpy(got, b + off, len);
	got[len] = 0;
	got[strcspn(got, "\n")] = 0;
}

static void check(void)
{
	int tx = socket(AF_PACKET, SOCK_RAW, 0);
	if (tx < 0)
		die("tx");
	send_frame(tx, 0x88b5, "n-frame");
	send_frame(tx, 0x88b5, "y-frame");
	send_frame(tx, 0x88b6, "dgram");
	char a[64], b[64], c[64], d[64];
	received(3, 2000, a, sizeof a);
	received(3, 200, b, sizeof b);
	received(4, 2000, c, sizeof c);
	received(5, 200, d, sizeof d);
	out("check: raw got '%s' then '%s'; dgram got '%s'; unbound got '%s'\n", a, b, c, d);
	close(tx);
	out("check: done\n");
}

int main(int argc, char **argv)
{
	lo = (int)if_nametoindex("lo");
	if (lo <= 0)
		die("no lo");
	int fanout = argc > 1 && !strcmp(argv[1], "fanout");
	int raw = packet(SOCK_RAW, 0x88b5, 1, 3);
	if (fanout) {
		seti(raw, SOL_PACKET, PACKET_FANOUT, 77 | (PACKET_FANOUT_HASH << 16));
	} else {
		seti(raw, SOL_PACKET, PACKET_AUXDATA, 1);
		seti(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
		/* pass frames whose first payload byte is 'y' */
		struct sock_filter code[] = {
			BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 14),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'y', 0, 1),
			BPF_STMT(BPF_RET | BPF_K, 0xffff),
			BPF_STMT(BPF_RET | BPF_K, 0),
		};
		struct sock_fprog prog = { .len = 4, .filter = code };
		if (setsockopt(raw, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog))
			die("SO_ATTACH_FILTER");
		seti(raw, SOL_SOCKET, SO_LOCK_FILTER, 1);
		int dg = packet(SOCK_DGRAM, 0x88b6, 0, 4);
		seti(dg, SOL_PACKET, PACKET_ORIGDEV, 1);
		seti(dg, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
		int none = packet(SOCK_RAW, 0, 0, 5);
		seti(none, SOL_SOCKET, SO_PRIORITY, 5);
	}
	out("ready\n");
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "report") && !fanout)
			report();
		else if (!strcmp(line, "check"))
			fanout ? out("check: done\n") : check();
		else if (!strcmp(line, "exit"))
			break;
	}
	return 0;
}
