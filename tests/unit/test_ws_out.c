/*
 * ws_out: the WebSocket output arena and queues, driven with a fake socket (no lws, no
 * network): order and content per connection, the queue bound, blocks recycled, frames
 * written short, and choked sockets moving their queue to the heap.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "transport/ws_out.h"

#define PRE 16

/* A fake socket: records every frame, takes short writes or chokes on demand. */
struct sock {
    char got[64][256];
    size_t got_len[64];
    bool got_binary[64];
    unsigned n_got;
    int short_by;    /* > 0: the next write takes this many bytes less */
    int choke_after; /* > 0: choked once this many frames were written */
    unsigned n_written;
    bool is_headroom_ok; /* every frame had PRE writable bytes in front */
};

static int sock_write(void *ctx, unsigned char *buf, size_t len, bool is_binary)
{
    struct sock *s = ctx;
    /* lws writes the frame header into the headroom: do the same, so a message that
     * overlapped the one before it would show up as corrupt. */
    memset(buf - PRE, 0xee, PRE);
    if (s->short_by) {
        int n = (int)len - s->short_by;
        s->short_by = 0;
        return n;
    }
    if (s->n_got < 64 && len < sizeof(s->got[0])) {
        memcpy(s->got[s->n_got], buf, len);
        s->got_len[s->n_got] = len;
        s->got_binary[s->n_got] = is_binary;
        s->n_got++;
    }
    s->n_written++;
    return (int)len;
}

static bool sock_is_choked(void *ctx)
{
    struct sock *s = ctx;
    return s->choke_after && s->n_written >= (unsigned)s->choke_after;
}

static struct ws_writer writer(struct sock *s)
{
    return (struct ws_writer){.write = sock_write, .is_choked = sock_is_choked, .ctx = s};
}

static void put(struct ws_arena *a, struct ws_outq *q, const char *text)
{
    size_t cap;
    char *buf = ws_arena_reserve(a, &cap);
    assert_non_null(buf);
    assert_true(cap >= TX_MSG_MAX);
    size_t len = strlen(text);
    memcpy(buf, text, len);
    assert_int_equal(ws_outq_commit(a, q, len), 0);
}

static void put_size(struct ws_arena *a, struct ws_outq *q, size_t len, char fill)
{
    size_t cap;
    char *buf = ws_arena_reserve(a, &cap);
    assert_non_null(buf);
    memset(buf, fill, len);
    assert_int_equal(ws_outq_commit(a, q, len), 0);
}

static int drain(struct ws_arena *a, struct ws_outq *q, struct sock *s, unsigned max)
{
    struct ws_writer w = writer(s);
    uint64_t msgs = 0, bytes = 0;
    return ws_outq_drain(a, q, max, &w, &msgs, &bytes);
}

static void test_ws_out_keeps_order_and_content_per_connection(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q1 = {0}, q2 = {0};
    struct sock s1 = {0}, s2 = {0};
    char text[32];
    ws_arena_init(&a, PRE);
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), "one %d", i);
        put(&a, &q1, text);
        snprintf(text, sizeof(text), "two %d", i);
        put(&a, &q2, text);
    }
    assert_int_equal(drain(&a, &q2, &s2, 16), 0);
    assert_int_equal(drain(&a, &q1, &s1, 16), 0);
    assert_int_equal(drain(&a, &q1, &s1, 16), 0);
    assert_int_equal(drain(&a, &q2, &s2, 16), 0);
    assert_int_equal(s1.n_got, 20);
    assert_int_equal(s2.n_got, 20);
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), "one %d", i);
        assert_int_equal(s1.got_len[i], strlen(text));
        assert_memory_equal(s1.got[i], text, strlen(text));
        snprintf(text, sizeof(text), "two %d", i);
        assert_memory_equal(s2.got[i], text, strlen(text));
    }
    assert_null(q1.head);
    assert_int_equal(q1.bytes, 0);
    ws_arena_destroy(&a);
    assert_int_equal(a.n_blocks, 0);
}

