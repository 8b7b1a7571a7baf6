/* reuseport_steer on real loopback sockets: the kernel numbers a reuseport group in bind
 * order (and renumbers on close), a program attached to any member steers the whole group,
 * the program runs with the UDP header already pulled, and the steering program sends every
 * datagram (IPv4, IPv6 by /64, IPv4-mapped on a dual-stack socket) and every TCP connection
 * from one source address to the member reuseport_steer_index predicts, spreading 32
 * addresses over every member for N = 2, 3 and 4. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport/reuseport_steer.h"

#define MAX_N 4
#define N_ADDRS 32
#define PORTS_PER_ADDR 3

typedef union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_storage ss;
} any_addr;

static socklen_t addr_len(const any_addr *a)
{
    return a->sa.sa_family == AF_INET ? sizeof(a->in) : sizeof(a->in6);
}

static any_addr v4(const char *ip, uint16_t port)
{
    any_addr a;
    memset(&a, 0, sizeof(a));
    a.in.sin_family = AF_INET;
    a.in.sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &a.in.sin_addr), 1);
    return a;
}

static any_addr v6(const char *ip, uint16_t port)
{
    any_addr a;
    memset(&a, 0, sizeof(a));
    a.in6.sin6_family = AF_INET6;
    a.in6.sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &a.in6.sin6_addr), 1);
    return a;
}

static void set_port(any_addr *a, uint16_t port)
{
    if (a->sa.sa_family == AF_INET)
        a->in.sin_port = htons(port);
    else
        a->in6.sin6_port = htons(port);
}

static uint16_t get_port(int fd)
{
    any_addr a;
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, &a.sa, &len), 0);
    return ntohs(a.sa.sa_family == AF_INET ? a.in.sin_port : a.in6.sin6_port);
}

/* n sockets of one reuseport group on *at (its port is filled in): the first binds to port
 * 0, the others to the port it got. Returns the port. */
