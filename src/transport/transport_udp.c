#define _GNU_SOURCE
#include "sipedge/transport_udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/log.h"
#include "transport/reuseport_steer.h"

#define UDP_MAX_SOCKS 16
#define RX_DGRAM_MAX 65536
#define RX_BATCH 16
#define TX_ARENA (512 * 1024)
#define TX_BATCH 64

struct udp_sock {
    uv_udp_t handle;
    struct transport_udp *t;
    uint8_t id;
    bool is_open;
};

struct tx_entry {
    uint8_t id;
    uint32_t off;
    uint32_t len;
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } dst;
    socklen_t dst_len;
};

struct transport_udp {
    uv_loop_t *loop;
    transport_udp_recv_cb cb;
    void *ctx;
    struct udp_sock socks[UDP_MAX_SOCKS];
    unsigned n_socks;
    int8_t by_id[256]; /* socket id → index in socks, -1 when unbound */
    uv_check_t flush_check;
    unsigned n_open_handles;
    transport_udp_close_cb close_cb;
    void *close_ctx;
    struct transport_udp_stats st;
    /* Transmit batch. */
    uint32_t tx_used;
    unsigned n_tx;
    struct tx_entry tx[TX_BATCH];
    struct mmsghdr mmsg[TX_BATCH];
    struct iovec iov[TX_BATCH];
    char *rx_buf; /* RX_BATCH datagrams, shared by every socket of the loop */
    char tx_arena[TX_ARENA];
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct udp_sock *s = h->data;
    (void)suggested;
    buf->base = s->t->rx_buf;
    buf->len = (size_t)RX_DGRAM_MAX * RX_BATCH;
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    struct udp_sock *s = h->data;
    struct transport_udp *t = s->t;
    if (nread < 0) {
        log_debug("udp recv error on socket %u: %s", s->id, uv_strerror((int)nread));
        return;
    }
    if (flags & UV_UDP_MMSG_FREE) {
        t->st.rx_syscalls++; /* end of one recvmmsg batch */
        return;
    }
    if (!addr)
        return; /* nothing read */
    if (!(flags & UV_UDP_MMSG_CHUNK))
        t->st.rx_syscalls++;
    t->st.rx_datagrams++;
    if (flags & UV_UDP_PARTIAL)
        return; /* larger than any SIP datagram we accept; the edge never sees it */
    t->cb(t->ctx, s->id, buf->base, (size_t)nread, addr);
}

static void on_check(uv_check_t *c)
{
    struct transport_udp *t = c->data;
    transport_udp_flush(t);
}

int transport_udp_new(struct transport_udp **out, uv_loop_t *loop, transport_udp_recv_cb cb,
                      void *ctx)
{
    struct transport_udp *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->rx_buf = malloc((size_t)RX_DGRAM_MAX * RX_BATCH);
    if (!t->rx_buf) {
        free(t);
        return -ENOMEM;
    }
    t->loop = loop;
    t->cb = cb;
    t->ctx = ctx;
    memset(t->by_id, -1, sizeof(t->by_id));
    uv_check_init(loop, &t->flush_check);
    t->flush_check.data = t;
    uv_check_start(&t->flush_check, on_check);
    t->n_open_handles = 1;
    *out = t;
    return 0;
}

/*
 * Bursts of registrations must not be lost in the socket queue: 4 MiB each way. SO_RCVBUF
 * is capped by net.core.rmem_max (often 208 KiB); with CAP_NET_ADMIN the FORCE variants
 * pass the cap, without it the capped size is what the kernel gives.
 */
static void socket_buffers(uv_handle_t *h)
{
    uv_os_fd_t fd;
    int size = 4 * 1024 * 1024;
    if (uv_fileno(h, &fd) == 0) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    }
}