static void test_ws_out_text_or_binary_from_one_scan(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q = {0};
    struct sock s = {0};
    ws_arena_init(&a, PRE);
    put(&a, &q, "SIP/2.0 200 OK\r\nFrom: \"J\xc3\xbcrgen\" <sip:j@x>\r\n\r\n");
    put(&a, &q, "SIP/2.0 200 OK\r\nX: \xff\r\n\r\n");
    assert_int_equal(drain(&a, &q, &s, 16), 0);
    assert_false(s.got_binary[0]);
    assert_true(s.got_binary[1]);
    ws_arena_destroy(&a);
}

static void test_ws_out_queue_bound_counts_payload_bytes(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q = {0};
    struct sock s = {0};
    ws_arena_init(&a, PRE);
    assert_false(ws_outq_is_over(&q, 1000, 1000));
    put_size(&a, &q, 600, 'a');
    put_size(&a, &q, 400, 'b');
    assert_int_equal(q.bytes, 1000);
    assert_false(ws_outq_is_over(&q, 0, 1000));
    assert_true(ws_outq_is_over(&q, 1, 1000));
    assert_int_equal(drain(&a, &q, &s, 1), 0);
    assert_int_equal(q.bytes, 400);
    assert_false(ws_outq_is_over(&q, 600, 1000));
    assert_true(ws_outq_is_over(&q, 601, 1000));
    ws_outq_free(&a, &q);
    assert_int_equal(q.bytes, 0);
    assert_null(q.head);
    ws_arena_destroy(&a);
}

static void test_ws_out_blocks_are_recycled(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q = {0};
    struct sock s = {0};
    ws_arena_init(&a, PRE);
    /* A server that keeps up: one block, reused from its start, however much goes out. */
    for (int i = 0; i < 100000; i++) {
        put_size(&a, &q, 1200, 'x');
        if (i % 3 == 2)
            assert_int_equal(drain(&a, &q, &s, 16), 0);
    }
    assert_int_equal(drain(&a, &q, &s, 16), 0);
    assert_int_equal(a.n_blocks, 1);
    /* A backlog spans blocks; once written they go to the free list and are reused. */
    struct ws_outq big = {0};
    for (int i = 0; i < 1000; i++)
        put_size(&a, &big, 4000, 'y');
    uint64_t peak = a.n_blocks;
    assert_true(peak >= 4000 * 1000 / WS_BLOCK_SIZE);
    while (big.head)
        assert_int_equal(drain(&a, &big, &s, 16), 0);
    assert_int_equal(a.n_blocks, 1 + WS_BLOCK_FREE_MAX); /* current + free list; rest freed */
    for (int i = 0; i < 150; i++)
        put_size(&a, &big, 4000, 'z');
    assert_int_equal(a.n_blocks, 1 + WS_BLOCK_FREE_MAX); /* no new block needed */
    ws_outq_free(&a, &big);
    ws_arena_destroy(&a);
    assert_int_equal(a.n_blocks, 0);
}

static void test_ws_out_short_write_keeps_message_and_order(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q = {0};
    struct sock s = {0};
    ws_arena_init(&a, PRE);
    put(&a, &q, "first");
    put(&a, &q, "second");
    put(&a, &q, "third");
    s.short_by = 2;
    struct ws_writer w = writer(&s);
    uint64_t msgs = 0, bytes = 0;
    assert_int_equal(ws_outq_drain(&a, &q, 16, &w, &msgs, &bytes), -EIO);
    assert_int_equal(msgs, 0);
    assert_int_equal(bytes, 0);
    /* Nothing was taken from the queue: the caller drops the connection and frees it. */
    assert_int_equal(q.bytes, strlen("first") + strlen("second") + strlen("third"));
    assert_int_equal(drain(&a, &q, &s, 16), 0);
    assert_int_equal(s.n_got, 3);
    assert_memory_equal(s.got[0], "first", 5);
    assert_memory_equal(s.got[2], "third", 5);
    ws_arena_destroy(&a);
}