static uint16_t open_group(int type, any_addr *at, unsigned n, int *fds)
{
    set_port(at, 0);
    for (unsigned i = 0; i < n; i++) {
        fds[i] = socket(at->sa.sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        int one = 1, zero = 0;
        assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
        if (at->sa.sa_family == AF_INET6) {
            int v6only = IN6_IS_ADDR_V4MAPPED(&at->in6.sin6_addr) ? 0 : 1;
            assert_int_equal(
                setsockopt(fds[i], IPPROTO_IPV6, IPV6_V6ONLY, v6only ? &one : &zero, sizeof(int)),
                0);
        }
        assert_int_equal(bind(fds[i], &at->sa, addr_len(at)), 0);
        if (i == 0)
            set_port(at, get_port(fds[0]));
        if (type == SOCK_STREAM)
            assert_int_equal(listen(fds[i], 128), 0);
    }
    return get_port(fds[0]);
}

static void close_all(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Send one datagram from src (port 0: any) to dst. Returns false when src cannot be bound. */
static bool send_from(const any_addr *src, const any_addr *dst, const void *msg, size_t len)
{
    int fd = socket(src->sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    if (src->sa.sa_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
    if (bind(fd, &src->sa, addr_len(src)) < 0) {
        close(fd);
        return false;
    }
    ssize_t w = sendto(fd, msg, len, 0, &dst->sa, addr_len(dst));
    close(fd);
    return w == (ssize_t)len;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receive up to want datagrams over the n sockets within a second. For each one, *on_sock is
 * the socket index, *from its source and buf its payload (at least 1 byte). */
struct rx {
    unsigned sock;
    any_addr from;
    unsigned char byte0;
};

static unsigned recv_all(const int *fds, unsigned n, struct rx *out, unsigned want)
{
    unsigned got = 0;
    long long deadline = now_ms() + 1000;
    while (got < want && now_ms() < deadline) {
        struct pollfd p[MAX_N];
        for (unsigned i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (poll(p, n, 100) <= 0)
            continue;
        for (unsigned i = 0; i < n && got < want; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            for (;;) {
                unsigned char buf[64];
                socklen_t len = sizeof(out[got].from);
                ssize_t r = recvfrom(fds[i], buf, sizeof(buf), 0, &out[got].from.sa, &len);
                if (r < 0)
                    break;
                out[got].sock = i;
                out[got].byte0 = r > 0 ? buf[0] : 0;
                if (++got == want)
                    break;
            }
        }
    }
    return got;
}

static void attach_prog(int fd, struct sock_filter *code, unsigned short len)
{
    struct sock_fprog prog = {.len = len, .filter = code};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)), 0);
}

/* A program returning a constant k, attached to the last member, sends everything to the
 * k-th socket bound: the group is numbered in bind order and one attach serves the group.
 * After closing member 0, index 0 is the former last member (the kernel moves it there). */
static void test_group_numbering(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= MAX_N; n++) {
        int fds[MAX_N];
        any_addr at = v4("127.0.0.1", 0);
        open_group(SOCK_DGRAM, &at, n, fds);
        any_addr src = v4("127.0.0.2", 0);
        for (unsigned k = 0; k < n; k++) {
            struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, k)};
            attach_prog(fds[n - 1], code, 1);
            for (unsigned j = 0; j < 4; j++)
                assert_true(send_from(&src, &at, "x", 1));
            struct rx rx[4];
            assert_int_equal(recv_all(fds, n, rx, 4), 4);
            for (unsigned j = 0; j < 4; j++)
                assert_int_equal(rx[j].sock, k);
        }
        /* Renumbering on close. */
        struct sock_filter code0[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
        attach_prog(fds[1], code0, 1);
        close(fds[0]);
        fds[0] = -1;
        assert_true(send_from(&src, &at, "x", 1));
        struct rx rx;
        /* Poll the survivors only: fds[1..n-1]. */
        assert_int_equal(recv_all(fds + 1, n - 1, &rx, 1), 1);
        assert_int_equal(rx.sock + 1, n - 1);
        close_all(fds + 1, n - 1);
    }
}

/* BPF_ABS offset 0 is the UDP payload (the UDP header has been pulled), while SKF_NET_OFF
 * + 9 is the IPv4 protocol byte (17). */
static void test_offsets(void **state)
{
    (void)state;
    int fds[3];
    any_addr at = v4("127.0.0.1", 0);
    open_group(SOCK_DGRAM, &at, 3, fds);
    any_addr src = v4("127.0.0.2", 0);
    struct sock_filter payload[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    attach_prog(fds[0], payload, 2);
    for (unsigned char b = 0; b < 3; b++) {
        assert_true(send_from(&src, &at, &b, 1));
        struct rx rx;
        assert_int_equal(recv_all(fds, 3, &rx, 1), 1);
        assert_int_equal(rx.sock, b);
    }
    /* Protocol 17 at SKF_NET_OFF + 9: return 2 when it is UDP, else 1. */
    struct sock_filter proto[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF + 9),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 2),
        BPF_STMT(BPF_RET | BPF_K, 1),
    };
    attach_prog(fds[0], proto, 4);
    assert_true(send_from(&src, &at, "\0", 1));
    struct rx rx;
    assert_int_equal(recv_all(fds, 3, &rx, 1), 1);
    assert_int_equal(rx.sock, 2);
    close_all(fds, 3);
}

/* Check the received datagrams: one socket per source key, the predicted one, all used. */
static void check_steering(const struct rx *rx, unsigned got, unsigned n, unsigned n_keys,
                           unsigned (*key_of)(const any_addr *))
{
    int owner[N_ADDRS];
    unsigned per_sock[MAX_N] = {0};
    for (unsigned k = 0; k < n_keys; k++)
        owner[k] = -1;
    for (unsigned j = 0; j < got; j++) {
        unsigned k = key_of(&rx[j].from);
        assert_true(k < n_keys);
        if (owner[k] < 0)
            owner[k] = (int)rx[j].sock;
        assert_int_equal(owner[k], rx[j].sock);
        assert_int_equal(reuseport_steer_index(&rx[j].from.sa, n), rx[j].sock);
        per_sock[rx[j].sock]++;
    }
    printf("  n=%u:", n);
    for (unsigned i = 0; i < n; i++) {
        printf(" %u", per_sock[i]);
        assert_true(per_sock[i] > 0);
    }
    printf(" datagrams per socket\n");
}

