/* transport_stream over loopback: a real loop on the test's thread, a real client (plain
 * sockets, OpenSSL) on a second thread. Framing across writes, CRLF keepalives, answers
 * through the output contract, the fixed 400 before a close, the per-IP cap, TLS with a
 * client certificate, and on_close once per connection. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/flow_table.h"
#include "sipedge/tls_server.h"
#include "sipedge/transport_stream.h"
#include "transport/stream_internal.h"

static const char REG[] = "REGISTER sip:example.com SIP/2.0\r\n"
                          "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
                          "Call-ID: a@b\r\n"
                          "CSeq: 1 REGISTER\r\n"
                          "Content-Length: 4\r\n"
                          "\r\n"
                          "body";
static const char OK[] = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

/* ---- the server side: recording callbacks on the loop thread ------------------------ */

enum rec_mode {
    REC_REPLY = 0,   /* answer every message with a 200 */
    REC_REPLY_CLOSE, /* answer, then transport_stream_close_conn */
    REC_FLOOD,       /* answer with large messages until the queue cap refuses one */
    REC_BULK,        /* answer with BULK_N messages of BULK_LEN bytes, each its own letter */
    REC_REFUSE,      /* on_open refuses (flow table full) */
};

struct rec {
    struct transport_stream *t;
    enum rec_mode mode;
    int flood_rc;
    unsigned n_open, n_message, n_alive, n_close;
    unsigned n_bad_message;
    uint8_t transport;
    char peer_id[256];
    bool has_peer_id;
    uint64_t last_conn;
    bool is_ref_wrong;
};

#define BULK_N 200 /* 12 MB: more than loopback's socket buffers hold */
#define BULK_LEN 60000

static int on_open(void *ctx, uint64_t conn, uint8_t transport, uint8_t listener,
                   const struct sockaddr *remote, const char *peer_id, uint64_t *ref)
{
    struct rec *r = ctx;
    (void)listener;
    (void)remote;
    r->n_open++;
    r->transport = transport;
    r->last_conn = conn;
    if (peer_id) {
        r->has_peer_id = true;
        snprintf(r->peer_id, sizeof(r->peer_id), "%s", peer_id);
    }
    *ref = conn ^ 0x5a5a;
    return r->mode == REC_REFUSE ? -ENOSPC : 0;
}

static void on_message(void *ctx, uint64_t conn, uint64_t ref, const char *buf, size_t len)
{
    struct rec *r = ctx;
    r->n_message++;
    if (ref != (conn ^ 0x5a5a))
        r->is_ref_wrong = true;
    if (len != strlen(REG) || memcmp(buf, REG, len) != 0)
        r->n_bad_message++;
    size_t cap;
    struct tx_dest d = tx_dest_conn(conn);
    if (r->mode == REC_BULK) {
        for (int i = 0; i < BULK_N; i++) {
            char *out = transport_stream_tx_reserve(r->t, &d, &cap);
            if (!out) {
                r->flood_rc = -ENOENT;
                return;
            }
            memset(out, 'a' + i % 26, BULK_LEN);
            int rc = transport_stream_tx_commit(r->t, &d, BULK_LEN);
            if (rc < 0) {
                r->flood_rc = rc;
                return;
            }
        }
        return;
    }
    if (r->mode == REC_FLOOD) {
        /* The client reads nothing: the kernel's buffers fill, then the queue. */
        for (int i = 0; i < 1000; i++) {
            char *out = transport_stream_tx_reserve(r->t, &d, &cap);
            if (!out) {
                r->flood_rc = -ENOENT;
                return;
            }
            memset(out, 'x', 60000);
            int rc = transport_stream_tx_commit(r->t, &d, 60000);
            if (rc < 0) {
                r->flood_rc = rc;
                return;
            }
        }
        return;
    }
    char *out = transport_stream_tx_reserve(r->t, &d, &cap);
    if (out && cap >= sizeof(OK)) {
        memcpy(out, OK, strlen(OK));
        transport_stream_tx_commit(r->t, &d, strlen(OK));
    }
    if (r->mode == REC_REPLY_CLOSE)
        transport_stream_close_conn(r->t, conn);
}

static void on_alive(void *ctx, uint64_t conn, uint64_t ref)
{
    struct rec *r = ctx;
    (void)conn;
    (void)ref;
    r->n_alive++;
}

static void on_close(void *ctx, uint64_t conn, uint64_t ref)
{
    struct rec *r = ctx;
    if (ref != (conn ^ 0x5a5a))
        r->is_ref_wrong = true;
    r->n_close++;
}

static const struct transport_conn_cbs cbs = {on_open, on_message, on_alive, on_close};

/* ---- the client side: blocking sockets on a thread ---------------------------------- */

