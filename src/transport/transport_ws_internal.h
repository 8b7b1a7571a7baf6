/*
 * transport_ws internals shared with its unit tests and tools: the pure helpers behind
 * the handshake policy (Origin matching, subprotocol, UTF-8 check: ws_policy.c), the
 * per-IP admission table (ws_admission.c) and the counters.
 * No lws types here, so tests need no lws context.
 */
#ifndef SIPEDGE_TRANSPORT_WS_INTERNAL_H
#define SIPEDGE_TRANSPORT_WS_INTERNAL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/ratelim.h" /* struct ratelim */
#include "sipedge/transport_ws.h"

/* Every refusal and close reason has a counter; conns_open is a gauge. */
#define TRANSPORT_WS_STATS(X)                                                                      \
    X(accepted)                   /* TCP connections accepted */                                   \
    X(accept_errors)              /* accept4 out of descriptors/memory */                          \
    X(adopt_errors)               /* lws_adopt_socket_vhost failed */                              \
    X(refused_handshake_rate)     /* per-IP handshake token bucket empty */                        \
    X(refused_ip_table_full)      /* per-IP table full */                                          \
    X(refused_conns_per_ip)       /* policy ws_max_conns_per_ip reached */                         \
    X(refused_no_subprotocol)     /* no Sec-WebSocket-Protocol, or no "sip" in it */               \
    X(refused_origin)             /* Origin not in ws.origins */                                   \
    X(refused_no_origin)          /* no Origin and policy ws_require_origin */                     \
    X(refused_http)               /* plain HTTP request without Upgrade */                         \
    X(refused_conn_table_full)    /* connection slots exhausted: 1013 */                           \
    X(refused_by_owner)           /* on_open failed (flow table full): 1013 */                     \
    X(handshakes_ok)                                                                               \
    X(conns_open)                 /* gauge */                                                      \
    X(rx_messages)                                                                                 \
    X(rx_bytes)                                                                                    \
    X(rx_buffered_bytes)          /* gauge: reassembly buffers of incomplete messages */          \
    X(rx_buffered_max)            /* high-water mark of rx_buffered_bytes */                      \
    X(keepalive_rx)               /* CRLF keepalives received (RFC 5626 §4.4.1) */               \
    X(keepalive_tx)               /* CRLF answers queued */                                        \
    X(pings_tx)                   /* server WebSocket Pings to idle connections */                \
    X(pongs_rx)                                                                                    \
    X(tx_messages)                                                                                 \
    X(tx_bytes)                                                                                    \
    X(tx_no_conn)                 /* send to a connection that is gone */                          \
    X(tx_no_memory)                                                                                \
    X(tx_errors)                  /* lws_write failed: connection dropped */                       \
    X(tx_blocks)                  /* gauge: output arena blocks held (ws_out.c) */                 \
    X(tx_slow_copies)             /* messages moved to the heap for a choked connection */         \
    X(close_too_big)              /* 1009 */                                                       \
    X(close_bad_utf8)             /* text message not UTF-8: 1007 */                               \
    X(close_first_message_timeout) /* 1008 */                                                      \
    X(close_message_timeout)      /* a started message incomplete after ws_message_timeout_s */  \
    X(close_too_slow)             /* output queue over cap: 1008 */                                \
    X(close_ping_timeout)         /* nothing came back within ws_pong_timeout_s of a Ping */      \
    X(close_no_memory)            /* 1011 */                                                       \
    X(close_by_owner)             /* transport_ws_close_conn */                                    \
    X(close_shutdown)             /* 1001 */                                                       \
    X(close_by_peer)              /* peer sent a close frame */                                    \
    X(close_other)                /* reset, EOF, TLS or handshake failure */

struct transport_ws_stats {
#define TRANSPORT_WS_STATS_FIELD(name) uint64_t name;
    TRANSPORT_WS_STATS(TRANSPORT_WS_STATS_FIELD)
#undef TRANSPORT_WS_STATS_FIELD
};

union ws_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

union ws_ip_key {
    struct {
        uint8_t family;
        uint8_t addr[16];
    };
    uint8_t bytes[17];
};

/* One entry of the Origin allowlist: "scheme://host" (any port) or "scheme://host:port". */
struct ws_origin {
    char scheme[16];
    char host[128];
    uint16_t port;
    bool has_port;
};

/* Parses "scheme://host[:port]" (host may be "[v6]"; one trailing '/' tolerated).
 * Returns 0 and *out, or -EINVAL. */
int transport_ws_origin_parse(const char *s, size_t n, struct ws_origin *out);

/*
 * Whether an Origin header value passes the allowlist. An empty list allows everything.
 * Scheme and host compare case-insensitively; an entry with a port matches only that
 * port, where an Origin without a port has its scheme's default (80/443).
 */
bool transport_ws_origin_allowed(const struct ws_origin *allow, unsigned n_allow,
                                 const char *origin, size_t len);

/* The per-IP table key of a source: IPv4 as is (also when IPv4-mapped), IPv6 masked to
 * its first v6_prefix bits (0 or over 128: the full address). */
void transport_ws_ip_key(const struct sockaddr *sa, unsigned v6_prefix, union ws_ip_key *k);

/* Whether a Sec-WebSocket-Protocol value (NUL-terminated, cut up in place) offers "sip"
 * among its comma-separated tokens. */
bool transport_ws_offers_sip(char *hdr);

/* Whether s is well-formed UTF-8 (RFC 3629 §4). */
bool transport_ws_is_utf8(const unsigned char *s, size_t n);

/* ---- per-IP admission (ws_admission.c) ---- */

#define WS_IP_CAP 16384  /* per-IP entries (handshake bucket + connection count) */
#define WS_IP_HASH 16384 /* power of two */

struct ws_ip {
    union ws_ip_key key;
    uint32_t n_conns;
    uint32_t hnext; /* entry + 1 */
    bool is_used;
    struct ratelim bucket; /* handshakes; burst is twice the rate */
};

struct ws_ip_table {
    struct ws_ip *ips;  /* WS_IP_CAP entries */
    uint32_t *heads;    /* WS_IP_HASH chains, entry + 1 */
    uint32_t free;      /* entry + 1 */
    uint32_t n_used;
    uint32_t hwm;
    uint64_t k0, k1; /* key of the chain hash */
};

/* Returns 0 or -ENOMEM. */
int ws_ip_table_init(struct ws_ip_table *tb);
void ws_ip_table_free(struct ws_ip_table *tb);
/* The entry for k, created with a full bucket for rate_per_s when absent; NULL when the
 * table is full. */
struct ws_ip *ws_ip_get(struct ws_ip_table *tb, const union ws_ip_key *k, uint32_t rate_per_s,
                        uint64_t now_ms);
/* Takes one handshake token (true) or refuses (false). */
bool ws_ip_allow_handshake(struct ws_ip *e, uint32_t rate_per_s, uint64_t now_ms);
/* Forgets entries that hold no connection and whose bucket is full again. */
void ws_ip_sweep(struct ws_ip_table *tb, uint32_t rate_per_s, uint64_t now_ms);

/* Counters (the struct above). */
const struct transport_ws_stats *transport_ws_stats(const struct transport_ws *t);

/* Connections currently established and known to the owner. */
uint32_t transport_ws_n_conns(const struct transport_ws *t);

#endif
