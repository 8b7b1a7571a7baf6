/*
 * transport_udp: a worker's UDP sockets on its libuv loop.
 *
 * Receives with recvmmsg (libuv UV_UDP_RECVMMSG, up to 16 datagrams per syscall into
 * one reused buffer) and hands each datagram to one callback with the id of the socket
 * it arrived on. Sends are batched: callers reserve space in the transmit batch, write
 * the message there once, and commit it; the batch goes out with sendmmsg once per
 * loop iteration (uv_check) or when it fills up. UDP sends that would block are
 * dropped and counted, never queued without bound. Loop thread only.
 *
 * transport_udp_tx_reserve/transport_udp_tx_commit are the same two steps in the shape
 * of the output contract (transport.h), so a struct tx_out can point straight at them.
 */
#ifndef SIPEDGE_TRANSPORT_UDP_H
#define SIPEDGE_TRANSPORT_UDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sipedge/config.h"
#include "sipedge/transport.h"

typedef void (*transport_udp_recv_cb)(void *ctx, uint8_t sock, const char *buf, size_t len,
                                      const struct sockaddr *src);
typedef void (*transport_udp_close_cb)(void *ctx);

struct transport_udp;

struct transport_udp_stats {
    uint64_t rx_datagrams;
    uint64_t rx_syscalls;
    uint64_t tx_datagrams;
    uint64_t tx_syscalls;
    uint64_t tx_dropped;
};

/* Returns 0 or -ENOMEM. */
int transport_udp_new(struct transport_udp **out, uv_loop_t *loop, transport_udp_recv_cb cb,
                      void *ctx);

/* Binds socket id (any value, unique) to addr and starts receiving. group > 1: the socket
 * joins an SO_REUSEPORT group of that many members (one per worker, bound in worker order)
 * steered by source address (reuseport_steer.h); 0 or 1: a socket of its own.
 * Returns 0 or a negative errno (e.g. -EADDRINUSE). */
int transport_udp_bind(struct transport_udp *t, uint8_t id, const struct config_addr *addr,
                       unsigned group);

/* Lends at least 65535 bytes of the transmit batch; valid until the next commit/flush. */
char *transport_udp_reserve(struct transport_udp *t, size_t *cap);
/* Queues the first len bytes of the last reservation for dst on socket id. */
void transport_udp_commit(struct transport_udp *t, uint8_t id, const struct sockaddr *dst,
                          size_t len);
/*
 * The output contract (struct tx_out, ctx is the struct transport_udp): reserve lends
 * the batch memory whatever d names (the destination is needed only at commit);
 * commit queues the first len bytes for d->addr on socket d->sock, as
 * transport_udp_commit does. commit returns 0 (also for len 0, which sends nothing and
 * counts a drop as transport_udp_commit does), -ENOENT for an unbound socket id or
 * -EMSGSIZE for len over TX_MSG_MAX. A failure of the later sendmmsg is counted in
 * tx_dropped, never reported here.
 */
char *transport_udp_tx_reserve(void *ctx, const struct tx_dest *d, size_t *cap);
int transport_udp_tx_commit(void *ctx, const struct tx_dest *d, size_t len);
/* Sends everything queued. */
void transport_udp_flush(struct transport_udp *t);

const struct transport_udp_stats *transport_udp_stats(const struct transport_udp *t);

/* Closes every handle; cb(ctx) runs once all are closed, then the object is freed. */
void transport_udp_close(struct transport_udp *t, transport_udp_close_cb cb, void *ctx);

#endif
