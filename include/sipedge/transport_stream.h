/*
 * transport_stream: SIP over TCP and TLS (RFC 3261 §18.3 framing, RFC 5626 §4.4.1 CRLF
 * keepalive on streams) on the worker's libuv loop.
 *
 * The transport owns its listen sockets (SO_REUSEPORT groups steered by source, as for
 * ws), per-IP admission before anything is read (connection cap and accept rate, so a
 * flood costs no TLS handshake), the TLS handshake with its deadline, message framing by
 * Content-Length with size and time caps, CRLFCRLF pings answered with CRLF pongs, idle
 * and first-message timeouts, and per-connection output queues. It knows nothing about
 * SIP beyond the framing: complete messages go up through on_message, answers come back
 * through the output contract (transport.h), written once: straight to the socket from
 * the reserved memory when it takes them, queued only for what it does not.
 *
 * Connection ids carry TX_CONN_STREAM and are generation-checked. Loop thread only.
 */
#ifndef SIPEDGE_TRANSPORT_STREAM_H
#define SIPEDGE_TRANSPORT_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/transport.h"

struct transport_stream;
struct tls_server; /* tls_server.h */

struct transport_stream_opts {
    uv_loop_t *loop;
    const struct config *cfg;    /* listen_tcp / listen_tls */
    const struct policy *policy; /* stream_* knobs */
    struct tls_server *tls;      /* certificate context for the TLS listeners (shared by
                                  * every worker; the transport takes a reference) */
    unsigned group;              /* > 1: listen sockets join SO_REUSEPORT groups of this
                                  * many members (one per worker), steered by source */
    /*
     * The core side over TCP (RFC 3261 §18.1.1, §18.2.2). With on_core set, the transport
     * also listens for TCP on cfg->core, where only the core peers (cfg->registrar,
     * registrar_backups, core_peers) may connect (any other source is closed at once),
     * and takes tx_dest_core_stream messages: over an open connection to or from that
     * peer, or over one it opens. Messages on core connections go to on_core with the
     * peer's configured address (a peer's own connections come from ephemeral ports).
     */
    void (*on_core)(void *ctx, const char *buf, size_t len, const struct sockaddr *peer);
};

/* Starts listening on every TCP and TLS address of cfg. Returns 0 or a negative errno
 * (the reason is logged); nothing is left open on error. */
int transport_stream_new(struct transport_stream **out, const struct transport_stream_opts *opts,
                         const struct transport_conn_cbs *cbs, void *ctx);

/*
 * The output contract (struct tx_out, ctx is the struct transport_stream) for d->conn.
 * reserve lends TX_MSG_MAX bytes, or NULL when the connection is gone or closing (for
 * TX_CONN_CORE: when no connection to the peer is open and none can be opened). commit
 * sends the first len bytes (or queues what the socket does not take now) and returns
 * 0, -ENOENT when the connection is gone, -ENOBUFS when its queue would go over the
 * policy cap (the connection is then closed as too slow), or -ENOMEM.
 */
char *transport_stream_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap);
int transport_stream_tx_commit(void *ctx, const struct tx_dest *d, size_t len);

/* Closes conn after what is queued for it has been sent (or a short deadline). */
void transport_stream_close_conn(struct transport_stream *t, uint64_t conn);

/* Applies a reloaded policy to new connections and caps. */
void transport_stream_set_policy(struct transport_stream *t, const struct policy *policy);
/* Uses tls for TLS connections accepted from now on (certificate reload); established
 * connections keep theirs. */
void transport_stream_set_tls(struct transport_stream *t, struct tls_server *tls);

/* Counters, as "name=value ..." text; the second form sums n transports. */
void transport_stream_stats_format(const struct transport_stream *t, char *buf, size_t cap);
void transport_stream_stats_format_sum(const struct transport_stream *const *ts, unsigned n,
                                       char *buf, size_t cap);

/* Stops listening, closes every connection and frees the transport; cb(ctx) runs when
 * every handle is closed. */
void transport_stream_close(struct transport_stream *t, void (*cb)(void *ctx), void *ctx);

#endif