struct client {
    uint16_t port;
    SSL_CTX *ssl_ctx; /* TLS cases */
    char fail[256];   /* first failure, empty when fine */
    bool is_done;
    uv_async_t *done;
    void (*run)(struct client *cl);
};

#define CLIENT_FAIL(cl, ...)                                                                       \
    do {                                                                                           \
        if (!(cl)->fail[0])                                                                        \
            snprintf((cl)->fail, sizeof((cl)->fail), __VA_ARGS__);                                 \
    } while (0)

static int client_connect(struct client *cl)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(cl->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        CLIENT_FAIL(cl, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(struct client *cl, int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            CLIENT_FAIL(cl, "send: %s", strerror(errno));
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Reads exactly want bytes and compares them with expect. */
static void expect_read(struct client *cl, int fd, const char *expect, size_t want)
{
    char buf[4096];
    size_t got = 0;
    while (got < want) {
        ssize_t n = recv(fd, buf + got, want - got, 0);
        if (n <= 0) {
            CLIENT_FAIL(cl, "read after %zu of %zu bytes: %s", got, want,
                        n == 0 ? "EOF" : strerror(errno));
            return;
        }
        got += (size_t)n;
    }
    if (memcmp(buf, expect, want) != 0)
        CLIENT_FAIL(cl, "read \"%.*s\"", (int)want, buf);
}

/* Expects EOF (or a reset) within the receive timeout, with nothing before it. */
static void expect_eof(struct client *cl, int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    if (n > 0)
        CLIENT_FAIL(cl, "data where EOF was expected");
    else if (n < 0 && errno != ECONNRESET)
        CLIENT_FAIL(cl, "no EOF: %s", strerror(errno));
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    cl->run(cl);
    __atomic_store_n(&cl->is_done, true, __ATOMIC_RELEASE);
    uv_async_send(cl->done);
    return NULL;
}

/* ---- the harness -------------------------------------------------------------------- */

struct harness {
    uv_loop_t loop;
    uv_async_t done;
    uv_timer_t check;
    uv_timer_t deadline;
    struct rec rec;
    struct client *cl;
    struct transport_stream_stats st; /* at the end, before the close */
    char stats[4096], stats_sum[4096];
    unsigned want_closes;
    bool is_closed;
    bool is_timed_out;
};

static void on_transport_closed(void *ctx)
{
    struct harness *h = ctx;
    h->is_closed = true;
}

static void harness_stop(struct harness *h)
{
    uv_timer_stop(&h->check);
    uv_timer_stop(&h->deadline);
    uv_close((uv_handle_t *)&h->done, NULL);
    uv_close((uv_handle_t *)&h->check, NULL);
    uv_close((uv_handle_t *)&h->deadline, NULL);
    h->st = *transport_stream_stats(h->rec.t);
    transport_stream_stats_format(h->rec.t, h->stats, sizeof(h->stats));
    const struct transport_stream *two[2] = {h->rec.t, h->rec.t};
    transport_stream_stats_format_sum(two, 2, h->stats_sum, sizeof(h->stats_sum));
    transport_stream_close(h->rec.t, on_transport_closed, h);
}

static void on_check(uv_timer_t *t)
{
    struct harness *h = t->data;
    if (__atomic_load_n(&h->cl->is_done, __ATOMIC_ACQUIRE) && h->rec.n_close >= h->want_closes)
        harness_stop(h);
}

static void on_deadline(uv_timer_t *t)
{
    struct harness *h = t->data;
    h->is_timed_out = true;
    harness_stop(h);
}

static void on_done(uv_async_t *a)
{
    (void)a;
}

static void set_addr(struct config_addr *a)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    memset(a, 0, sizeof(*a));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->len = sizeof(*sin);
    snprintf(a->text, sizeof(a->text), "127.0.0.1:0");
}

/* Runs one case: the transport on cfg/pol, the client on its thread, until the client
 * is done and want_closes connections have closed (or 10 s). */
static void harness_run_mode(struct harness *h, const struct config *cfg, const struct policy *pol,
                             struct tls_server *tls, struct client *cl, unsigned want_closes,
                             enum rec_mode mode)
{
    memset(&h->rec, 0, sizeof(h->rec));
    h->rec.mode = mode;
    h->cl = cl;
    h->want_closes = want_closes;
    h->is_closed = false;
    h->is_timed_out = false;
    assert_int_equal(uv_loop_init(&h->loop), 0);
    struct transport_stream_opts o = {.loop = &h->loop, .cfg = cfg, .policy = pol, .tls = tls};
    assert_int_equal(transport_stream_new(&h->rec.t, &o, &cbs, &h->rec), 0);
    struct sockaddr_storage ss;
    assert_int_equal(transport_stream_local_addr(h->rec.t, 0, &ss), 0);
    cl->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);

    uv_async_init(&h->loop, &h->done, on_done);
    cl->done = &h->done;
    uv_timer_init(&h->loop, &h->check);
    uv_timer_init(&h->loop, &h->deadline);
    h->check.data = h;
    h->deadline.data = h;
    uv_timer_start(&h->check, on_check, 10, 10);
    uv_timer_start(&h->deadline, on_deadline, 10000, 0);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, cl), 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_true(h->is_closed);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    if (cl->fail[0])
        fail_msg("client: %s", cl->fail);
    assert_false(h->is_timed_out);
    assert_false(h->rec.is_ref_wrong);
}

