/*
 * reuseport_steer: the classic BPF program that steers an SO_REUSEPORT group by source
 * address, and the same function in C so userspace knows which member owns an address.
 * It exists because the kernel's default spreads by the 4-tuple hash, which would split
 * one source's ports across workers and make their per-source state inexact.
 *
 * For a reuseport program the kernel has pulled the transport header (the data starts
 * after the UDP header, as the unit test checks, or the TCP header), so the IP header is
 * reached through the SKF_NET_OFF ancillary base: the version nibble at +0, the IPv4
 * source at +12, the IPv6 source at +8..+23. The key is the IPv4 address, or for IPv6
 * the XOR of the /64 prefix's two words (the guard keys IPv6 by prefix, default /64).
 * The mix is a multiply by the 32-bit golden ratio and an xor-shift, so consecutive
 * addresses spread, then mod n.
 */
#include "reuseport_steer.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#define STEER_MUL 0x9E3779B1u

static uint32_t steer_mix(uint32_t key, unsigned n)
{
    uint32_t a = key * STEER_MUL;
    a ^= a >> 16;
    return a % n;
}

static uint32_t be32_at(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

unsigned reuseport_steer_index(const struct sockaddr *src, unsigned n_sockets)
{
    if (n_sockets == 0 || !src)
        return 0;
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)src;
        return steer_mix(be32_at((const unsigned char *)&in->sin_addr), n_sockets);
    }
    if (src->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)src;
        const unsigned char *b = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return steer_mix(be32_at(b + 12), n_sockets); /* the kernel sees IPv4 */
        return steer_mix(be32_at(b) ^ be32_at(b + 4), n_sockets);
    }
    return 0;
}

int reuseport_steer_attach(int fd, unsigned n_sockets)
{
    if (n_sockets == 0)
        return -EINVAL;
    struct sock_filter code[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF + 0),
        /* 1 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
        /* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0), /* IPv6: to 5 */
                                                              /* IPv4: the source address. */
        /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JA, 4, 0, 0), /* to 9 */
        /* IPv6: the two words of the source's /64 prefix, folded. */
        /* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 8),
        /* 6 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
        /* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12),
        /* 8 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* The mix of steer_mix. */
        /* 9 */ BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, STEER_MUL),
        /* 10 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
        /* 11 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
        /* 12 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 13 */ BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n_sockets),
        /* 14 */ BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
        return -errno;
    return 0;
}