static unsigned key_v4(const any_addr *a)
{
    uint32_t ip = ntohl(a->in.sin_addr.s_addr);
    return (ip & 0xff) - 2; /* 127.0.0.2 .. 127.0.0.33 */
}

static unsigned key_mapped(const any_addr *a)
{
    assert_int_equal(a->sa.sa_family, AF_INET6);
    assert_true(IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr));
    return a->in6.sin6_addr.s6_addr[15] - 2u;
}

static unsigned key_v6(const any_addr *a)
{
    assert_int_equal(a->sa.sa_family, AF_INET6);
    return a->in6.sin6_addr.s6_addr[7]; /* 2001:db8:0:k::h */
}

static void udp_v4_case(bool mapped)
{
    for (unsigned n = 2; n <= MAX_N; n++) {
        int fds[MAX_N];
        any_addr at = mapped ? v6("::ffff:127.0.0.1", 0) : v4("127.0.0.1", 0);
        open_group(SOCK_DGRAM, &at, n, fds);
        assert_int_equal(reuseport_steer_attach(fds[n / 2], n), 0);
        any_addr dst = v4("127.0.0.1", get_port(fds[0]));
        for (unsigned a = 0; a < N_ADDRS; a++) {
            char ip[32];
            snprintf(ip, sizeof(ip), "127.0.0.%u", a + 2);
            any_addr src = v4(ip, 0);
            for (unsigned p = 0; p < PORTS_PER_ADDR; p++)
                assert_true(send_from(&src, &dst, "REGISTER", 8));
        }
        struct rx rx[N_ADDRS * PORTS_PER_ADDR];
        unsigned got = recv_all(fds, n, rx, N_ADDRS * PORTS_PER_ADDR);
        assert_int_equal(got, N_ADDRS * PORTS_PER_ADDR);
        check_steering(rx, got, n, N_ADDRS, mapped ? key_mapped : key_v4);
        close_all(fds, n);
    }
}

static void test_udp_v4(void **state)
{
    (void)state;
    udp_v4_case(false);
}

/* IPv4 datagrams to a dual-stack IPv6 socket arrive as IPv4 and are steered as such. */
static void test_udp_v4_mapped(void **state)
{
    (void)state;
    udp_v4_case(true);
}

/* IPv6 to ::1 from 32 /64s (2001:db8:0:k::/64, bound with IPV6_FREEBIND; the traffic never
 * leaves lo), three hosts of each /64: one /64, one socket. Skipped when ::1 is missing. */
static void test_udp_v6(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= MAX_N; n++) {
        int fds[MAX_N];
        any_addr at = v6("::1", 0);
        int probe = socket(AF_INET6, SOCK_DGRAM, 0);
        bool has_v6 = probe >= 0 && bind(probe, &at.sa, addr_len(&at)) == 0;
        if (probe >= 0)
            close(probe);
        if (!has_v6) {
            skip();
            return;
        }
        open_group(SOCK_DGRAM, &at, n, fds);
        assert_int_equal(reuseport_steer_attach(fds[0], n), 0);
        unsigned sent = 0;
        for (unsigned k = 0; k < N_ADDRS; k++) {
            for (unsigned h = 1; h <= PORTS_PER_ADDR; h++) {
                char ip[64];
                snprintf(ip, sizeof(ip), "2001:db8:0:%x::%x", k, h);
                any_addr src = v6(ip, 0);
                if (!send_from(&src, &at, "REGISTER", 8)) {
                    close_all(fds, n);
                    skip();
                    return;
                }
                sent++;
            }
        }
        struct rx rx[N_ADDRS * PORTS_PER_ADDR];
        unsigned got = recv_all(fds, n, rx, sent);
        assert_int_equal(got, sent);
        check_steering(rx, got, n, N_ADDRS, key_v6);
        close_all(fds, n);
    }
}