static void harness_run(struct harness *h, const struct config *cfg, const struct policy *pol,
                        struct tls_server *tls, struct client *cl, unsigned want_closes)
{
    harness_run_mode(h, cfg, pol, tls, cl, want_closes, REC_REPLY);
}

static struct config cfg_tcp;
static struct policy pol;

static int setup(void **state)
{
    (void)state;
    memset(&cfg_tcp, 0, sizeof(cfg_tcp));
    set_addr(&cfg_tcp.listen_tcp[0]);
    cfg_tcp.n_listen_tcp = 1;
    policy_defaults(&pol);
    return 0;
}

/* ---- plain TCP ---------------------------------------------------------------------- */

static void client_tcp_basic(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    char two[1024];
    size_t n = strlen(REG);
    memcpy(two, REG, n);
    memcpy(two + n, REG, n);
    send_all(cl, fd, two, 2 * n); /* two messages in one write */
    char ok2[256];
    snprintf(ok2, sizeof(ok2), "%s%s", OK, OK);
    expect_read(cl, fd, ok2, strlen(ok2));
    send_all(cl, fd, REG, 20); /* one message in two writes */
    usleep(50 * 1000);
    send_all(cl, fd, REG + 20, n - 20);
    expect_read(cl, fd, OK, strlen(OK));
    send_all(cl, fd, "\r\n\r\n", 4); /* RFC 5626 ping: pong */
    expect_read(cl, fd, "\r\n", 2);
    close(fd);
}

static void test_transport_stream_tcp_messages_keepalive_and_close(void **state)
{
    (void)state;
    struct harness h;
    struct client cl = {.run = client_tcp_basic};
    harness_run(&h, &cfg_tcp, &pol, NULL, &cl, 1);
    assert_int_equal(h.rec.n_open, 1);
    assert_int_equal(h.rec.transport, FLOW_TCP);
    assert_true(h.rec.last_conn & TX_CONN_STREAM);
    assert_false(h.rec.has_peer_id);
    assert_int_equal(h.rec.n_message, 3);
    assert_int_equal(h.rec.n_bad_message, 0);
    assert_int_equal(h.rec.n_alive, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.rx_messages, 3);
    assert_int_equal(h.st.keepalive_rx, 1);
    assert_int_equal(h.st.keepalive_tx, 1);
    assert_int_equal(h.st.tx_messages, 3);
    assert_int_equal(h.st.close_by_peer, 1);
    assert_int_equal(h.st.conns_open, 0);
    assert_int_equal(h.st.rx_buffered_bytes, 0);
    assert_non_null(strstr(h.stats, "stream_accepted=1 "));
    assert_non_null(strstr(h.stats, " stream_rx_messages=3 "));
    assert_non_null(strstr(h.stats_sum, " stream_rx_messages=6 "));
    assert_non_null(strstr(h.stats_sum, " stream_keepalive_tx=2 "));
}

static void client_crlf(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    send_all(cl, fd, "\r\n", 2); /* a ping in two writes is still a ping */
    usleep(50 * 1000);
    send_all(cl, fd, "\r\n", 2);
    expect_read(cl, fd, "\r\n", 2);
    send_all(cl, fd, "\r\n", 2); /* a lone CRLF: no answer, no close */
    usleep(2100 * 1000);
    send_all(cl, fd, REG, strlen(REG));
    expect_read(cl, fd, OK, strlen(OK));
    close(fd);
}

static void test_transport_stream_split_ping_and_lone_crlf(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_message_timeout_s = 1;
    struct client cl = {.run = client_crlf};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_alive, 2);
    assert_int_equal(h.rec.n_message, 1);
    assert_int_equal(h.st.keepalive_rx, 1);
    assert_int_equal(h.st.keepalive_tx, 1);
    assert_int_equal(h.st.pongs_rx, 1);
    assert_int_equal(h.st.close_message_timeout, 0);
    assert_int_equal(h.st.close_by_peer, 1);
}

