/*
 * mpsc: the bounded multi-producer single-consumer queue that carries messages from any
 * thread to one worker's loop thread (the handoff between workers). Lock-free so a producer
 * never waits for the consumer or for another producer to be scheduled, and allocated once
 * so the per-message path never touches the allocator.
 *
 * Each cell's sequence number says whose turn it is. For the cell of position pos:
 *   seq == pos       free: the producer that claims pos may write it;
 *   seq == pos + 1   written: the consumer at pos may take it;
 *   seq == pos + cap taken: free again, for the producer of position pos + cap.
 * Positions only grow (a 64-bit size_t does not wrap in practice; the signed difference
 * below would survive it anyway).
 */
#include "sipedge/mpsc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The cell's sequence is at its start; the message follows it. */
static inline atomic_size_t *cell_seq(const struct mpsc *q, size_t pos)
{
    return (atomic_size_t *)(void *)(q->cells + (pos & q->mask) * q->stride);
}

static inline unsigned char *cell_msg(const struct mpsc *q, size_t pos)
{
    return q->cells + (pos & q->mask) * q->stride + sizeof(atomic_size_t);
}

int mpsc_init(struct mpsc *q, size_t capacity, size_t msg_size)
{
    memset(q, 0, sizeof(*q));
    if (capacity < 2 || (capacity & (capacity - 1)) != 0 || msg_size == 0)
        return -EINVAL;
    /* A capacity of 1 would make "taken" (pos + 1) read as "free" for the next lap. */
    const size_t align = alignof(atomic_size_t);
    if (msg_size > SIZE_MAX / 2 - sizeof(atomic_size_t) - align)
        return -EINVAL;
    size_t stride = (sizeof(atomic_size_t) + msg_size + align - 1) & ~(align - 1);
    if (capacity > (SIZE_MAX - MPSC_LINE) / stride)
        return -EINVAL;
    /* aligned_alloc wants a multiple of the alignment. */
    size_t bytes = (capacity * stride + MPSC_LINE - 1) & ~(size_t)(MPSC_LINE - 1);
    unsigned char *cells = aligned_alloc(MPSC_LINE, bytes);
    if (cells == NULL)
        return -ENOMEM;
    q->cells = cells;
    q->mask = capacity - 1;
    q->msg_size = msg_size;
    q->stride = stride;
    for (size_t i = 0; i < capacity; i++)
        atomic_init(cell_seq(q, i), i);
    atomic_init(&q->enq, 0);
    q->deq = 0;
    /* The threads that use q are started after this, which orders these plain writes. */
    return 0;
}

void mpsc_free(struct mpsc *q)
{
    free(q->cells);
    q->cells = NULL;
}

bool mpsc_push(struct mpsc *q, const void *msg)
{
    /* Relaxed: the position is only a guess to start from; the CAS below validates it. */
    size_t pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
    for (;;) {
        atomic_size_t *seq = cell_seq(q, pos);
        /* Acquire: pairs with the consumer's release when it handed this cell back, so its
         * read of the previous lap's message is done before we overwrite the bytes. */
        size_t s = atomic_load_explicit(seq, memory_order_acquire);
        intptr_t diff = (intptr_t)(s - pos);
        if (diff == 0) {
            /* Relaxed: the CAS only decides which producer owns pos. Nothing is published
             * through enq; the cell's sequence carries the message to the consumer. A
             * failed CAS reloads pos and we look at the cell again. */
            if (atomic_compare_exchange_weak_explicit(&q->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                memcpy(cell_msg(q, pos), msg, q->msg_size);
                /* Release: the message bytes are visible to whoever acquires seq == pos + 1
                 * (the consumer). */
                atomic_store_explicit(seq, pos + 1, memory_order_release);
                return true;
            }
        } else if (diff < 0) {
            /* The cell still holds the message of the previous lap: the ring is full. */
            return false;
        } else {
            /* Another producer claimed pos already; start again from the current one.
             * Relaxed, as above. */
            pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
        }
    }
}

bool mpsc_pop(struct mpsc *q, void *out)
{
    size_t pos = q->deq;
    atomic_size_t *seq = cell_seq(q, pos);
    /* Acquire: pairs with the producer's release, so the message bytes it wrote are
     * visible before we copy them. */
    size_t s = atomic_load_explicit(seq, memory_order_acquire);
    if (s != pos + 1)
        return false; /* empty, or claimed and not yet written */
    memcpy(out, cell_msg(q, pos), q->msg_size);
    /* Release: our copy of the bytes happens before the producer of the next lap (which
     * acquires this value) writes over them. */
    atomic_store_explicit(seq, pos + q->mask + 1, memory_order_release);
    q->deq = pos + 1;
    return true;
}
