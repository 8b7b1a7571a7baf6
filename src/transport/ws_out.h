/*
 * ws_out: the WebSocket transport's output memory and per-connection output queues,
 * without lws types (the headroom size and the write function come in from the caller),
 * so the unit tests drive it with a fake socket.
 *
 * A message is written once, by its producer, into memory lent from an arena of large
 * blocks; the lent memory has the frame headroom (LWS_PRE) in front of it, so lws_write
 * frames it in place. Blocks are reference-counted by the messages carved from them and
 * go back to a small free list when the last one has been written. A connection whose
 * socket is choked holds its queue on the heap instead (see ws_outq_evacuate), so a slow
 * peer never pins a whole block.
 */
#ifndef SIPEDGE_WS_OUT_H
#define SIPEDGE_WS_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/transport.h"

#define WS_BLOCK_SIZE (256 * 1024) /* one arena block, header included */
#define WS_BLOCK_FREE_MAX 4        /* empty blocks kept for reuse; more are freed */

struct ws_block;

/* One queued message. The frame headroom and the payload follow the header. */
struct ws_msg {
    struct ws_msg *next;
    struct ws_block *blk; /* the arena block it lives in; NULL: its own heap allocation */
    uint32_t len;
    bool is_binary;
};

struct ws_arena {
    size_t pre;            /* headroom in front of every payload (LWS_PRE) */
    struct ws_block *cur;  /* the block messages are carved from */
    struct ws_block *free; /* empty blocks for reuse */
    unsigned n_free;
    struct ws_msg *open;    /* the open reservation, NULL when none */
    uint64_t n_blocks;      /* gauge: blocks allocated (current, retired, free) */
    uint64_t n_slow_copies; /* messages copied to the heap for a choked connection */
};

struct ws_outq {
    struct ws_msg *head;
    struct ws_msg *tail;
    uint32_t bytes; /* payload bytes queued: the bound applies to this */
    bool is_slow;   /* the socket was choked with messages left: queue on the heap */
};

/* The socket side, lws_write and lws_send_pipe_choked in the transport. */
struct ws_writer {
    /* Writes one frame from buf (pre bytes of headroom in front of it are writable).
     * Returns the bytes taken, or a negative value. */
    int (*write)(void *ctx, unsigned char *buf, size_t len, bool is_binary);
    /* Whether the socket takes no more now. */
    bool (*is_choked)(void *ctx);
    void *ctx;
};

void ws_arena_init(struct ws_arena *a, size_t pre);
/* Frees every block; no message may be queued any more. */
void ws_arena_destroy(struct ws_arena *a);

/* Lends at least TX_MSG_MAX bytes with a->pre bytes of headroom in front, or NULL when
 * no block can be had. The reservation stays open until ws_outq_commit or
 * ws_arena_cancel. */
char *ws_arena_reserve(struct ws_arena *a, size_t *cap);
/* Drops the open reservation (nothing is queued). */
void ws_arena_cancel(struct ws_arena *a);

/*
 * Queues the first len bytes (1..TX_MSG_MAX) of the open reservation on q, deciding text
 * or binary from one UTF-8 scan of them. A slow queue gets a heap copy and the
 * reservation is given back. Returns 0 or -ENOMEM (that copy failed; nothing queued).
 */
int ws_outq_commit(struct ws_arena *a, struct ws_outq *q, size_t len);

/*
 * Writes up to max messages from the head of q, in order, until the writer is choked.
 * A written message is released at once (lws keeps what the kernel did not take in its
 * own buffer). *tx_messages and *tx_bytes grow by what was written. Returns 0, or -EIO
 * when a write failed or took less than the whole frame: that message stays queued and
 * the caller drops the connection. When the writer is left choked with messages
 * queued, the queue is evacuated.
 */
int ws_outq_drain(struct ws_arena *a, struct ws_outq *q, unsigned max, const struct ws_writer *w,
                  uint64_t *tx_messages, uint64_t *tx_bytes);

/* Moves q's messages that sit in arena blocks to the heap and marks q slow: until q
 * drains, later messages go to the heap as well. A copy that fails leaves its message
 * where it is. */
void ws_outq_evacuate(struct ws_arena *a, struct ws_outq *q);

/* Whether len more bytes would take q over its bound of max payload bytes (the policy's
 * ws_out_queue_max_bytes): the connection is then too slow. */
static inline bool ws_outq_is_over(const struct ws_outq *q, size_t len, uint32_t max)
{
    return (uint64_t)q->bytes + len > max;
}

/* Releases every message of q. */
void ws_outq_free(struct ws_arena *a, struct ws_outq *q);

/* The payload of m (after the headroom). */
unsigned char *ws_msg_payload(const struct ws_arena *a, struct ws_msg *m);

#endif
