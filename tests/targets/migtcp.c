// tests/e2e_migtcp.rs: a process holding a TCP connection to the test (it connects
// to 127.0.0.1:PORT, argv[1]) and a listener on 127.0.0.1 with the connection it
// accepted from the test (other addresses: below). Commands on standard input, one per line:
//   fill  write a pattern to the first connection without waiting until nothing more
//         fits (the test does not read yet): prints "filled N"
//   read  read what is queued on both connections without waiting, answer each with
//         "got N SUM\n" and print "read A N SUM B N SUM"
//   park  send the first connection to itself over a unix socket pair (SCM_RIGHTS)
//         and close it: only the queued message holds it; prints "parked"
//   unpark  receive it back onto its old descriptor; prints "unparked"
//   take  accept one more connection on the listener, read a line from it, answer
//         "took N SUM\n" (its length and byte sum, newline included), close it and
//         print "took N SUM"
// The pattern's byte at stream offset i is (i * 7 + 3) % 251.
//   migtcp PORT [RATE [PEER LOCAL]]
// RATE > 0: a thread writes RATE pages a second over 4 MiB (so that a migration's
// final image has pages written since its last round). PEER, LOCAL: the addresses of
// the connection it makes (from LOCAL to PEER:PORT) and of its listener (LOCAL),
// 127.0.0.1 for both by default.
#include <arpa/inet.h>
#include <pthread.h>
#include <time.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void send_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, s, n, 0);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("send");
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Read what is queued without waiting: its length and byte sum. */
static void drain(int fd, long *n, unsigned long *sum) {
    char buf[65536];
    *n = 0;
    *sum = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            *sum += (unsigned char)buf[i];
        *n += r;
    }
}

#define AREA (4 << 20)
static char area[AREA];

static void *writer(void *arg) {
    unsigned long rate = *(unsigned long *)arg, page = 0, step = 0;
    struct timespec ts = {0, (long)(1000000000UL / rate)};
    for (;;) {
        area[(page % (AREA / 4096)) * 4096] = (char)++step;
        page++;
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    static unsigned long rate;
    rate = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
    pthread_t th;
    if (rate > 0 && pthread_create(&th, NULL, writer, &rate) != 0)
        die("pthread_create");
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct sockaddr_in me = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (argc > 4 && (inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1 ||
                     inet_pton(AF_INET, argv[4], &me.sin_addr) != 1))
        return 2;
    sa.sin_port = htons((unsigned short)atoi(argv[1]));
    int a = socket(AF_INET, SOCK_STREAM, 0);
    if (a < 0 || (argc > 4 && bind(a, (struct sockaddr *)&me, sizeof me) < 0) ||
        connect(a, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("socket");
    sa = me;
    sa.sin_port = 0;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4) < 0)
        die("listen");
    socklen_t sl = sizeof sa;
    if (getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
        die("getsockname");
    printf("ready %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int b = accept(l, NULL, NULL);
    if (b < 0)
        die("accept");
    printf("accepted\n");
    fflush(stdout);
    long filled = 0;
    int pair[2] = {-1, -1};
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "fill", 4) == 0) {
            char buf[4096];
            for (;;) {
                for (size_t i = 0; i < sizeof buf; i++)
                    buf[i] = (char)((((unsigned long)filled + i) * 7 + 3) % 251);
                ssize_t w = send(a, buf, sizeof buf, MSG_DONTWAIT);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                filled += w;
            }
            printf("filled %ld\n", filled);
        } else if (strncmp(line, "read", 4) == 0) {
            long na, nb;
            unsigned long sa_, sb;
            drain(a, &na, &sa_);
            drain(b, &nb, &sb);
            char msg[64];
            int m = snprintf(msg, sizeof msg, "got %ld %lu\n", na, sa_);
            send_all(a, msg, (size_t)m);
            m = snprintf(msg, sizeof msg, "got %ld %lu\n", nb, sb);
            send_all(b, msg, (size_t)m);
            printf("read A %ld %lu B %ld %lu\n", na, sa_, nb, sb);
        } else if (strncmp(line, "park", 4) == 0) {
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
                die("socketpair");
            char byte = 'p';
            struct iovec iov = {.iov_base = &byte, .iov_len = 1};
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } u;
            memset(&u, 0, sizeof u);
            struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                .msg_controllen = sizeof u.buf};
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &a, sizeof(int));
            if (sendmsg(pair[0], &mh, 0) != 1)
                die("sendmsg");
            close(a);
            printf("parked\n");
        } else if (strncmp(line, "unpark", 6) == 0) {
            char byte;
            struct iovec iov = {.iov_base = &byte, .iov_len = 1};
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } u;
            struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                .msg_controllen = sizeof u.buf};
            if (recvmsg(pair[1], &mh, 0) != 1)
                die("recvmsg");
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            int got;
            if (!cm || cm->cmsg_type != SCM_RIGHTS)
                die("no descriptor");
            memcpy(&got, CMSG_DATA(cm), sizeof(int));
            if (got != a) {
                if (dup2(got, a) < 0)
                    die("dup2");
                close(got);
            }
            printf("unparked\n");
        } else if (strncmp(line, "take", 4) == 0) {
            int c = accept(l, NULL, NULL);
            if (c < 0)
                die("accept");
            long n = 0;
            unsigned long sum = 0;
            char ch = 0;
            while (ch != '\n') {
                ssize_t r = recv(c, &ch, 1, 0);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    die("recv");
                sum += (unsigned char)ch;
                n++;
            }
            char msg[64];
            int m = snprintf(msg, sizeof msg, "took %ld %lu\n", n, sum);
            send_all(c, msg, (size_t)m);
            close(c);
            printf("took %ld %lu\n", n, sum);
        }
        fflush(stdout);
    }
    return 0;
}