/* The C function alone for IPv6: the /64 decides, the interface id does not. */
static void test_index_v6_prefix(void **state)
{
    (void)state;
    any_addr a = v6("2001:db8:1:2:aaaa::1", 5060), b = v6("2001:db8:1:2:ffff::9", 1);
    unsigned seen[MAX_N] = {0};
    for (unsigned n = 1; n <= MAX_N; n++)
        assert_int_equal(reuseport_steer_index(&a.sa, n), reuseport_steer_index(&b.sa, n));
    for (unsigned k = 0; k < 64; k++) {
        char ip[64];
        snprintf(ip, sizeof(ip), "2001:db8:%x::1", k);
        any_addr c = v6(ip, 0);
        unsigned i = reuseport_steer_index(&c.sa, MAX_N);
        assert_true(i < MAX_N);
        seen[i]++;
    }
    for (unsigned i = 0; i < MAX_N; i++)
        assert_true(seen[i] > 0);
    /* A mapped address is its IPv4 address. */
    any_addr m = v6("::ffff:10.1.2.3", 0), p = v4("10.1.2.3", 9);
    for (unsigned n = 1; n <= MAX_N; n++)
        assert_int_equal(reuseport_steer_index(&m.sa, n), reuseport_steer_index(&p.sa, n));
    assert_int_equal(reuseport_steer_attach(-1, 0), -EINVAL);
    assert_int_equal(reuseport_steer_attach(-1, 2), -EBADF);
}

/* TCP: N listeners, two connections from each of 32 addresses; each accepted on the
 * listener reuseport_steer_index predicts for its peer. */
static void test_tcp_v4(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= MAX_N; n++) {
        int lfds[MAX_N];
        any_addr at = v4("127.0.0.1", 0);
        open_group(SOCK_STREAM, &at, n, lfds);
        assert_int_equal(reuseport_steer_attach(lfds[n - 1], n), 0);
        int cfds[N_ADDRS * 2];
        unsigned nc = 0;
        for (unsigned a = 0; a < N_ADDRS; a++) {
            char ip[32];
            snprintf(ip, sizeof(ip), "127.0.0.%u", a + 2);
            for (unsigned c = 0; c < 2; c++) {
                any_addr src = v4(ip, 0);
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                assert_true(fd >= 0);
                assert_int_equal(bind(fd, &src.sa, addr_len(&src)), 0);
                assert_int_equal(connect(fd, &at.sa, addr_len(&at)), 0);
                cfds[nc++] = fd;
            }
        }
        int owner[N_ADDRS];
        unsigned per_sock[MAX_N] = {0}, accepted = 0;
        for (unsigned a = 0; a < N_ADDRS; a++)
            owner[a] = -1;
        long long deadline = now_ms() + 1000;
        while (accepted < nc && now_ms() < deadline) {
            for (unsigned i = 0; i < n; i++) {
                any_addr peer;
                socklen_t len = sizeof(peer);
                int fd = accept4(lfds[i], &peer.sa, &len, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                close(fd);
                unsigned k = key_v4(&peer);
                assert_true(k < N_ADDRS);
                if (owner[k] < 0)
                    owner[k] = (int)i;
                assert_int_equal(owner[k], i);
                assert_int_equal(reuseport_steer_index(&peer.sa, n), i);
                per_sock[i]++;
                accepted++;
            }
            if (accepted < nc) {
                struct pollfd p[MAX_N];
                for (unsigned i = 0; i < n; i++)
                    p[i] = (struct pollfd){.fd = lfds[i], .events = POLLIN};
                (void)poll(p, n, 100);
            }
        }
        assert_int_equal(accepted, nc);
        printf("  tcp n=%u:", n);
        for (unsigned i = 0; i < n; i++) {
            printf(" %u", per_sock[i]);
            assert_true(per_sock[i] > 0);
        }
        printf(" connections per listener\n");
        close_all(cfds, nc);
        close_all(lfds, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_numbering), cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_udp_v4),          cmocka_unit_test(test_udp_v4_mapped),
        cmocka_unit_test(test_udp_v6),          cmocka_unit_test(test_index_v6_prefix),
        cmocka_unit_test(test_tcp_v4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
