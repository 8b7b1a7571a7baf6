/*
 * edge_rec: a recording tx_out for the edge unit tests, and the helpers that read what
 * it recorded. Every datagram (socket, destination) and every connection message
 * (connection id) is kept in sent[0..n_sent); assertions parse them with sip_msg_parse.
 *
 * Header-only, one copy per test program: include it after <cmocka.h>. Functions a test
 * may not use are static inline, so that leaving them out costs no warning.
 */
#ifndef SIPEDGE_TESTS_EDGE_REC_H
#define SIPEDGE_TESTS_EDGE_REC_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "sipedge/edge.h"
#include "sipedge/sip_msg.h"
#include "sipedge/slice.h"

#define TX_CAP 65535
#define MAX_SENT 16
#define MAX_HDRS 128
#define SENT_CONN 0xfe /* sock of a message sent over a connection flow */

struct sent {
    uint8_t sock; /* listener index, or SENT_CONN */
    struct sockaddr_storage dst;
    uint64_t conn; /* SENT_CONN only */
    bool is_core_stream; /* to dst over a core stream connection (tx_dest_core_stream) */
    size_t len;
    char buf[TX_CAP + 1];
};

static char tx_buf[TX_CAP];
static struct sent sent[MAX_SENT];
static size_t n_sent;
static size_t n_overflow; /* messages that did not fit in sent[]: a test asserts 0 */

static inline void sent_reset(void)
{
    n_sent = 0;
    n_overflow = 0;
}

static inline struct sent *sent_record(const char *buf, size_t len)
{
    if (n_sent >= MAX_SENT || len > TX_CAP) {
        n_overflow++;
        return NULL;
    }
    struct sent *s = &sent[n_sent++];
    memset(s, 0, offsetof(struct sent, buf));
    memcpy(s->buf, buf, len);
    s->buf[len] = '\0';
    s->len = len;
    return s;
}

static inline char *out_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)ctx;
    (void)d;
    memset(tx_buf, '#', sizeof(tx_buf)); /* nothing of an earlier message may leak through */
    *cap = sizeof(tx_buf);
    return tx_buf;
}

static inline int out_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    (void)ctx;
    if (len == 0)
        return 0; /* nothing sent */
    struct sent *s = sent_record(tx_buf, len);
    if (!s)
        return -1;
    s->is_core_stream = d->conn == TX_CONN_CORE;
    if (d->conn && !s->is_core_stream) {
        s->sock = SENT_CONN;
        s->conn = d->conn;
        return 0;
    }
    s->sock = d->sock;
    memcpy(&s->dst, d->addr,
           d->addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    return 0;
}

static inline struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
        fail_msg("bad address %s", ip);
    return a;
}

#define SA(x) ((const struct sockaddr *)&(x))

static inline bool addr_eq(const struct sockaddr_storage *ss, const struct sockaddr *b)
{
    const struct sockaddr *a = (const struct sockaddr *)ss;
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* Whether sent[i] is a datagram to dst. */
static inline bool sent_to(size_t i, const struct sockaddr *dst)
{
    return i < n_sent && sent[i].sock != SENT_CONN && addr_eq(&sent[i].dst, dst);
}

struct parsed {
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
};

static inline void parse_sent(size_t i, struct parsed *p)
{
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = MAX_HDRS};
    struct sip_err err;
    assert_true(i < n_sent);
    if (sip_msg_parse(&p->m, sent[i].buf, sent[i].len, p->hdrs, &lim, &err) != 0)
        fail_msg("message %zu does not parse (%s):\n%s", i, err.reason ? err.reason : "?",
                 sent[i].buf);
}

static inline bool slice_is(struct slice s, const char *str)
{
    return s.len == strlen(str) && memcmp(s.p, str, s.len) == 0;
}

#define assert_slice_equal(s, str)                                                                 \
    do {                                                                                           \
        struct slice s_ = (s);                                                                     \
        if (!slice_is(s_, (str)))                                                                  \
            fail_msg("'%.*s' != '%s'", SLICE_FMT(s_), (str));                                      \
    } while (0)

#endif
