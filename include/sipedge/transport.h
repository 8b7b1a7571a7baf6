/*
 * transport: the one output contract every transport offers (UDP today, WebSocket, and
 * the stream transports to come), so a message is written once, straight into the
 * memory it leaves from, and the code that writes it never asks which transport it is.
 *
 *   size_t cap;
 *   struct tx_dest d = tx_dest_conn(ref);       // or tx_dest_udp(sock, addr)
 *   char *buf = out->reserve(out->ctx, &d, &cap);
 *   if (buf) {
 *       size_t len = write_message(buf, cap);
 *       out->commit(out->ctx, &d, len);          // len 0: nothing sent
 *   }
 *
 * reserve lends at least TX_MSG_MAX bytes for one message to d, or returns NULL when d
 * cannot take one now (a connection that is gone, or whose queue is over its bound).
 * The lent memory is the transmit memory itself: the UDP batch slot that sendmmsg will
 * send, or the WebSocket frame buffer behind its LWS_PRE headroom. One reservation is
 * open at a time; it stays valid until the matching commit, which queues its first len
 * bytes and returns 0 or a negative errno. No libuv or libwebsockets types here.
 */
#ifndef SIPEDGE_TRANSPORT_H
#define SIPEDGE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The largest message any transport takes (a UDP datagram's payload). */
#define TX_MSG_MAX 65535

/* Where one outgoing message goes: a connection, or a datagram on a UDP socket. */
struct tx_dest {
    uint64_t conn;               /* connection reference; 0: a datagram */
    const struct sockaddr *addr; /* datagram: the destination */
    uint8_t sock;                /* datagram: the socket id */
};

struct tx_out {
    char *(*reserve)(void *ctx, const struct tx_dest *d, size_t *cap);
    int (*commit)(void *ctx, const struct tx_dest *d, size_t len);
    void *ctx;
};

static inline struct tx_dest tx_dest_udp(uint8_t sock, const struct sockaddr *addr)
{
    struct tx_dest d = {.conn = 0, .addr = addr, .sock = sock};
    return d;
}

static inline struct tx_dest tx_dest_conn(uint64_t conn)
{
    struct tx_dest d = {.conn = conn, .addr = NULL, .sock = 0};
    return d;
}

#endif
