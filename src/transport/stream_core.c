/*
 * stream_core: the stream transport's connections to and from the core peers (RFC 3261
 * §18.1.1: a request that would come near the path MTU goes over TCP; §18.2.2: a
 * request that came over TCP is answered over its connection).
 *
 * The core address listens for TCP from the configured core peers only (registrar,
 * backups, core peers), matched by IP address: a peer's own connections come from
 * ephemeral ports, so each connection is known by the peer's configured address, which
 * is also the address the edge's messages name. A message for a peer goes over the
 * newest open connection known by that address, or over one opened to it. What is sent
 * while the connection is being made is queued; if it fails, that is lost and counted,
 * as a datagram would be.
 */
#define _GNU_SOURCE
#include "stream_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sipedge/flow_table.h"
#include "sipedge/log.h"
#include "sipedge/lws_uv.h"
#include "sipedge/netaddr.h"

/* The configured peer whose IP address src has (same port first), or NULL. */
static const struct config_addr *core_peer_of(const struct transport_stream *t,
                                              const struct sockaddr *src)
{
    const struct config *cfg = t->cfg;
    const struct config_addr *by_ip = NULL;
    const struct config_addr *cand[2 + 2 * CONFIG_MAX_PEERS];
    unsigned n = 0;
    cand[n++] = &cfg->registrar;
    for (unsigned i = 0; i < cfg->n_registrar_backups; i++)
        cand[n++] = &cfg->registrar_backups[i];
    for (unsigned i = 0; i < cfg->n_core_peers; i++)
        cand[n++] = &cfg->core_peers[i];
    for (unsigned i = 0; i < n; i++) {
        const struct sockaddr *a = (const struct sockaddr *)&cand[i]->ss;
        if (netaddr_eq(src, a))
            return cand[i];
        if (!by_ip && netaddr_ip_eq(src, a))
            by_ip = cand[i];
    }
    return by_ip;
}

static void core_track(struct transport_stream *t, struct stream_conn *c)
{
    c->is_core = true;
    if (t->n_core < STREAM_CORE_MAX)
        t->core[t->n_core++] = c;
}

void stream_core_forget(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    for (unsigned i = 0; i < t->n_core; i++) {
        if (t->core[i] == c) {
            t->core[i] = t->core[--t->n_core];
            return;
        }
    }
}

/* A new connection object for fd in a slot with a poll handle; NULL (fd closed). */
static struct stream_conn *core_conn_new(struct transport_stream *t, int fd,
                                         const struct config_addr *peer)
{
    struct stream_conn *c = calloc(1, sizeof(*c));
    if (!c || stream_slot_alloc(t, c) < 0) {
        free(c);
        close(fd);
        return NULL;
    }
    c->t = t;
    c->fd = fd;
    c->transport = FLOW_TCP;
    memcpy(&c->remote, &peer->ss, peer->len < sizeof(c->remote) ? peer->len : sizeof(c->remote));
    if (uv_poll_init_socket(t->loop, &c->poll, fd) < 0) {
        stream_conn_release(c);
        free(c);
        close(fd);
        return NULL;
    }
    t->n_handles_open++;
    stream_sockopts(fd);
    core_track(t, c);
    return c;
}

void stream_core_accepted(void *ctx, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct stream_listener *l = ctx;
    struct transport_stream *t = l->t;
    (void)len;
    const struct config_addr *p = core_peer_of(t, peer);
    if (!p || t->n_core >= STREAM_CORE_MAX) {
        char abuf[LOG_ADDR_MAX];
        t->st.core_refused_not_peer++;
        log_debug("stream: core tcp connection from %s refused: %s",
                  log_fmt_addr(peer, abuf, sizeof(abuf)),
                  p ? "too many core connections" : "not a core peer");
        close(fd);
        return;
    }
    struct stream_conn *c = core_conn_new(t, fd, p);
    if (!c)
        return;
    t->st.core_accepted++;
    stream_conn_start(c);
}

int stream_core_listen(struct transport_stream *t, struct stream_listener *l)
{
    l->t = t;
    l->transport = 0;
    l->addr = &t->cfg->core;
    /* Each worker has its own core port: no group, no steering. */
    int fd =
        lws_uv_listen(l->addr, STREAM_LISTEN_BACKLOG, false, t->loop, &l->poll, stream_on_accept);
    if (fd < 0)
        return fd;
    l->fd = fd;
    l->is_polling = true;
    t->n_handles_open++;
    return 0;
}

struct stream_conn *stream_core_get(struct transport_stream *t, const struct sockaddr *addr)
{
    for (unsigned i = t->n_core; i-- > 0;) {
        struct stream_conn *c = t->core[i];
        if (!c->is_closing && netaddr_eq(&c->remote.sa, addr))
            return c;
    }
    const struct config_addr *p = core_peer_of(t, addr);
    if (!p || !netaddr_eq(addr, (const struct sockaddr *)&p->ss) || t->n_core >= STREAM_CORE_MAX ||
        t->is_closing) {
        t->st.core_unavailable++;
        return NULL;
    }
    int fd = socket(p->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        t->st.core_unavailable++;
        return NULL;
    }
    /* From the core address (any port), as the datagrams: a registrar that trusts
     * sipedge by its address (P-Asserted-Identity) trusts these too. */
    struct sockaddr_storage local = t->cfg->core.ss;
    if (local.ss_family == AF_INET)
        ((struct sockaddr_in *)&local)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&local)->sin6_port = 0;
    if (local.ss_family != p->ss.ss_family ||
        bind(fd, (const struct sockaddr *)&local, t->cfg->core.len) < 0 ||
        (connect(fd, (const struct sockaddr *)&p->ss, p->len) < 0 && errno != EINPROGRESS)) {
        char abuf[LOG_ADDR_MAX];
        log_warn("stream: core tcp connect to %s: %s", log_fmt_addr(addr, abuf, sizeof(abuf)),
                 strerror(errno));
        t->st.core_connect_errors++;
        close(fd);
        return NULL;
    }
    struct stream_conn *c = core_conn_new(t, fd, p);
    if (!c) {
        t->st.core_unavailable++;
        return NULL;
    }
    t->st.core_connects++;
    c->is_connecting = true;
    stream_conn_start(c);
    return c;
}

void stream_core_connected(struct stream_conn *c)
{
    struct transport_stream *t = c->t;
    int err = 0;
    socklen_t sl = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        err = errno;
    c->is_connecting = false;
    if (err) {
        char abuf[LOG_ADDR_MAX];
        log_warn("stream: core tcp connect to %s: %s",
                 log_fmt_addr(&c->remote.sa, abuf, sizeof(abuf)), strerror(err));
        stream_conn_close(c, &t->st.core_connect_errors, false);
        return;
    }
    stream_conn_open_core(c);
}
