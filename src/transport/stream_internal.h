/*
 * transport_stream internals shared with its unit tests and fuzzer: the message framer
 * (stream_frame.c, pure: no loop, no sockets) and the counters. The transport's own
 * structures are in stream_conn.h.
 */
#ifndef SIPEDGE_STREAM_INTERNAL_H
#define SIPEDGE_STREAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/transport_stream.h"

/* Every refusal and close reason has a counter; conns_open and rx_buffered_bytes are
 * gauges. */
#define TRANSPORT_STREAM_STATS(X)                                                                  \
    X(accepted)                    /* TCP connections accepted */                                  \
    X(accept_errors)               /* accept4 out of descriptors/memory */                         \
    X(refused_conn_rate)           /* per-IP accept token bucket empty */                          \
    X(refused_ip_table_full)       /* per-IP table full */                                         \
    X(refused_conns_per_ip)        /* policy stream_max_conns_per_ip reached */                    \
    X(refused_conn_table_full)     /* connection slots exhausted */                                \
    X(refused_no_tls)              /* TLS listener without a certificate context */                \
    X(refused_no_memory)                                                                           \
    X(refused_by_owner)            /* on_open failed (flow table full) */                          \
    X(tls_handshakes_ok)                                                                           \
    X(tls_handshake_errors)        /* handshake failed (bad client, no client certificate) */      \
    X(conns_open)                  /* gauge */                                                     \
    X(rx_messages)                                                                                 \
    X(rx_bytes)                                                                                    \
    X(rx_buffered_bytes)           /* gauge: reassembly buffers of incomplete messages */          \
    X(rx_buffered_max)             /* high-water mark of rx_buffered_bytes */                      \
    X(keepalive_rx)                /* CRLFCRLF pings received (RFC 5626 §4.4.1) */                 \
    X(keepalive_tx)                /* CRLF pongs queued */                                         \
    X(pongs_rx)                    /* lone CRLFs received */                                       \
    X(tx_messages)                                                                                 \
    X(tx_bytes)                                                                                    \
    X(tx_queued)                   /* messages the socket did not take whole at once */            \
    X(tx_queued_bytes)             /* gauge: output queues */                                      \
    X(tx_no_conn)                  /* send to a connection that is gone or closing */              \
    X(tx_no_memory)                                                                                \
    X(tx_errors)                   /* write failed: connection dropped */                          \
    X(close_too_big)               /* message over stream_max_message_bytes: 513 */                \
    X(close_no_content_length)     /* 400 */                                                       \
    X(close_bad_content_length)    /* 400 */                                                       \
    X(close_tls_handshake_timeout)                                                                 \
    X(close_first_message_timeout)                                                                 \
    X(close_message_timeout)       /* a started message incomplete after message_timeout */        \
    X(close_idle_timeout)          /* nothing received for stream_idle_timeout_s */                \
    X(close_too_slow)              /* output queue over stream_out_queue_max_bytes */              \
    X(close_no_memory)                                                                             \
    X(close_by_owner)              /* transport_stream_close_conn */                               \
    X(close_shutdown)              /* transport_stream_close */                                    \
    X(close_by_peer)               /* EOF or TLS close_notify */                                   \
    X(close_reset)                 /* read or write error (reset, timeout) */                      \
    X(close_tls_error)             /* TLS record error after the handshake */                      \
    X(core_accepted)               /* core peers' connections to the core address */              \
    X(core_refused_not_peer)       /* a connection to the core address from anyone else */        \
    X(core_connects)               /* connections opened to a core peer */                         \
    X(core_connect_errors)         /* ... that failed or timed out (what was queued is lost) */    \
    X(core_unavailable)            /* a message for a core peer with no connection to be had */   \
    X(core_rx_messages)

struct transport_stream_stats {
#define TRANSPORT_STREAM_STATS_FIELD(name) uint64_t name;
    TRANSPORT_STREAM_STATS(TRANSPORT_STREAM_STATS_FIELD)
#undef TRANSPORT_STREAM_STATS_FIELD
};

/* ---- framing (stream_frame.c) ---- */

enum stream_frame_kind {
    STREAM_FRAME_NEED = 0,    /* incomplete: wait for more bytes */
    STREAM_FRAME_MSG,         /* one message of len bytes (header block + body) */
    STREAM_FRAME_PING,        /* CRLFCRLF keepalive (len 4): answer CRLF */
    STREAM_FRAME_PONG,        /* a lone CRLF (len 2) */
    STREAM_FRAME_ERR_NO_CL,   /* header block without Content-Length */
    STREAM_FRAME_ERR_BAD_CL,  /* Content-Length not a number, over max, or two that differ */
    STREAM_FRAME_ERR_TOO_BIG, /* header block + body over max */
};

struct stream_frame_res {
    enum stream_frame_kind kind;
    size_t len;      /* MSG/PING/PONG: bytes to consume; NEED: total message length when
                      * the header block is complete (0 while it is not) */
    size_t scanned;  /* NEED: bytes searched for the end of the header block without
                      * finding it; pass it back while the buffer only grows */
    bool is_request; /* the bytes do not start with "SIP/2.0 " (errors: answer or not) */
};

/*
 * Frames the start of buf (len bytes buffered on one connection) by RFC 3261 §18.3:
 * leading CRLFs are keepalives (RFC 5626 §4.4.1: CRLFCRLF a ping, a lone CRLF a pong;
 * a CRLF at the very end of buf waits, as it may be the first half of a ping), then a
 * header block ending in CRLFCRLF and a body of Content-Length bytes ("l" compact form,
 * names case-insensitive, folded values read across the fold). max caps header block +
 * body: a header block not ended within max bytes is ERR_TOO_BIG without looking
 * further. scanned: out->scanned of the previous NEED on the same, grown, buffer (else
 * 0), so slowly arriving headers are searched once. Fills *out and returns its kind.
 */
enum stream_frame_kind stream_frame(const char *buf, size_t len, size_t max, size_t scanned,
                                    struct stream_frame_res *out);

/* The fixed answers the transport writes itself before closing (requests only). */
#define STREAM_REPLY_400_NO_CL "SIP/2.0 400 Missing Content-Length\r\nContent-Length: 0\r\n\r\n"
#define STREAM_REPLY_400_BAD_CL "SIP/2.0 400 Bad Content-Length\r\nContent-Length: 0\r\n\r\n"
#define STREAM_REPLY_513 "SIP/2.0 513 Message Too Large\r\nContent-Length: 0\r\n\r\n"

/* ---- transport introspection (tests, admin) ---- */

const struct transport_stream_stats *transport_stream_stats(const struct transport_stream *t);
/* Connections currently open and known to the owner. */
uint32_t transport_stream_n_conns(const struct transport_stream *t);
/* The bound address of listener i (listen_tcp first, then listen_tls), so tests can
 * listen on port 0. Returns 0 or -ENOENT. */
int transport_stream_local_addr(const struct transport_stream *t, unsigned i,
                                struct sockaddr_storage *ss);
/* sizeof the per-connection structure (memory accounting). */
size_t transport_stream_conn_size(void);

#endif