static void client_missing_cl(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    const char *m = "OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n";
    send_all(cl, fd, m, strlen(m));
    expect_read(cl, fd, STREAM_REPLY_400_NO_CL, strlen(STREAM_REPLY_400_NO_CL));
    expect_eof(cl, fd);
    close(fd);
}

static void test_transport_stream_missing_content_length_gets_400_then_eof(void **state)
{
    (void)state;
    struct harness h;
    struct client cl = {.run = client_missing_cl};
    harness_run(&h, &cfg_tcp, &pol, NULL, &cl, 1);
    assert_int_equal(h.rec.n_open, 1);
    assert_int_equal(h.rec.n_message, 0);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_no_content_length, 1);
}

static void client_per_ip_cap(struct client *cl)
{
    int a = client_connect(cl), b = client_connect(cl);
    if (a < 0 || b < 0)
        return;
    /* Both are admitted and served before the third arrives. */
    send_all(cl, a, REG, strlen(REG));
    expect_read(cl, a, OK, strlen(OK));
    send_all(cl, b, REG, strlen(REG));
    expect_read(cl, b, OK, strlen(OK));
    int c = client_connect(cl);
    if (c >= 0) {
        expect_eof(cl, c);
        close(c);
    }
    close(a);
    close(b);
}

static void test_transport_stream_per_ip_cap_closes_the_third(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_max_conns_per_ip = 2;
    p.stream_conns_per_ip_per_s = 100;
    struct client cl = {.run = client_per_ip_cap};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 2);
    assert_int_equal(h.rec.n_open, 2);
    assert_int_equal(h.rec.n_message, 2);
    assert_int_equal(h.rec.n_close, 2);
    assert_int_equal(h.st.refused_conns_per_ip, 1);
    assert_int_equal(h.st.accepted, 3);
}

static void client_slot_cap(struct client *cl)
{
    int a = client_connect(cl);
    if (a < 0)
        return;
    send_all(cl, a, REG, strlen(REG));
    expect_read(cl, a, OK, strlen(OK));
    int b = client_connect(cl);
    if (b >= 0) {
        expect_eof(cl, b);
        close(b);
    }
    close(a);
}

static void test_transport_stream_connection_slots_are_bounded(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.max_flows = 1;
    struct client cl = {.run = client_slot_cap};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_open, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.refused_conn_table_full, 1);
}

static void client_refused(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    expect_eof(cl, fd);
    close(fd);
}

static void test_transport_stream_owner_refusal_closes_without_on_close(void **state)
{
    (void)state;
    struct harness h;
    struct client cl = {.run = client_refused};
    harness_run_mode(&h, &cfg_tcp, &pol, NULL, &cl, 0, REC_REFUSE);
    assert_int_equal(h.rec.n_open, 1);
    assert_int_equal(h.rec.n_close, 0);
    assert_int_equal(h.st.refused_by_owner, 1);
    assert_int_equal(h.st.conns_open, 0);
}

static void client_first_message_timeout(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    /* Keepalives are answered but are no first message. */
    send_all(cl, fd, "\r\n\r\n", 4);
    expect_read(cl, fd, "\r\n", 2);
    expect_eof(cl, fd);
    close(fd);
}

static void client_reply_close(struct client *cl);

static void test_transport_stream_first_message_timeout(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_first_message_timeout_s = 1;
    struct client cl = {.run = client_first_message_timeout};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_alive, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_first_message_timeout, 1);
}

static void client_message_timeout(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    send_all(cl, fd, REG, strlen(REG));
    expect_read(cl, fd, OK, strlen(OK));
    send_all(cl, fd, REG, strlen(REG) - 1); /* one byte short, for good */
    expect_eof(cl, fd);
    close(fd);
}

static void test_transport_stream_message_timeout(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_message_timeout_s = 1;
    struct client cl = {.run = client_message_timeout};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_message, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_message_timeout, 1);
    assert_int_equal(h.st.rx_buffered_bytes, 0);
}

static void test_transport_stream_idle_timeout(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_idle_timeout_s = 1;
    struct client cl = {.run = client_reply_close};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_message, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_idle_timeout, 1);
}

static void client_too_big(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    static char big[5000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "OPTIONS sip:x SIP/2.0\r\nX: ", 26);
    send_all(cl, fd, big, 1000); /* buffered first, then over the cap */
    usleep(20 * 1000);
    send_all(cl, fd, big + 1000, sizeof(big) - 1000);
    expect_read(cl, fd, STREAM_REPLY_513, strlen(STREAM_REPLY_513));
    expect_eof(cl, fd);
    close(fd);
}

static void test_transport_stream_too_big_gets_513_then_eof(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_max_message_bytes = 4096;
    struct client cl = {.run = client_too_big};
    harness_run(&h, &cfg_tcp, &p, NULL, &cl, 1);
    assert_int_equal(h.rec.n_message, 0);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_too_big, 1);
    assert_true(h.st.rx_buffered_max <= 4097);
}

