/*
 * admin_http: the HTTP admin listener (metrics, JSON admin API, status page), served by
 * its own small libwebsockets context on the worker's libuv loop (HTTP only, no TLS).
 *
 *   GET    /                    status page (HTML, embedded at build time)
 *   GET    /metrics             Prometheus text format 0.0.4 (metrics.h)
 *   GET    /api/flows           flows with their registrations; ?aor=X ?ip=Y filter
 *   GET    /api/registrations   one entry per registration; same filters
 *   GET    /api/bans            live bans (admin_cmd_exec "bans")
 *   POST   /api/bans            {"ip":"198.51.100.7","duration":600} ("duration" optional)
 *   DELETE /api/bans/IP         unban
 *   POST   /api/reload          same as SIGHUP: policy reload, audit log reopen
 *   GET    /api/stats           counters for the status page (and admin_cmd_exec "stats")
 *
 * Access: every request must carry a Host header naming this listener (the configured
 * address, the socket's local address, or "localhost:PORT" on loopback), else 421: a
 * DNS-rebinding page cannot reach the API under its own name. A peer whose address is
 * exactly 127.0.0.1 or ::1 may read (GET) without a token; any other peer (other 127/8
 * addresses included) must send "Authorization: Bearer TOKEN" with the configured token,
 * else 403. Every other method (POST, DELETE, PUT...) needs the token from any peer,
 * loopback included; with no token configured they are refused with 403 and the UNIX
 * admin socket (sipedgectl) is the way to change state. POST and DELETE carrying an
 * Origin header that does not name this listener are refused with 403 as well. Unknown paths 404, wrong method 405,
 * malformed JSON 400, request bodies over ADMIN_HTTP_BODY_MAX 413.
 *
 * We bind and listen ourselves and adopt accepted sockets into lws (an lws `iface` is an
 * interface name, INTEGRATION-NOTES §1). Loop thread only.
 */
#ifndef SIPEDGE_ADMIN_HTTP_H
#define SIPEDGE_ADMIN_HTTP_H

#include <stddef.h>

#include "sipedge/config.h"
#include "sipedge/metrics.h"

#define ADMIN_HTTP_BODY_MAX 4096
#define ADMIN_HTTP_MAX_CONNS 32
#define ADMIN_HTTP_TOKEN_MAX 128

struct uv_loop_s;
struct admin_scope;

/* Fills a metrics snapshot; called for /metrics and /api/stats. */
typedef void (*admin_http_snapshot_cb)(void *ctx, struct metrics_input *in);
/* Reloads like SIGHUP; returns 0 or a negative errno with a reason in err. */
typedef int (*admin_http_reload_cb)(void *ctx, char *err, size_t cap);

struct admin_http_opts {
    struct uv_loop_s *loop;
    const struct config_addr *listen;
    const char *token;          /* "" or NULL: only 127.0.0.1 / ::1 get in, read-only */
    const struct admin_scope *scope; /* borrowed; NULL: ban endpoints answer 503, empty
                                      * inventory */
    admin_http_snapshot_cb snapshot;
    admin_http_reload_cb reload;
    void *ctx;
};

struct admin_http;

/* Creates the lws context and listens on opts->listen. Returns 0, -EINVAL, -ENOMEM or the
 * negative errno of socket/bind/listen. */
int admin_http_new(struct admin_http **out, const struct admin_http_opts *opts);

/* Stops listening, closes connections and the lws context; cb (may be NULL) runs once
 * everything is released. */
void admin_http_close(struct admin_http *h, void (*cb)(void *ctx), void *ctx);

#endif
