/*
 * transport_ws: SIP over WebSocket (RFC 7118), ws and wss, with libwebsockets on the
 * worker's libuv loop (foreign loop, evlib-uv plugin).
 *
 * The transport owns the listen sockets (bound by us with SO_REUSEPORT and adopted into
 * lws), the handshake policy (subprotocol "sip" echoed or refused, Origin allowlist,
 * per-IP handshake rate and connection cap, idle timeout before the first message),
 * message reassembly with a size cap, CRLF keepalives (a text message "\r\n\r\n" is
 * answered with "\r\n" at once and never reaches the edge), server pings with a pong
 * timeout, and per-connection output queues. It knows nothing about SIP: complete
 * messages go up through on_message, and answers come back through the output contract
 * (transport.h: transport_ws_tx_reserve/transport_ws_tx_commit), written once into the
 * memory the frame is sent from, or as a copy through transport_ws_send.
 * Connections are named by a generation-checked id, never by pointer. Loop thread only.
 */
#ifndef SIPEDGE_TRANSPORT_WS_H
#define SIPEDGE_TRANSPORT_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/transport.h"

struct transport_ws;


struct transport_ws_opts {
    uv_loop_t *loop;
    const struct config *cfg;    /* listen_ws/listen_wss, tls cert/key, ws origins */
    const struct policy *policy; /* ws_* knobs */
    unsigned group;              /* > 1: listen sockets join SO_REUSEPORT groups of this
                                  * many members (one per worker), steered by source */
};

/* Routes libwebsockets' log lines into sipedge's log. Once per process, before any lws
 * context exists (lws' log settings are global); n_threads: loops that will run lws. */
void transport_ws_log_init(unsigned n_threads);

/* Creates the lws context on opts->loop and starts listening. Returns 0 or a negative
 * errno; the reason is logged. */
int transport_ws_new(struct transport_ws **out, const struct transport_ws_opts *opts,
                     const struct transport_conn_cbs *cbs, void *ctx);

/*
 * The output contract (struct tx_out, ctx is the struct transport_ws) for d->conn.
 * reserve lends TX_MSG_MAX bytes that already sit behind the frame headroom in the
 * transport's output arena, or returns NULL when the connection is gone or closing
 * (tx_no_conn) or no memory can be had (tx_no_memory). commit queues the first len
 * bytes on the connection, as a text frame when they are UTF-8, else binary; it returns
 * 0 (len 0 sends nothing), -ENOENT when the connection is gone, -ENOBUFS when the
 * queue would go over the policy cap (the connection is then closed as too slow),
 * -EMSGSIZE or -ENOMEM.
 */
char *transport_ws_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap);
int transport_ws_tx_commit(void *ctx, const struct tx_dest *d, size_t len);

/*
 * Queues one SIP message for conn (copied into a reservation). Returns 0, -ENOENT when the connection is
 * gone, -ENOBUFS when its output queue is over the policy cap (the connection is then
 * closed as too slow).
 */
int transport_ws_send(struct transport_ws *t, uint64_t conn, const char *buf, size_t len);

/* Closes conn with a WebSocket close code (e.g. 1008 policy, 1009 too big). */
void transport_ws_close_conn(struct transport_ws *t, uint64_t conn, uint16_t code);

/* Loads the certificate and key files of the config again into every wss listener, for
 * handshakes from now on (established connections keep theirs). Call it only with a pair
 * already checked (tls_server_new); returns 0 or -EINVAL, the reason logged. */
int transport_ws_reload_cert(struct transport_ws *t);

/* Applies a reloaded policy to new connections and caps. */
void transport_ws_set_policy(struct transport_ws *t, const struct policy *policy);

/* Counters, as "name=value ..." text. */
void transport_ws_stats_format(const struct transport_ws *t, char *buf, size_t cap);
/* The same for the sum of n transports (the workers of one process). */
void transport_ws_stats_format_sum(const struct transport_ws *const *ts, unsigned n, char *buf,
                                   size_t cap);

/* Stops listening, closes every connection with 1001 (going away) and destroys the lws
 * context; cb(ctx) runs when every handle is closed. */
void transport_ws_close(struct transport_ws *t, void (*cb)(void *ctx), void *ctx);

#endif