static void client_reply_close(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    send_all(cl, fd, REG, strlen(REG));
    expect_read(cl, fd, OK, strlen(OK));
    expect_eof(cl, fd);
    close(fd);
}

static void test_transport_stream_close_conn_sends_what_is_queued_first(void **state)
{
    (void)state;
    struct harness h;
    struct client cl = {.run = client_reply_close};
    harness_run_mode(&h, &cfg_tcp, &pol, NULL, &cl, 1, REC_REPLY_CLOSE);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_by_owner, 1);
}

static void client_flood(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    send_all(cl, fd, REG, strlen(REG));
    usleep(200 * 1000); /* read nothing meanwhile */
    char buf[65536];
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    close(fd);
}

static void test_transport_stream_slow_reader_is_closed(void **state)
{
    (void)state;
    struct harness h;
    struct policy p = pol;
    p.stream_out_queue_max_bytes = 65536;
    struct client cl = {.run = client_flood};
    harness_run_mode(&h, &cfg_tcp, &p, NULL, &cl, 1, REC_FLOOD);
    assert_int_equal(h.rec.flood_rc, -ENOBUFS);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.close_too_slow, 1);
    assert_int_equal(h.st.tx_queued_bytes, 0);
}

/* ---- TLS ---------------------------------------------------------------------------- */

static char tls_dir[64];
static char tls_cert[128], tls_key[128];

/* A self-signed EC certificate (CN=sipedge-test), which serves as the server's, as the
 * client's, and as the CA that verifies the client's. */