static void test_ws_out_choked_queue_moves_to_heap(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq slow = {0}, fast = {0};
    struct sock s = {0}, f = {0};
    char text[32];
    ws_arena_init(&a, PRE);
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "slow %d", i);
        put(&a, &slow, text);
    }
    s.choke_after = 2;
    assert_int_equal(drain(&a, &slow, &s, 16), 0);
    assert_int_equal(s.n_got, 2);
    assert_true(slow.is_slow);
    assert_int_equal(a.n_slow_copies, 8);
    /* Later messages for the slow peer go to the heap too and keep their place. */
    put(&a, &slow, "slow 10");
    assert_int_equal(a.n_slow_copies, 9);
    /* The slow queue holds no block: traffic for others keeps reusing the one block. */
    for (int i = 0; i < 20000; i++) {
        put_size(&a, &fast, 1000, 'f');
        assert_int_equal(drain(&a, &fast, &f, 16), 0);
    }
    assert_int_equal(a.n_blocks, 1);
    s.choke_after = 0;
    assert_int_equal(drain(&a, &slow, &s, 16), 0);
    assert_int_equal(s.n_got, 11);
    for (int i = 0; i < 11; i++) {
        snprintf(text, sizeof(text), "slow %d", i);
        assert_int_equal(s.got_len[i], strlen(text));
        assert_memory_equal(s.got[i], text, strlen(text));
    }
    assert_false(slow.is_slow); /* drained: back to the arena */
    put(&a, &slow, "slow 11");
    assert_int_equal(a.n_slow_copies, 9);
    ws_outq_free(&a, &slow);
    ws_arena_destroy(&a);
    assert_int_equal(a.n_blocks, 0);
}

static void test_ws_out_cancel_queues_nothing(void **state)
{
    (void)state;
    struct ws_arena a;
    struct ws_outq q = {0};
    struct sock s = {0};
    size_t cap;
    ws_arena_init(&a, PRE);
    char *one = ws_arena_reserve(&a, &cap);
    ws_arena_cancel(&a);
    char *two = ws_arena_reserve(&a, &cap);
    assert_ptr_equal(one, two); /* the cancelled space is lent again */
    memcpy(two, "kept", 4);
    assert_int_equal(ws_outq_commit(&a, &q, 4), 0);
    assert_int_equal(drain(&a, &q, &s, 16), 0);
    assert_int_equal(s.n_got, 1);
    assert_memory_equal(s.got[0], "kept", 4);
    ws_arena_destroy(&a);
}

/* ---- many connections, random sizes, drains, chokes and short writes ---------------- */

#define N_Q 8

struct model {
    struct ws_outq q[N_Q];
    uint32_t next_put[N_Q]; /* sequence number of the next message per connection */
    uint32_t next_got[N_Q]; /* the one the socket must see next */
    unsigned cur;           /* the connection being drained */
    bool is_short;          /* the next write fails short */
    unsigned choke_in;      /* writes left before the socket chokes; 0: never */
    uint64_t rng;
};

static uint32_t rnd(struct model *m)
{
    m->rng = m->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(m->rng >> 33);
}

static int model_write(void *ctx, unsigned char *buf, size_t len, bool is_binary)
{
    struct model *m = ctx;
    memset(buf - PRE, 0xee, PRE);
    if (m->is_short) {
        m->is_short = false;
        return (int)len - 1;
    }
    assert_true(len >= 8);
    uint32_t seq =
        (uint32_t)buf[0] | (uint32_t)buf[1] << 7 | (uint32_t)buf[2] << 14 | (uint32_t)buf[3] << 21;
    assert_int_equal(seq, m->next_got[m->cur]);
    assert_int_equal(buf[4], (unsigned char)m->cur);
    for (size_t i = 8; i < len; i++)
        assert_int_equal(buf[i], (unsigned char)('a' + (seq + i) % 26));
    assert_false(is_binary);
    m->next_got[m->cur]++;
    if (m->choke_in)
        m->choke_in--;
    return (int)len;
}

static bool model_is_choked(void *ctx)
{
    struct model *m = ctx;
    return m->choke_in == 1;
}

