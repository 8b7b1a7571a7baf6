/*
 * lws_uv: tearing down a libwebsockets context that runs on our (foreign) libuv loop.
 *
 * lws 4.1.6 needs two lws_context_destroy calls on a foreign loop: the first closes the
 * connections and starts closing lws' own uv handles; the second, once none of them is
 * still closing, frees the context and unloads the evlib-uv plugin (lws issue #2595).
 * Calling it earlier jumps into the unloaded plugin. Loop thread only; never call from
 * inside an lws callback.
 */
#ifndef SIPEDGE_LWS_UV_H
#define SIPEDGE_LWS_UV_H

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

#include "sipedge/config.h"

struct lws_context;

/*
 * A TCP listen socket of our own, to adopt accepted connections into lws (lws 4.1.6
 * cannot share a port between loops, and binds by interface name, not address).
 * Non-blocking, close-on-exec, SO_REUSEADDR (and SO_REUSEPORT when asked), IPv6-only for
 * IPv6 addresses, watched for readability by poll (initialised here on loop, started with
 * on_readable). Returns the fd (>= 0) or a negative errno; nothing is left open on error.
 */
int lws_uv_listen(const struct config_addr *a, int backlog, bool is_reuseport, uv_loop_t *loop,
                  uv_poll_t *poll, uv_poll_cb on_readable);

/*
 * Accepts up to max connections waiting on listen socket fd (non-blocking, close-on-exec)
 * and hands each to one(ctx, fd, peer, peer_len), which owns the fd from then on.
 * Returns 0 when the backlog is empty or max were taken, or the errno (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM) on which the caller should stop polling fd for a while instead of
 * spinning on a readable listen socket.
 */
int lws_uv_accept_batch(int fd, unsigned max,
                        void (*one)(void *ctx, int fd, const struct sockaddr *peer, socklen_t len),
                        void *ctx);

struct lws_uv_teardown {
    struct lws_context *ctx;
    unsigned n_polls;
    bool is_started;
};

/*
 * One step; call it from a timer until it returns true (a 1 ms repeat is right). The
 * first call destroys the context once; later calls wait, up to max_polls calls, for the
 * loop's closing handles to finish, then destroy it for good. Gives up with a warning
 * naming who when they never finish. Returns true when done (td->ctx is then NULL).
 */
bool lws_uv_teardown_step(struct lws_uv_teardown *td, uv_loop_t *loop, unsigned max_polls,
                          const char *who);

#endif
