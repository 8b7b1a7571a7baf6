/*
 * udpfwd: a bare UDP forwarder, the reference point of scripts/bench.sh.
 *
 * Datagrams arriving on the public address go unchanged to the upstream address from
 * a second socket; datagrams arriving on that socket go back to the last client seen.
 * recvmmsg/sendmmsg batches of 64, blocking poll(2), no parsing: the least a hop can
 * cost. Meant for one load generator at a time.
 *
 *   udpfwd LISTEN_IP:PORT UPSTREAM_IP:PORT [SECONDS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sipedge/config_addr.h"

#define BATCH 64
#define DGRAM 65536

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* "ip:port" (IPv4) into *out, through the config parser every sipedge address uses. */
static int parse_addr(const char *s, struct sockaddr_in *out)
{
    struct config_addr a;
    if (config_addr_parse(s, &a) < 0 || a.ss.ss_family != AF_INET)
        return -1;
    memcpy(out, &a.ss, sizeof(*out));
    return 0;
}

static int udp_socket(const struct sockaddr_in *bind_to)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int size = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (bind_to && bind(fd, (const struct sockaddr *)bind_to, sizeof(*bind_to)) < 0) {
        perror("udpfwd: bind");
        exit(1);
    }
    return fd;
}

static char g_bufs[BATCH][DGRAM];

/* Moves one batch from `from` to `to`; dst NULL means "back to the last client". */
static int pump(int from, int to, const struct sockaddr_in *dst, struct sockaddr_in *last)
{
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in srcs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = g_bufs[i];
        iov[i].iov_len = DGRAM;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &srcs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(srcs[i]);
    }
    int n = recvmmsg(from, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return n;
    for (int i = 0; i < n; i++) {
        iov[i].iov_len = msgs[i].msg_len;
        if (dst) {
            *last = srcs[i];
            msgs[i].msg_hdr.msg_name = (void *)dst;
        } else {
            msgs[i].msg_hdr.msg_name = last;
        }
        msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    int sent = 0;
    while (sent < n) {
        int k = sendmmsg(to, msgs + sent, (unsigned)(n - sent), 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        sent += k;
    }
    return n;
}

int main(int argc, char **argv)
{
    struct sockaddr_in listen_addr, upstream, last_client;
    if (argc < 3 || parse_addr(argv[1], &listen_addr) < 0 || parse_addr(argv[2], &upstream) < 0) {
        fprintf(stderr, "usage: udpfwd LISTEN_IP:PORT UPSTREAM_IP:PORT [SECONDS]\n");
        return 2;
    }
    int seconds = argc > 3 ? atoi(argv[3]) : 0;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int pub = udp_socket(&listen_addr);
    int core = udp_socket(NULL);
    memset(&last_client, 0, sizeof(last_client));
    time_t end = seconds > 0 ? time(NULL) + seconds : 0;
    fprintf(stderr, "udpfwd: ready %s -> %s\n", argv[1], argv[2]);
    struct pollfd pfd[2] = {{.fd = pub, .events = POLLIN}, {.fd = core, .events = POLLIN}};
    while (!g_stop && (!end || time(NULL) < end)) {
        if (poll(pfd, 2, 500) <= 0)
            continue;
        if (pfd[0].revents & POLLIN)
            while (pump(pub, core, &upstream, &last_client) == BATCH)
                ;
        if ((pfd[1].revents & POLLIN) && last_client.sin_family)
            while (pump(core, pub, NULL, &last_client) == BATCH)
                ;
    }
    close(pub);
    close(core);
    return 0;
}
