/*
 * stream_conn: the structures transport_stream shares between its files:
 * transport_stream.c (listening, admission, the connection table, the tick, shutdown,
 * the output contract) and stream_io.c (a connection's reads, writes, TLS and framing).
 *
 * A connection is one heap struct and the kernel socket. Its fd is watched by a
 * uv_poll_t; OpenSSL reads and writes the fd itself. Received bytes go into the
 * transport's one scratch buffer and only the tail of an incomplete message moves to
 * the connection's own buffer (rx); what the socket does not take at once goes to its
 * output queue (out). Both are freed when empty, so an idle connection holds neither.
 */
#ifndef SIPEDGE_STREAM_CONN_H
#define SIPEDGE_STREAM_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/conn_ids.h"
#include "stream_internal.h"
#include "transport_ws_internal.h" /* per-IP admission table, union ws_addr */

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

typedef struct ssl_st SSL;

#define STREAM_ACCEPT_BATCH 64 /* accepts per listener wakeup (STYLE §5: bounded) */
#define STREAM_LISTEN_BACKLOG 1024
#define STREAM_TICK_MS 1000
#define STREAM_RX_SCRATCH 65536        /* one per transport */
#define STREAM_RX_PAD 4                /* room before the scratch for a held-back CRLF prefix */
#define STREAM_RX_MIN 2048             /* first size of a connection's reassembly buffer */
#define STREAM_READS_MAX 8             /* reads per wakeup for one connection */
#define STREAM_LINGER_MS 2000          /* flush + drain before a close that answered something */
#define STREAM_DEFAULT_MAX_CONNS 65536 /* slot table bound when policy max_flows is 0 */
#define STREAM_PEER_ID_MAX 256
#define STREAM_CORE_MAX 16 /* core connections (to and from the core peers) */

struct transport_stream;

struct stream_conn {
    uv_poll_t poll;
    struct transport_stream *t;
    SSL *ssl;     /* TLS connections only */
    uint64_t id;  /* TX_CONN_STREAM | gen << 32 | slot */
    uint64_t ref; /* owner's value from on_open */
    char *rx;     /* reassembly buffer, only while a message is incomplete */
    char *out;    /* output queue, only while the socket does not take everything */
    uint32_t rx_len, rx_cap;
    uint32_t rx_need;    /* total length of the buffered message once known, else 0 */
    uint32_t rx_scanned; /* framer resume point (stream_frame_res.scanned) */
    uint32_t out_off, out_len, out_cap;
    uint32_t ip; /* per-IP entry + 1 while counted there */
    /* Loop times in ms, truncated to 32 bits: compared by unsigned difference. */
    uint32_t accept_ms;  /* accept: handshake deadline */
    uint32_t open_ms;    /* on_open: first-message deadline */
    uint32_t last_rx_ms; /* last bytes of any kind: idle deadline */
    uint32_t msg_ms;     /* first byte of the buffered incomplete message, or of the
                          * held-back CRLFs */
    uint32_t close_ms;   /* a lingering close started */
    int fd;
    uint8_t transport; /* FLOW_TCP or FLOW_TLS */
    uint8_t listener;
    uint8_t events; /* UV_READABLE | UV_WRITABLE being polled */
    uint8_t n_crlf; /* 1..3: the read ended in a prefix of CRLFCRLF ("\r", "\r\n",
                     * "\r\n\r"), held back here, not in rx, to see whether it is half
                     * of a ping; rx is empty meanwhile */
    bool is_tls;
    bool is_handshake_done;   /* plain: always */
    bool is_open;             /* on_open succeeded: on_close is owed */
    bool has_message;         /* a message arrived: the first-message timer is off */
    bool is_closing;          /* closed for the owner; flushing or draining or gone */
    bool is_lingering;        /* flushing the queue, then reading to EOF, then close */
    bool is_wr_shut;          /* the write side is shut down (lingering) */
    bool is_gone;             /* uv_close started; freed in its callback */
    bool is_read_wants_write; /* TLS: SSL_read asked for writability */
    bool is_write_wants_read; /* TLS: SSL_write asked for readability */
    bool is_core;             /* to or from a core peer: remote is the peer's configured
                                 address; no owner events, no first-message deadline */
    bool is_connecting;       /* core, outbound: connect() in progress (is_handshake_done
                                 is false, so what is sent is queued) */
    union ws_addr remote;
};


