/*
 * mpsc: a bounded lock-free queue of fixed-size messages with any number of producer
 * threads and one consumer thread (Dmitry Vyukov's bounded array queue, with the consumer
 * side reduced to one thread).
 *
 * The ring is a power-of-two array of cells, allocated once by mpsc_init. Each cell holds a
 * sequence number and msg_size bytes. A producer claims the next position with a CAS on the
 * enqueue position, copies its message into the cell and publishes it by advancing the
 * cell's sequence; the consumer takes the cell at its own position when the sequence says
 * it is written, and hands it back to the producers of the next lap by advancing the
 * sequence again. mpsc_push never blocks and never allocates: a full ring refuses the
 * message, and the caller counts the drop.
 *
 * The enqueue position (producers) and the dequeue position (consumer) sit on cache lines of
 * their own, apart from the read-only fields, so per message a producer writes only the
 * enqueue line and its cell, and the consumer only its cell (its position is its own line).
 *
 * Ordering: messages from one producer come out in the order it pushed them. A producer
 * that has claimed a position but not yet written its cell holds back the messages behind
 * it: mpsc_pop reports empty until that cell is written, then everything behind it comes.
 */
#ifndef SIPEDGE_MPSC_H
#define SIPEDGE_MPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define MPSC_LINE 64

struct mpsc {
    /* Read-only after mpsc_init. */
    unsigned char *cells;
    size_t mask;     /* capacity - 1 */
    size_t msg_size; /* bytes copied per message */
    size_t stride;   /* bytes per cell: the sequence, the message, padding */
    /* Next position to claim; producers CAS it. */
    alignas(MPSC_LINE) atomic_size_t enq;
    /* Next position to take; the consumer's alone. */
    alignas(MPSC_LINE) size_t deq;
    alignas(MPSC_LINE) char pad_end; /* keeps what follows the struct off the deq line */
};

/*
 * Allocates a ring of capacity cells (a power of two, at least 2) of msg_size bytes each
 * (at least 1). Returns 0, -EINVAL for a bad capacity or size, -ENOMEM.
 */
int mpsc_init(struct mpsc *q, size_t capacity, size_t msg_size);

/* Frees the ring. No thread may use q during or after this. */
void mpsc_free(struct mpsc *q);

/*
 * Any thread: copies msg_size bytes of msg into the ring. Returns false, leaving the ring as
 * it was, when the ring is full.
 */
bool mpsc_push(struct mpsc *q, const void *msg);

/* The consumer thread only: copies the oldest message into out. False when empty. */
bool mpsc_pop(struct mpsc *q, void *out);

/* Positions claimed so far, i.e. messages mpsc_push accepted (any thread; relaxed). */
static inline size_t mpsc_pushed(const struct mpsc *q)
{
    return atomic_load_explicit((atomic_size_t *)&q->enq, memory_order_relaxed);
}

#endif
