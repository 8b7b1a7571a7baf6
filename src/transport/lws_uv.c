#define _GNU_SOURCE
#include "sipedge/lws_uv.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "sipedge/log.h"

static void on_walk_count_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        (*(unsigned *)arg)++;
}

bool lws_uv_teardown_step(struct lws_uv_teardown *td, uv_loop_t *loop, unsigned max_polls,
                          const char *who)
{
    if (!td->ctx)
        return true;
    if (!td->is_started) {
        td->is_started = true;
        td->n_polls = 0;
        lws_context_destroy(td->ctx);
        return false;
    }
    unsigned n_closing = 0;
    uv_walk(loop, on_walk_count_closing, &n_closing);
    if (n_closing && ++td->n_polls < max_polls)
        return false;
    if (n_closing)
        log_warn("%s: lws handles still closing after %u polls; context left behind", who,
                 max_polls);
    else
        lws_context_destroy(td->ctx);
    td->ctx = NULL;
    return true;
}

int lws_uv_accept_batch(int fd, unsigned max,
                        void (*one)(void *ctx, int fd, const struct sockaddr *peer, socklen_t len),
                        void *ctx)
{
    for (unsigned n = 0; n < max; n++) {
        struct sockaddr_storage peer;
        socklen_t sl = sizeof(peer);
        int cfd = accept4(fd, (struct sockaddr *)&peer, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                return errno;
            return 0;
        }
        one(ctx, cfd, (const struct sockaddr *)&peer, sl);
    }
    return 0;
}

int lws_uv_listen(const struct config_addr *a, int backlog, bool is_reuseport, uv_loop_t *loop,
                  uv_poll_t *poll, uv_poll_cb on_readable)
{
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (is_reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (a->ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    rc = uv_poll_init_socket(loop, poll, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    uv_poll_start(poll, UV_READABLE, on_readable);
    return fd;
}