struct stream_listener {
    uv_poll_t poll;
    struct transport_stream *t;
    const struct config_addr *addr;
    int fd;
    uint8_t transport;
    uint8_t index;
    bool is_polling;
};

struct transport_stream {
    uv_loop_t *loop;
    const struct config *cfg;
    struct policy pol;
    struct transport_conn_cbs cbs;
    void *ctx;
    struct tls_server *tls;
    unsigned group;
    void (*on_core)(void *ctx, const char *buf, size_t len, const struct sockaddr *peer);
    struct stream_conn *core[STREAM_CORE_MAX]; /* live core connections */
    unsigned n_core;

    struct stream_listener lst[2 * CONFIG_MAX_LISTEN + 1]; /* tcp, tls, then the core */
    unsigned n_lst;
    uv_timer_t tick;
    unsigned n_handles_open;

    struct conn_ids ids; /* every connection, open or not yet; bound: policy max_flows */
    uint32_t n_live;       /* open connections (owner knows them) */

    struct ws_ip_table ipt;
    char *rx_scratch; /* STREAM_RX_PAD + STREAM_RX_SCRATCH */
    char *tx_scratch; /* TX_MSG_MAX: the one open reservation */
    bool is_accept_paused;
    bool is_closing;
    void (*close_cb)(void *ctx);
    void *close_ctx;

    struct transport_stream_stats st;
};

static inline uint32_t stream_now_ms(const struct transport_stream *t)
{
    return (uint32_t)uv_now(t->loop);
}

/* ---- stream_io.c ---- */

/* Starts a connection's I/O after admission: plain connections are opened for the
 * owner at once, TLS ones start their handshake. */
void stream_conn_start(struct stream_conn *c);
/*
 * Ends c. counter: the close reason's counter. is_linger: flush what is queued first,
 * then shut down the write side and read to EOF (bounded by STREAM_LINGER_MS), so a
 * final answer reaches the peer instead of being lost to a reset. on_close runs from the
 * handle's close callback, never inside the call that closes.
 */
void stream_conn_close(struct stream_conn *c, uint64_t *counter, bool is_linger);
/* The tick: CRLFs held back for a second are a lone CRLF keepalive (on_alive). */
void stream_conn_crlf_expire(struct stream_conn *c);
/* Writes len bytes now or queues what the socket does not take. Returns 0, -ENOBUFS
 * (over the queue cap: c is closed as too slow), -ENOMEM or -EPIPE (c is closed). */
int stream_conn_send(struct stream_conn *c, const char *buf, size_t len);

/* Core connections: marks c open without an owner (no on_open / on_close). */
void stream_conn_open_core(struct stream_conn *c);

/* ---- stream_core.c ---- */

/* One accepted connection on the core listener (ctx: the listener). */
void stream_core_accepted(void *ctx, int fd, const struct sockaddr *peer, socklen_t len);
/* Listens on cfg->core for TCP from the core peers. Returns 0 or -errno. */
int stream_core_listen(struct transport_stream *t, struct stream_listener *l);
/* An open core connection to or from the peer at addr, or a new outbound one; NULL when
 * none can be had (counted). */
struct stream_conn *stream_core_get(struct transport_stream *t, const struct sockaddr *addr);
/* An outbound core connection became writable: connected, or failed (closed). */
void stream_core_connected(struct stream_conn *c);
/* c leaves the core list. */
void stream_core_forget(struct stream_conn *c);

/* ---- transport_stream.c ---- */

/* A listener is readable: accept what waits (core listeners: stream_core_accepted). */
void stream_on_accept(uv_poll_t *h, int status, int events);
/* Allocates a slot for c (its id). Returns 0, -ENOSPC or -ENOMEM. */
int stream_slot_alloc(struct transport_stream *t, struct stream_conn *c);
/* Socket options of every connection (keepalive, user timeout, no delay). */
void stream_sockopts(int fd);

/* Frees c's slot and per-IP count (its id goes stale at once). */
void stream_conn_release(struct stream_conn *c);
/* A connection handle finished closing: the transport may be done. */
void stream_handle_closed(struct transport_stream *t);

#endif
