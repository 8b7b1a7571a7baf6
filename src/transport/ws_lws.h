/*
 * ws_lws: the internals the libwebsockets adapter of transport_ws shares between its
 * files: the transport object, the per-session data lws keeps for each connection, the
 * listeners, and the few functions one file calls in the other. transport_ws.c adapts
 * lws events (handshake, frames, writeable, close) and the output contract;
 * ws_server.c listens, ticks and tears down. The lws-free parts are in
 * transport_ws_internal.h.
 */
#ifndef SIPEDGE_WS_LWS_H
#define SIPEDGE_WS_LWS_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/conn_ids.h"
#include "sipedge/lws_uv.h"
#include "transport_ws_internal.h"
#include "ws_out.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/*
 * Per-connection receive chunk (protocol rx_buffer_size). lws allocates it for every
 * connection, so it is the main per-connection memory knob for ws (notes §1: 1 KiB ≈
 * 2.4 KiB/conn, 4 KiB ≈ 5.3 KiB/conn). Larger messages arrive in several callbacks and
 * are reassembled here.
 */
#define WS_RX_CHUNK 2048
#define WS_ACCEPT_BATCH 64 /* accepts per listener wakeup (STYLE §5: bounded) */
#define WS_LISTEN_BACKLOG 1024
#define WS_HANDSHAKE_TIMEOUT_S 10 /* lws timeout for TLS + HTTP upgrade */
#define WS_CLOSE_BACKSTOP_S 3     /* a scheduled close that cannot be written in time */
#define WS_SHUTDOWN_GRACE_MS 500  /* time for 1001 close frames before the context goes */
#define WS_TICK_MS 1000
#define WS_STOP_POLLS_MAX 2000     /* 1 ms polls for lws' handles to finish closing */
#define WS_DEFAULT_MAX_CONNS 65536 /* slot table bound when policy max_flows is 0 */
#define WS_ORIGIN_HDR_MAX 256

/* WebSocket close codes (RFC 6455 §7.4.1). */
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_BAD_DATA 1007
#define WS_CLOSE_POLICY 1008
#define WS_CLOSE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL 1011
#define WS_CLOSE_TRY_AGAIN 1013

/* Per-session data: allocated and zero-filled by lws, freed by lws after CLOSED. */
struct ws_pss {
    struct lws *wsi;
    uint64_t ref;        /* owner's value from on_open */
    uint64_t id;         /* connection id (conn_ids) while in the table, 0 otherwise */
    uint32_t ip;         /* ip entry + 1 while counted in n_conns, 0 otherwise */
    bool is_established; /* CLOSED also fires for refused handshakes (notes §1) */
    bool is_in_msg;      /* between the first and the final chunk of a message */
    bool is_rx_binary;
    bool has_message;   /* a SIP message arrived: the first-message timer is off */
    bool is_closing;    /* a close is scheduled; further input is ignored */
    bool is_close_sent; /* our close frame is out; waiting for the peer's */
    bool is_peer_closed;
    bool is_ping_due; /* a server Ping waits for the next writeable callback */
    bool is_ping_out; /* a Ping is out and nothing has come back since */
    uint16_t close_code;
    /* Loop times in ms, truncated to 32 bits: compared by unsigned difference, which
     * stays right across the wrap for spans under 24 days. */
    uint32_t open_ms;    /* the handshake: first-message timeout */
    uint32_t last_rx_ms; /* the last frame of any kind from the peer */
    uint32_t ping_ms;    /* the outstanding Ping */
    uint32_t msg_ms;     /* the first chunk of the incomplete message: its deadline */
    char *rx;            /* reassembly buffer, only while a message is incomplete */
    uint32_t rx_len;
    uint32_t rx_cap;
    struct ws_outq out; /* messages waiting for SERVER_WRITEABLE (ws_out.h) */
    union ws_addr remote;
};


struct ws_listener {
    uv_poll_t poll;
    struct transport_ws *t;
    struct lws_vhost *vh;
    const struct config_addr *addr;
    int fd;
    uint8_t transport; /* FLOW_WS / FLOW_WSS */
    uint8_t index;     /* index in cfg->listen_ws or cfg->listen_wss */
    bool is_polling;
    void *ssl_ctx; /* wss: the vhost's SSL_CTX (lws owns it) */
    char name[24];
};

struct transport_ws {
    uv_loop_t *loop;
    void *foreign_loops[1];
    const struct config *cfg;
    struct policy pol;
    unsigned group; /* SO_REUSEPORT group size of the listen sockets (transport_ws_opts) */
    struct transport_conn_cbs cbs;
    void *ctx;
    struct lws_context *lws;
    lws_retry_bo_t retry; /* all zero; must outlive the vhosts that point at it */

    struct ws_listener lst[2 * CONFIG_MAX_LISTEN];
    unsigned n_lst;
    bool is_accept_paused;

    struct ws_origin origins[CONFIG_MAX_ORIGINS];
    unsigned n_origins;

    struct conn_ids ids; /* established connections; bound: policy max_flows */

    struct ws_ip_table ipt; /* per-IP admission (ws_admission.c) */

    uv_timer_t tick;
    uv_timer_t stop_timer;
    bool is_closing;
    bool is_lws_destroyed;
    struct lws_uv_teardown teardown;
    unsigned n_handles_open;
    void (*close_cb)(void *ctx);
    void *close_ctx;

    struct ws_arena arena; /* output memory of every connection (ws_out.c) */
    struct transport_ws_stats st;
};

static inline uint32_t ws_now_ms(const struct transport_ws *t)
{
    return (uint32_t)uv_now(t->loop);
}

static inline struct transport_ws *ws_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

static inline void ws_ip_key(const struct transport_ws *t, const struct sockaddr *sa,
                             union ws_ip_key *k)
{
    transport_ws_ip_key(sa, t->pol.guard_ipv6_prefix, k);
}

/* ---- transport_ws.c ---- */

/* The one protocol of every vhost: "sip", served by the adapter's callback. */
extern const struct lws_protocols ws_protocols[];

/* Closes pss with code from outside the receive path (see there). */
void ws_schedule_close(struct ws_pss *pss, uint16_t code);
/* Frees pss's reassembly buffer. */
void ws_rx_free(struct transport_ws *t, struct ws_pss *pss);

/* ---- ws_server.c ---- */

/* The listener a connection came in on. */
struct ws_listener *ws_listener_of(struct transport_ws *t, struct lws *wsi);
/* The last connection of a closing transport is gone: finish the shutdown, outside lws. */
void ws_finish_soon(struct transport_ws *t);

#endif