static void make_cert(void)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/sipedge-stream-XXXXXX");
    assert_non_null(mkdtemp(tls_dir));
    snprintf(tls_cert, sizeof(tls_cert), "%s/cert.pem", tls_dir);
    snprintf(tls_key, sizeof(tls_key), "%s/key.pem", tls_dir);
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    assert_non_null(pkey);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"sipedge-test", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
    FILE *f = fopen(tls_cert, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(tls_key, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

static void remove_cert(void)
{
    unlink(tls_cert);
    unlink(tls_key);
    rmdir(tls_dir);
}

static int ssl_read_exact(SSL *s, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        int n = SSL_read(s, buf + got, (int)(want - got));
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static void client_tls(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    SSL *s = SSL_new(cl->ssl_ctx);
    SSL_set_fd(s, fd);
    if (SSL_connect(s) != 1) {
        CLIENT_FAIL(cl, "SSL_connect failed");
        goto out;
    }
    char buf[256];
    /* One message in two records, then a ping. */
    SSL_write(s, REG, 30);
    SSL_write(s, REG + 30, (int)(strlen(REG) - 30));
    if (ssl_read_exact(s, buf, strlen(OK)) < 0 || memcmp(buf, OK, strlen(OK)) != 0) {
        CLIENT_FAIL(cl, "no 200 over TLS");
        goto out;
    }
    SSL_write(s, "\r\n\r\n", 4);
    if (ssl_read_exact(s, buf, 2) < 0 || memcmp(buf, "\r\n", 2) != 0)
        CLIENT_FAIL(cl, "no pong over TLS");
    SSL_shutdown(s);
out:
    SSL_free(s);
    close(fd);

    /* Without a client certificate the handshake fails (TLS 1.3: the client learns it
     * at its first read). */
    fd = client_connect(cl);
    if (fd < 0)
        return;
    SSL_CTX *bare = SSL_CTX_new(TLS_client_method());
    s = SSL_new(bare);
    SSL_set_fd(s, fd);
    if (SSL_connect(s) == 1 && SSL_read(s, buf, sizeof(buf)) > 0)
        CLIENT_FAIL(cl, "TLS without a client certificate was served");
    SSL_free(s);
    SSL_CTX_free(bare);
    close(fd);
}

static void client_tls_silent(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    expect_eof(cl, fd); /* no ClientHello: closed at the handshake deadline */
    close(fd);
}

static void test_transport_stream_tls_with_client_certificate(void **state)
{
    (void)state;
    make_cert();
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    set_addr(&cfg.listen_tls[0]);
    cfg.n_listen_tls = 1;
    snprintf(cfg.tls_cert, sizeof(cfg.tls_cert), "%s", tls_cert);
    snprintf(cfg.tls_key, sizeof(cfg.tls_key), "%s", tls_key);
    snprintf(cfg.tls_client_ca, sizeof(cfg.tls_client_ca), "%s", tls_cert);
    cfg.tls_require_client_cert = true;
    char err[256] = "";
    struct tls_server *tls = NULL;
    assert_int_equal(tls_server_new(&tls, &cfg, NULL, err, sizeof(err)), 0);
    /* A reload keeps the ticket keys. */
    struct tls_server *tls2 = NULL;
    assert_int_equal(tls_server_new(&tls2, &cfg, tls, err, sizeof(err)), 0);
    unsigned char k1[80], k2[80];
    assert_int_equal(SSL_CTX_get_tlsext_ticket_keys(tls_server_ctx(tls), k1, sizeof(k1)), 1);
    assert_int_equal(SSL_CTX_get_tlsext_ticket_keys(tls_server_ctx(tls2), k2, sizeof(k2)), 1);
    assert_memory_equal(k1, k2, sizeof(k1));
    tls_server_unref(tls2);

    struct client cl = {.run = client_tls};
    cl.ssl_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cl.ssl_ctx, SSL_VERIFY_NONE, NULL);
    assert_int_equal(SSL_CTX_use_certificate_file(cl.ssl_ctx, tls_cert, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(cl.ssl_ctx, tls_key, SSL_FILETYPE_PEM), 1);
    struct harness h;
    harness_run(&h, &cfg, &pol, tls, &cl, 1);
    SSL_CTX_free(cl.ssl_ctx);
    tls_server_unref(tls); /* the transport took and dropped its own reference */
    remove_cert();
    assert_int_equal(h.rec.n_open, 1);
    assert_int_equal(h.rec.transport, FLOW_TLS);
    assert_true(h.rec.has_peer_id);
    assert_string_equal(h.rec.peer_id, "/CN=sipedge-test");
    assert_int_equal(h.rec.n_message, 1);
    assert_int_equal(h.rec.n_bad_message, 0);
    assert_int_equal(h.rec.n_alive, 1);
    assert_int_equal(h.rec.n_close, 1);
    assert_int_equal(h.st.tls_handshakes_ok, 1);
    assert_int_equal(h.st.tls_handshake_errors, 1);
}

/* Reads BULK_N * BULK_LEN bytes slowly and checks every one: what the socket did not
 * take went through the queue, in order, TLS writes retried from the moved queue. */
static void client_bulk_check(struct client *cl, SSL *s, int fd)
{
    static char buf[16384];
    size_t total = (size_t)BULK_N * BULK_LEN, got = 0;
    usleep(200 * 1000);
    while (got < total) {
        size_t want = total - got < sizeof(buf) ? total - got : sizeof(buf);
        int n = s ? SSL_read(s, buf, (int)want) : (int)recv(fd, buf, want, 0);
        if (n <= 0) {
            CLIENT_FAIL(cl, "bulk: read failed after %zu bytes", got);
            return;
        }
        for (int i = 0; i < n; i++) {
            if (buf[i] != 'a' + (char)(((got + (size_t)i) / BULK_LEN) % 26)) {
                CLIENT_FAIL(cl, "bulk: wrong byte at %zu", got + (size_t)i);
                return;
            }
        }
        got += (size_t)n;
    }
}

static void client_bulk_tcp(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    send_all(cl, fd, REG, strlen(REG));
    client_bulk_check(cl, NULL, fd);
    close(fd);
}

static void client_bulk_tls(struct client *cl)
{
    int fd = client_connect(cl);
    if (fd < 0)
        return;
    SSL *s = SSL_new(cl->ssl_ctx);
    SSL_set_fd(s, fd);
    if (SSL_connect(s) != 1) {
        CLIENT_FAIL(cl, "SSL_connect failed");
    } else {
        SSL_write(s, REG, (int)strlen(REG));
        client_bulk_check(cl, s, fd);
    }
    SSL_free(s);
    close(fd);
}

static void test_transport_stream_queued_output_arrives_whole(void **state)
{
    (void)state;
    make_cert();
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    set_addr(&cfg.listen_tcp[0]);
    cfg.n_listen_tcp = 1;
    set_addr(&cfg.listen_tls[0]);
    cfg.n_listen_tls = 1;
    snprintf(cfg.tls_cert, sizeof(cfg.tls_cert), "%s", tls_cert);
    snprintf(cfg.tls_key, sizeof(cfg.tls_key), "%s", tls_key);
    char err[256];
    struct tls_server *tls = NULL;
    assert_int_equal(tls_server_new(&tls, &cfg, NULL, err, sizeof(err)), 0);
    struct policy p = pol;
    p.stream_out_queue_max_bytes = 32 * 1024 * 1024;

    struct harness h;
    struct client cl = {.run = client_bulk_tcp};
    harness_run_mode(&h, &cfg, &p, tls, &cl, 1, REC_BULK);
    assert_int_equal(h.rec.flood_rc, 0);
    assert_true(h.st.tx_queued > 0);
    assert_int_equal(h.st.tx_messages, BULK_N);

    /* TLS alone: the harness connects to listener 0. */
    struct client cl2 = {.run = client_bulk_tls};
    cl2.ssl_ctx = SSL_CTX_new(TLS_client_method());
    struct config cfg_tls = cfg;
    cfg_tls.n_listen_tcp = 0;
    harness_run_mode(&h, &cfg_tls, &p, tls, &cl2, 1, REC_BULK);
    SSL_CTX_free(cl2.ssl_ctx);
    tls_server_unref(tls);
    remove_cert();
    assert_int_equal(h.rec.flood_rc, 0);
    assert_true(h.st.tx_queued > 0);
    assert_int_equal(h.st.tx_messages, BULK_N);
}

static void test_transport_stream_tls_handshake_timeout(void **state)
{
    (void)state;
    make_cert();
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    set_addr(&cfg.listen_tls[0]);
    cfg.n_listen_tls = 1;
    snprintf(cfg.tls_cert, sizeof(cfg.tls_cert), "%s", tls_cert);
    snprintf(cfg.tls_key, sizeof(cfg.tls_key), "%s", tls_key);
    char err[256];
    struct tls_server *tls = NULL;
    assert_int_equal(tls_server_new(&tls, &cfg, NULL, err, sizeof(err)), 0);
    struct policy p = pol;
    p.stream_tls_handshake_timeout_s = 1;
    struct client cl = {.run = client_tls_silent};
    struct harness h;
    harness_run(&h, &cfg, &p, tls, &cl, 0);
    tls_server_unref(tls);
    remove_cert();
    assert_int_equal(h.rec.n_open, 0);
    assert_int_equal(h.st.close_tls_handshake_timeout, 1);
}

static void test_tls_server_reports_a_missing_file(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.tls_cert, sizeof(cfg.tls_cert), "/nonexistent/cert.pem");
    snprintf(cfg.tls_key, sizeof(cfg.tls_key), "/nonexistent/key.pem");
    char err[256] = "";
    struct tls_server *tls = NULL;
    assert_int_equal(tls_server_new(&tls, &cfg, NULL, err, sizeof(err)), -EINVAL);
    assert_null(tls);
    assert_non_null(strstr(err, "tls.cert /nonexistent/cert.pem: "));
}

/*
 * Userspace memory of idle connections, measured with malloc's own count
 * (mallinfo2().uordblks) on the server. The client is a child process, so its
 * allocations are not counted: it opens IDLE_N plain connections, then IDLE_N TLS ones,
 * and keeps them idle until told to go.
 */
#define IDLE_N 64

struct idle {
    uv_loop_t loop;
    uv_timer_t check;
    struct rec rec;
    int ready_fd; /* child -> parent: one byte per phase done */
    int go_fd;    /* parent -> child: one byte per phase to start */
    unsigned phase;
    size_t base, per_tcp, per_tls;
    bool is_closed;
};

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static void idle_child(uint16_t tcp_port, uint16_t tls_port, int ready_fd, int go_fd)
{
    int fds[2 * IDLE_N];
    SSL *ssl[IDLE_N];
    char b;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    struct client cl = {.port = tcp_port};
    for (int i = 0; i < IDLE_N; i++)
        fds[i] = client_connect(&cl);
    if (write(ready_fd, "1", 1) != 1 || read(go_fd, &b, 1) != 1)
        _exit(1);
    cl.port = tls_port;
    for (int i = 0; i < IDLE_N; i++) {
        fds[IDLE_N + i] = client_connect(&cl);
        ssl[i] = SSL_new(ctx);
        SSL_set_fd(ssl[i], fds[IDLE_N + i]);
        if (SSL_connect(ssl[i]) != 1)
            _exit(2);
    }
    if (write(ready_fd, "2", 1) != 1 || read(go_fd, &b, 1) != 1)
        _exit(1);
    _exit(0);
}

static void on_idle_closed(void *ctx)
{
    ((struct idle *)ctx)->is_closed = true;
}

static void on_idle_check(uv_timer_t *h)
{
    struct idle *s = h->data;
    char b;
    if (s->phase == 3) {
        if (s->rec.n_close == 2 * IDLE_N) {
            uv_timer_stop(h);
            uv_close((uv_handle_t *)h, NULL);
            transport_stream_close(s->rec.t, on_idle_closed, s);
        }
        return;
    }
    if (read(s->ready_fd, &b, 1) != 1)
        return;
    /* Let the loop settle (TLS: session tickets written, buffers released). */
    unsigned want = s->phase == 0 ? IDLE_N : 2 * IDLE_N;
    for (int i = 0; i < 100 && s->rec.n_open < want; i++)
        uv_run(&s->loop, UV_RUN_NOWAIT);
    uv_run(&s->loop, UV_RUN_NOWAIT);
    size_t now = heap_used();
    if (s->phase == 0)
        s->per_tcp = (now - s->base) / IDLE_N;
    else
        s->per_tls = (now - s->base - s->per_tcp * IDLE_N) / IDLE_N;
    s->phase = s->phase == 0 ? 1 : 3;
    if (write(s->go_fd, "g", 1) != 1)
        s->phase = 3;
}

static void test_transport_stream_idle_connections_are_small(void **state)
{
    (void)state;
    make_cert();
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    set_addr(&cfg.listen_tcp[0]);
    cfg.n_listen_tcp = 1;
    set_addr(&cfg.listen_tls[0]);
    cfg.n_listen_tls = 1;
    snprintf(cfg.tls_cert, sizeof(cfg.tls_cert), "%s", tls_cert);
    snprintf(cfg.tls_key, sizeof(cfg.tls_key), "%s", tls_key);
    char err[256];
    struct tls_server *tls = NULL;
    assert_int_equal(tls_server_new(&tls, &cfg, NULL, err, sizeof(err)), 0);
    struct policy p = pol;
    p.stream_max_conns_per_ip = 1000;
    p.stream_conns_per_ip_per_s = 1000;

    static struct idle s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(uv_loop_init(&s.loop), 0);
    struct transport_stream_opts o = {.loop = &s.loop, .cfg = &cfg, .policy = &p, .tls = tls};
    assert_int_equal(transport_stream_new(&s.rec.t, &o, &cbs, &s.rec), 0);
    struct sockaddr_storage a, b;
    assert_int_equal(transport_stream_local_addr(s.rec.t, 0, &a), 0);
    assert_int_equal(transport_stream_local_addr(s.rec.t, 1, &b), 0);
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        idle_child(ntohs(((struct sockaddr_in *)&a)->sin_port),
                   ntohs(((struct sockaddr_in *)&b)->sin_port), ready[1], go[0]);
    }
    close(ready[1]);
    close(go[0]);
    fcntl(ready[0], F_SETFL, O_NONBLOCK);
    s.ready_fd = ready[0];
    s.go_fd = go[1];
    uv_timer_init(&s.loop, &s.check);
    s.check.data = &s;
    uv_timer_start(&s.check, on_idle_check, 10, 10);
    s.base = heap_used();
    uv_run(&s.loop, UV_RUN_DEFAULT);
    int status = 0;
    waitpid(pid, &status, 0);
    close(ready[0]);
    close(go[1]);
    assert_true(s.is_closed);
    assert_int_equal(uv_loop_close(&s.loop), 0);
    tls_server_unref(tls);
    remove_cert();
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(s.rec.n_open, 2 * IDLE_N);
    print_message("idle connection, userspace heap: tcp %zu bytes, tls %zu bytes\n", s.per_tcp,
                  s.per_tls);
#if !defined(__SANITIZE_ADDRESS__)
    assert_true(s.per_tcp < 8192);
    assert_true(s.per_tls < 24576);
#endif
}

static void test_transport_stream_conn_is_small(void **state)
{
    (void)state;
    print_message("struct stream_conn: %zu bytes\n", transport_stream_conn_size());
    assert_true(transport_stream_conn_size() <= 512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transport_stream_tcp_messages_keepalive_and_close),
        cmocka_unit_test(test_transport_stream_split_ping_and_lone_crlf),
        cmocka_unit_test(test_transport_stream_missing_content_length_gets_400_then_eof),
        cmocka_unit_test(test_transport_stream_per_ip_cap_closes_the_third),
        cmocka_unit_test(test_transport_stream_connection_slots_are_bounded),
        cmocka_unit_test(test_transport_stream_owner_refusal_closes_without_on_close),
        cmocka_unit_test(test_transport_stream_first_message_timeout),
        cmocka_unit_test(test_transport_stream_message_timeout),
        cmocka_unit_test(test_transport_stream_idle_timeout),
        cmocka_unit_test(test_transport_stream_too_big_gets_513_then_eof),
        cmocka_unit_test(test_transport_stream_close_conn_sends_what_is_queued_first),
        cmocka_unit_test(test_transport_stream_slow_reader_is_closed),
        cmocka_unit_test(test_transport_stream_tls_with_client_certificate),
        cmocka_unit_test(test_transport_stream_tls_handshake_timeout),
        cmocka_unit_test(test_transport_stream_queued_output_arrives_whole),
        cmocka_unit_test(test_tls_server_reports_a_missing_file),
        cmocka_unit_test(test_transport_stream_idle_connections_are_small),
        cmocka_unit_test(test_transport_stream_conn_is_small),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
