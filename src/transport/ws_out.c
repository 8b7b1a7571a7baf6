/*
 * ws_out: where outgoing WebSocket messages live between the producer writing them and
 * lws_write framing them: an arena of 256 KiB blocks that messages are carved from in
 * order, and the per-connection queues that link them. It exists so a message is
 * written once, in place behind its frame headroom, with no malloc and no copy per
 * message; it has no lws types so the unit tests can drive it without a network.
 *
 * Block life: a block is "current" while messages are carved from it. Each committed
 * message holds a reference; when the current block is too full for one more
 * reservation of TX_MSG_MAX it is retired and a new one becomes current. A retired block
 * goes back to the free list (at most WS_BLOCK_FREE_MAX, the rest are freed) when its
 * last message has been written. A current block whose messages have all been written
 * starts again from its beginning, so a server that keeps up touches the same few
 * kilobytes over and over.
 *
 * Slow peers: a message normally stays in its block only until the connection's next
 * writeable callback, one loop iteration. A socket that is choked would keep its
 * messages there for as long as the peer does not read, and one small message would pin
 * a whole block; so a queue left choked is moved to the heap (one copy per message, for
 * slow connections only) and stays there until it drains.
 */
#include "ws_out.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport_ws_internal.h"

struct ws_block {
    struct ws_block *next_free;
    uint32_t refs; /* committed messages not yet written or freed */
    uint32_t used; /* bytes carved from data */
    _Alignas(16) unsigned char data[];
};

#define WS_ALIGN(n) (((n) + 15u) & ~(size_t)15u)
#define WS_BLOCK_DATA (WS_BLOCK_SIZE - offsetof(struct ws_block, data))

static size_t ws_msg_hdr(void)
{
    return WS_ALIGN(sizeof(struct ws_msg));
}

/* Bytes a message of len takes in a block or on the heap. */
static size_t ws_msg_size(const struct ws_arena *a, size_t len)
{
    return WS_ALIGN(ws_msg_hdr() + a->pre + len);
}

unsigned char *ws_msg_payload(const struct ws_arena *a, struct ws_msg *m)
{
    return (unsigned char *)m + ws_msg_hdr() + a->pre;
}

void ws_arena_init(struct ws_arena *a, size_t pre)
{
    memset(a, 0, sizeof(*a));
    a->pre = pre;
}

static void ws_block_drop(struct ws_arena *a, struct ws_block *b)
{
    if (a->n_free < WS_BLOCK_FREE_MAX) {
        b->used = 0;
        b->next_free = a->free;
        a->free = b;
        a->n_free++;
    } else {
        free(b);
        a->n_blocks--;
    }
}

void ws_arena_destroy(struct ws_arena *a)
{
    if (a->cur) {
        free(a->cur);
        a->n_blocks--;
    }
    a->cur = NULL;
    while (a->free) {
        struct ws_block *b = a->free;
        a->free = b->next_free;
        free(b);
        a->n_blocks--;
    }
    a->n_free = 0;
    a->open = NULL;
}

char *ws_arena_reserve(struct ws_arena *a, size_t *cap)
{
    size_t need = ws_msg_size(a, TX_MSG_MAX);
    struct ws_block *b = a->cur;
    if (b && b->refs == 0)
        b->used = 0; /* everything in it has been written: start over, still warm */
    if (b && WS_BLOCK_DATA - b->used < need) {
        a->cur = NULL; /* retired: its last release recycles it */
        b = NULL;
    }
    if (!b) {
        if (a->free) {
            b = a->free;
            a->free = b->next_free;
            a->n_free--;
        } else {
            b = malloc(WS_BLOCK_SIZE);
            if (!b)
                return NULL;
            a->n_blocks++;
        }
        b->next_free = NULL;
        b->refs = 0;
        b->used = 0;
        a->cur = b;
    }
    struct ws_msg *m = (struct ws_msg *)(b->data + b->used);
    m->next = NULL;
    m->blk = b;
    m->len = 0;
    m->is_binary = false;
    a->open = m;
    *cap = TX_MSG_MAX;
    return (char *)ws_msg_payload(a, m);
}

