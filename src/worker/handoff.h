/*
 * handoff: messages from any thread to one worker's loop. A bounded mpsc ring of
 * fixed-size messages plus a uv_async_t that wakes the owning loop, which drains the ring
 * and calls on_msg for each message on the loop thread, in per-producer order.
 *
 * Threads:
 *   - handoff_send and handoff_stats: any thread, while the handoff is open;
 *   - handoff_init, handoff_drain and handoff_close: the owning loop's thread only.
 * Every producer must have stopped calling handoff_send before handoff_close is called
 * (as with any uv_async_t, a send after close is a use after free).
 */
#ifndef SIPEDGE_HANDOFF_H
#define SIPEDGE_HANDOFF_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sipedge/mpsc.h"

/* Messages one wake delivers at most before it yields the loop and wakes itself again: as
 * many as one UDP transmit batch (TX_BATCH), so a busy producer costs the loop's I/O at most
 * one batch of message callbacks per turn. */
#define HANDOFF_BATCH 64

struct handoff;
/* On the loop thread; msg (msg_size bytes) is valid only during the call. */
typedef void (*handoff_msg_cb)(void *ctx, const void *msg);
typedef void (*handoff_close_cb)(struct handoff *h);

struct handoff_stats {
    uint64_t sent;         /* messages handoff_send queued */
    uint64_t dropped_full; /* messages handoff_send refused: the ring was full */
    uint64_t delivered;    /* messages given to on_msg */
    uint64_t wakeups;      /* runs of the async callback (coalesced sends, and re-arms) */
};

struct handoff {
    struct mpsc q;
    uv_async_t async;
    uv_loop_t *loop;
    handoff_msg_cb on_msg;
    void *ctx;
    handoff_close_cb close_cb;
    unsigned char *msg; /* the loop's copy of the message being delivered */
    /* Written by producers, only when the ring is full. */
    alignas(64) _Atomic uint64_t dropped_full;
    /* Written by the loop thread only; read by anyone. */
    alignas(64) _Atomic uint64_t delivered;
    _Atomic uint64_t wakeups;
};

/*
 * Loop thread: capacity is a power of two (at least 2), msg_size the bytes each message
 * copies. Returns 0, -EINVAL, -ENOMEM or a libuv error; on error nothing is left to close.
 */
int handoff_init(struct handoff *h, uv_loop_t *loop, size_t capacity, size_t msg_size,
                 handoff_msg_cb on_msg, void *ctx);

/* Any thread: queues msg_size bytes of msg and wakes the loop. False when the ring is full
 * (counted in dropped_full); never blocks, never allocates. */
bool handoff_send(struct handoff *h, const void *msg);

/* Loop thread: delivers up to max queued messages now; returns how many. */
size_t handoff_drain(struct handoff *h, size_t max);

/* Any thread: the counters (each read relaxed; together they are not one snapshot). */
void handoff_stats(const struct handoff *h, struct handoff_stats *out);

/* Loop thread: closes the async handle; messages still queued are discarded (drain first to
 * keep them). cb (may be NULL) runs on the loop once the ring is freed. */
void handoff_close(struct handoff *h, handoff_close_cb cb);

#endif
