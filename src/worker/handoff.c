/*
 * handoff: the queue a worker's loop receives work on from other threads (other workers in
 * the N-worker design). The producers never block and never allocate: a message is copied
 * into an mpsc ring and the owner's loop is woken through a uv_async_t; the loop drains a
 * bounded batch per wake, so a producer that never stops cannot starve the loop's I/O.
 *
 * Wake-up policy: every accepted send calls uv_async_send. libuv coalesces it: a send
 * while a wake is pending is one relaxed load of the handle's pending flag and returns; the
 * eventfd write(2) happens only when the flag goes from idle to pending, at most once per
 * callback run (libuv clears the flag before it calls us). Waking only on an empty to
 * non-empty transition would save no syscalls over that, but needs the producers to read
 * the consumer's position (one more shared line per message) and is easy to get wrong: the
 * ring reads as empty while a preempted producer holds an unwritten cell, and that
 * producer's own send after it publishes is what guarantees its message (and the ones
 * behind it) are delivered. Always sending keeps that guarantee obvious.
 *
 * Counters: "sent" is the ring's enqueue position (no extra write per message);
 * dropped_full is written only on the full path; delivered and wakeups have one writer, the
 * loop thread, on a line of their own.
 */
#include "worker/handoff.h"

#include <errno.h>
#include <stdlib.h>

/* One writer: a relaxed load and store instead of a read-modify-write. */
static inline void add_relaxed(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

size_t handoff_drain(struct handoff *h, size_t max)
{
    size_t n = 0;
    while (n < max && mpsc_pop(&h->q, h->msg)) {
        n++;
        h->on_msg(h->ctx, h->msg);
    }
    if (n > 0)
        add_relaxed(&h->delivered, n);
    return n;
}

static void on_async(uv_async_t *a)
{
    struct handoff *h = a->data;
    add_relaxed(&h->wakeups, 1);
    size_t n = handoff_drain(h, HANDOFF_BATCH);
    /* A full batch: more may remain. Let the loop poll its I/O, then come back. When the
     * batch stopped short the ring read as empty; any message pushed since (or held by a
     * producer still writing its cell) comes with a send that wakes us again. */
    if (n == HANDOFF_BATCH && !uv_is_closing((uv_handle_t *)a))
        uv_async_send(a);
}

int handoff_init(struct handoff *h, uv_loop_t *loop, size_t capacity, size_t msg_size,
                 handoff_msg_cb on_msg, void *ctx)
{
    if (on_msg == NULL)
        return -EINVAL;
    int rc = mpsc_init(&h->q, capacity, msg_size);
    if (rc != 0)
        return rc;
    h->msg = malloc(msg_size);
    if (h->msg == NULL) {
        mpsc_free(&h->q);
        return -ENOMEM;
    }
    h->loop = loop;
    h->on_msg = on_msg;
    h->ctx = ctx;
    h->close_cb = NULL;
    atomic_init(&h->dropped_full, 0);
    atomic_init(&h->delivered, 0);
    atomic_init(&h->wakeups, 0);
    rc = uv_async_init(loop, &h->async, on_async);
    if (rc != 0) {
        free(h->msg);
        mpsc_free(&h->q);
        return rc;
    }
    h->async.data = h;
    return 0;
}

bool handoff_send(struct handoff *h, const void *msg)
{
    if (!mpsc_push(&h->q, msg)) {
        /* Relaxed: a statistic, ordered with nothing. */
        atomic_fetch_add_explicit(&h->dropped_full, 1, memory_order_relaxed);
        /* No wake: every message in the full ring came with its own send. */
        return false;
    }
    uv_async_send(&h->async);
    return true;
}

void handoff_stats(const struct handoff *h, struct handoff_stats *out)
{
    out->sent = mpsc_pushed(&h->q);
    out->dropped_full =
        atomic_load_explicit((_Atomic uint64_t *)&h->dropped_full, memory_order_relaxed);
    out->delivered = atomic_load_explicit((_Atomic uint64_t *)&h->delivered, memory_order_relaxed);
    out->wakeups = atomic_load_explicit((_Atomic uint64_t *)&h->wakeups, memory_order_relaxed);
}

static void on_closed(uv_handle_t *hd)
{
    struct handoff *h = hd->data;
    free(h->msg);
    h->msg = NULL;
    mpsc_free(&h->q);
    if (h->close_cb != NULL)
        h->close_cb(h);
}

void handoff_close(struct handoff *h, handoff_close_cb cb)
{
    h->close_cb = cb;
    uv_close((uv_handle_t *)&h->async, on_closed);
}