static void test_ws_out_random_traffic_loses_and_reorders_nothing(void **state)
{
    (void)state;
    static struct model m;
    struct ws_arena a;
    memset(&m, 0, sizeof(m));
    m.rng = 42;
    ws_arena_init(&a, PRE);
    struct ws_writer w = {.write = model_write, .is_choked = model_is_choked, .ctx = &m};
    uint64_t msgs = 0, bytes = 0, expect_bytes = 0, peak = 0;
    for (int step = 0; step < 200000; step++) {
        unsigned c = rnd(&m) % N_Q;
        uint32_t op = rnd(&m) % 100;
        if (op < 60) {
            size_t cap;
            unsigned char *buf = (unsigned char *)ws_arena_reserve(&a, &cap);
            assert_non_null(buf);
            /* Mostly SIP-sized, sometimes large, now and then the largest. */
            size_t len = 8 + rnd(&m) % 1500;
            if (rnd(&m) % 50 == 0)
                len = 8 + rnd(&m) % 30000;
            if (rnd(&m) % 500 == 0)
                len = TX_MSG_MAX;
            uint32_t seq = m.next_put[c];
            for (int i = 0; i < 4; i++)
                buf[i] = (unsigned char)((seq >> (7 * i)) & 0x7f); /* ASCII: a text frame */
            buf[4] = (unsigned char)c;
            buf[5] = buf[6] = buf[7] = 'x';
            for (size_t i = 8; i < len; i++)
                buf[i] = (unsigned char)('a' + (seq + i) % 26);
            if (rnd(&m) % 20 == 0) {
                ws_arena_cancel(&a); /* a producer that found nothing to send */
                continue;
            }
            assert_int_equal(ws_outq_commit(&a, &m.q[c], len), 0);
            m.next_put[c]++;
            expect_bytes += len;
        } else {
            m.cur = c;
            m.is_short = rnd(&m) % 40 == 0;
            m.choke_in = rnd(&m) % 4 == 0 ? 1 + rnd(&m) % 3 : 0;
            uint32_t before = m.next_got[c];
            int rc = ws_outq_drain(&a, &m.q[c], 16, &w, &msgs, &bytes);
            if (rc < 0) {
                /* A short write: the connection would be dropped; here it is kept, and
                 * the message must still be first in line. */
                assert_int_equal(rc, -EIO);
                assert_int_equal(m.next_got[c], before);
            }
        }
        assert_true(a.n_blocks <= 1 + WS_BLOCK_FREE_MAX + 64);
        if (a.n_blocks > peak)
            peak = a.n_blocks;
    }
    assert_true(peak >= 2);           /* blocks were retired with messages in them */
    assert_true(a.n_slow_copies > 0); /* and choked queues moved to the heap */
    /* Drain everything: every message committed arrives, in order. */
    for (unsigned c = 0; c < N_Q; c++) {
        m.cur = c;
        m.is_short = false;
        m.choke_in = 0;
        while (m.q[c].head)
            assert_int_equal(ws_outq_drain(&a, &m.q[c], 16, &w, &msgs, &bytes), 0);
        assert_int_equal(m.next_got[c], m.next_put[c]);
        assert_int_equal(m.q[c].bytes, 0);
    }
    assert_int_equal(bytes, expect_bytes);
    /* Nothing queued any more: the blocks left are the current one and the free list. */
    assert_true(a.n_blocks <= 1 + WS_BLOCK_FREE_MAX);
    ws_arena_destroy(&a);
    assert_int_equal(a.n_blocks, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_out_keeps_order_and_content_per_connection),
        cmocka_unit_test(test_ws_out_text_or_binary_from_one_scan),
        cmocka_unit_test(test_ws_out_queue_bound_counts_payload_bytes),
        cmocka_unit_test(test_ws_out_blocks_are_recycled),
        cmocka_unit_test(test_ws_out_short_write_keeps_message_and_order),
        cmocka_unit_test(test_ws_out_choked_queue_moves_to_heap),
        cmocka_unit_test(test_ws_out_cancel_queues_nothing),
        cmocka_unit_test(test_ws_out_random_traffic_loses_and_reorders_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