void ws_arena_cancel(struct ws_arena *a)
{
    a->open = NULL;
}

static void ws_msg_release(struct ws_arena *a, struct ws_msg *m)
{
    struct ws_block *b = m->blk;
    if (!b) {
        free(m);
        return;
    }
    if (--b->refs == 0 && b != a->cur)
        ws_block_drop(a, b);
}

static void ws_outq_push(struct ws_outq *q, struct ws_msg *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->bytes += m->len;
}

/* A heap copy of m's header and payload, or NULL. */
static struct ws_msg *ws_msg_to_heap(struct ws_arena *a, const struct ws_msg *m)
{
    struct ws_msg *h = malloc(ws_msg_size(a, m->len));
    if (!h)
        return NULL;
    h->next = NULL;
    h->blk = NULL;
    h->len = m->len;
    h->is_binary = m->is_binary;
    memcpy(ws_msg_payload(a, h), ws_msg_payload(a, (struct ws_msg *)m), m->len);
    a->n_slow_copies++;
    return h;
}

int ws_outq_commit(struct ws_arena *a, struct ws_outq *q, size_t len)
{
    struct ws_msg *m = a->open;
    a->open = NULL;
    m->len = (uint32_t)len;
    /*
     * RFC 7118 §5: text or binary. A text frame must carry valid UTF-8 (RFC 6455 §5.6),
     * and browsers fail the connection otherwise, so a message that is not UTF-8 goes
     * binary. The scan runs here, once, right after the producer wrote the bytes and
     * while they are still in cache; the writeable callback that frames them may come
     * a loop iteration later, and would otherwise read them from memory a second time.
     */
    m->is_binary = !transport_ws_is_utf8(ws_msg_payload(a, m), len);
    if (q->is_slow) {
        struct ws_msg *h = ws_msg_to_heap(a, m);
        if (!h)
            return -ENOMEM;
        ws_outq_push(q, h); /* the block space is not consumed: the reservation is reused */
        return 0;
    }
    m->blk->refs++;
    m->blk->used += (uint32_t)ws_msg_size(a, len);
    ws_outq_push(q, m);
    return 0;
}

static void ws_outq_pop(struct ws_arena *a, struct ws_outq *q)
{
    struct ws_msg *m = q->head;
    q->head = m->next;
    if (!q->head) {
        q->tail = NULL;
        q->is_slow = false; /* drained: back to the arena */
    }
    q->bytes -= m->len;
    ws_msg_release(a, m);
}

int ws_outq_drain(struct ws_arena *a, struct ws_outq *q, unsigned max, const struct ws_writer *w,
                  uint64_t *tx_messages, uint64_t *tx_bytes)
{
    for (unsigned n = 0; n < max && q->head; n++) {
        struct ws_msg *m = q->head;
        int wr = w->write(w->ctx, ws_msg_payload(a, m), m->len, m->is_binary);
        if (wr < (int)m->len)
            return -EIO;
        (*tx_messages)++;
        *tx_bytes += m->len;
        ws_outq_pop(a, q);
        if (w->is_choked(w->ctx)) {
            if (q->head)
                ws_outq_evacuate(a, q);
            break;
        }
    }
    return 0;
}

void ws_outq_evacuate(struct ws_arena *a, struct ws_outq *q)
{
    struct ws_msg **link = &q->head;
    struct ws_msg *prev = NULL;
    while (*link) {
        struct ws_msg *m = *link;
        if (m->blk) {
            struct ws_msg *h = ws_msg_to_heap(a, m);
            if (h) {
                h->next = m->next;
                *link = h;
                ws_msg_release(a, m);
                m = h;
            }
        }
        prev = m;
        link = &m->next;
    }
    q->tail = prev;
    if (q->head)
        q->is_slow = true;
}

void ws_outq_free(struct ws_arena *a, struct ws_outq *q)
{
    struct ws_msg *m = q->head;
    while (m) {
        struct ws_msg *next = m->next;
        ws_msg_release(a, m);
        m = next;
    }
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->is_slow = false;
}