/* A UDP socket for addr with SO_REUSEPORT set, bound: one member of a group. */
static int reuseport_socket(const struct config_addr *addr)
{
    int one = 1;
    int fd = socket(addr->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (addr->ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int transport_udp_bind(struct transport_udp *t, uint8_t id, const struct config_addr *addr,
                       unsigned group)
{
    if (t->n_socks >= UDP_MAX_SOCKS || t->by_id[id] >= 0)
        return -EINVAL;
    struct udp_sock *s = &t->socks[t->n_socks];
    int fd = -1;
    if (group > 1) {
        fd = reuseport_socket(addr);
        if (fd < 0)
            return fd;
    }
    int rc = uv_udp_init_ex(t->loop, &s->handle,
                            (group > 1 ? AF_UNSPEC : (unsigned)addr->ss.ss_family) |
                                UV_UDP_RECVMMSG);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    s->handle.data = s;
    s->t = t;
    s->id = id;
    s->is_open = true;
    t->n_open_handles++;
    t->by_id[id] = (int8_t)t->n_socks++;
    if (group > 1) {
        /* The handle owns fd from here; closing the handle closes it. */
        rc = uv_udp_open(&s->handle, fd);
        if (rc < 0) {
            close(fd);
            return rc;
        }
        /* Attached by every member as it joins: the last program set counts, and until
         * the group is whole the kernel's own hash picks for an index not yet bound. */
        rc = reuseport_steer_attach(fd, group);
        if (rc < 0)
            return rc;
    } else {
        unsigned flags = addr->ss.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0;
        rc = uv_udp_bind(&s->handle, (const struct sockaddr *)&addr->ss, flags);
        if (rc < 0)
            return rc;
    }
    socket_buffers((uv_handle_t *)&s->handle);
    return uv_udp_recv_start(&s->handle, on_alloc, on_recv);
}

char *transport_udp_reserve(struct transport_udp *t, size_t *cap)
{
    if (t->n_tx == TX_BATCH || t->tx_used + TX_MSG_MAX > TX_ARENA)
        transport_udp_flush(t);
    *cap = TX_MSG_MAX;
    return t->tx_arena + t->tx_used;
}

void transport_udp_commit(struct transport_udp *t, uint8_t id, const struct sockaddr *dst,
                          size_t len)
{
    if (t->by_id[id] < 0 || len == 0 || len > TX_MSG_MAX) {
        t->st.tx_dropped++;
        return;
    }
    struct tx_entry *e = &t->tx[t->n_tx];
    e->id = id;
    e->off = t->tx_used;
    e->len = (uint32_t)len;
    if (dst->sa_family == AF_INET) {
        memcpy(&e->dst.in, dst, sizeof(e->dst.in));
        e->dst_len = sizeof(e->dst.in);
    } else {
        memcpy(&e->dst.in6, dst, sizeof(e->dst.in6));
        e->dst_len = sizeof(e->dst.in6);
    }
    t->tx_used += (uint32_t)len;
    t->n_tx++;
}

char *transport_udp_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap)
{
    (void)d; /* every datagram shares the batch; the destination is only stored at commit */
    return transport_udp_reserve(ctx, cap);
}

int transport_udp_tx_commit(void *ctx, const struct tx_dest *d, size_t len)
{
    struct transport_udp *t = ctx;
    int rc = 0;
    if (t->by_id[d->sock] < 0)
        rc = -ENOENT;
    else if (len > TX_MSG_MAX)
        rc = -EMSGSIZE;
    transport_udp_commit(t, d->sock, d->addr, len); /* counts a drop on the same terms */
    return rc;
}

void transport_udp_flush(struct transport_udp *t)
{
    unsigned i = 0;
    while (i < t->n_tx) {
        /* One sendmmsg per run of messages for the same socket. */
        unsigned j = i;
        uint8_t id = t->tx[i].id;
        while (j < t->n_tx && t->tx[j].id == id) {
            struct tx_entry *e = &t->tx[j];
            t->iov[j].iov_base = t->tx_arena + e->off;
            t->iov[j].iov_len = e->len;
            memset(&t->mmsg[j], 0, sizeof(t->mmsg[j]));
            t->mmsg[j].msg_hdr.msg_name = &e->dst;
            t->mmsg[j].msg_hdr.msg_namelen = e->dst_len;
            t->mmsg[j].msg_hdr.msg_iov = &t->iov[j];
            t->mmsg[j].msg_hdr.msg_iovlen = 1;
            j++;
        }
        struct udp_sock *s = &t->socks[t->by_id[id]];
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&s->handle, &fd) == 0) {
            unsigned k = i;
            while (k < j) {
                int n = sendmmsg(fd, &t->mmsg[k], j - k, MSG_DONTWAIT);
                t->st.tx_syscalls++;
                if (n < 0) {
                    if (errno == EINTR)
                        continue;
                    /* EAGAIN or a per-destination error: skip the first message, go on. */
                    t->st.tx_dropped++;
                    k++;
                    continue;
                }
                t->st.tx_datagrams += (uint64_t)n;
                k += (unsigned)n;
            }
        } else {
            t->st.tx_dropped += j - i;
        }
        i = j;
    }
    t->n_tx = 0;
    t->tx_used = 0;
}

const struct transport_udp_stats *transport_udp_stats(const struct transport_udp *t)
{
    return &t->st;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct transport_udp *t;
    if (h->type == UV_CHECK)
        t = h->data;
    else
        t = ((struct udp_sock *)h->data)->t;
    if (--t->n_open_handles == 0) {
        transport_udp_close_cb cb = t->close_cb;
        void *ctx = t->close_ctx;
        free(t->rx_buf);
        free(t);
        if (cb)
            cb(ctx);
    }
}

void transport_udp_close(struct transport_udp *t, transport_udp_close_cb cb, void *ctx)
{
    transport_udp_flush(t);
    t->close_cb = cb;
    t->close_ctx = ctx;
    for (unsigned i = 0; i < t->n_socks; i++) {
        if (t->socks[i].is_open) {
            t->socks[i].is_open = false;
            uv_close((uv_handle_t *)&t->socks[i].handle, on_handle_closed);
        }
    }
    uv_close((uv_handle_t *)&t->flush_check, on_handle_closed);
}
