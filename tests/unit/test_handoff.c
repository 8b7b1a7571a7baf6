/* handoff: a real loop on this thread and producer threads. Every message is delivered
 * exactly once in per-producer order; a full ring counts dropped_full and delivers nothing
 * twice; wake-ups coalesce; a wake delivers at most HANDOFF_BATCH and lets the loop turn
 * before the rest; close runs its callback. Each loop runs under a guard timer that stops
 * it and fails the test. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <cmocka.h>

#include "worker/handoff.h"

#define GUARD_MS 8000
#define MAX_PRODUCERS 4

struct tagged {
    uint32_t producer;
    uint32_t seq;
};

struct run;

struct prod {
    struct run *r;
    pthread_t t;
    uint32_t id;
    uint32_t count;   /* messages to send */
    bool retry;       /* retry a refused message (else count it and go on) */
    uint64_t refused; /* sends that returned false */
};

struct run {
    uv_loop_t loop;
    struct handoff h;
    uv_timer_t guard;
    uv_async_t done; /* producers report they have finished */
    uv_prepare_t turn;
    uint64_t turns; /* loop iterations */
    int nprod;
    struct prod prod[MAX_PRODUCERS];
    atomic_int finished;
    bool joined;
    bool timed_out;
    bool closing;
    int closed_calls;
    uint32_t next[MAX_PRODUCERS]; /* per producer: the lowest seq still acceptable */
    uint64_t got, bad;
    uint64_t *turn_of; /* optional: the loop iteration each seq of producer 0 came in */
    size_t turn_of_len;
};

static void on_handle_closed(uv_handle_t *hd)
{
    (void)hd;
}

static void on_handoff_closed(struct handoff *h)
{
    struct run *r = (struct run *)((char *)h - offsetof(struct run, h));
    r->closed_calls++;
}

static void finish(struct run *r)
{
    if (r->closing)
        return;
    r->closing = true;
    handoff_close(&r->h, on_handoff_closed);
    uv_close((uv_handle_t *)&r->guard, on_handle_closed);
    uv_close((uv_handle_t *)&r->done, on_handle_closed);
    uv_close((uv_handle_t *)&r->turn, on_handle_closed);
}

/* Everything sent has been delivered and no producer can send again. */
static void maybe_finish(struct run *r)
{
    if (!r->joined)
        return;
    struct handoff_stats st;
    handoff_stats(&r->h, &st);
    if (r->got >= st.sent)
        finish(r);
}

static void on_msg(void *ctx, const void *msg)
{
    struct run *r = ctx;
    struct tagged m;
    memcpy(&m, msg, sizeof(m));
    /* In order, never twice: seq only grows per producer (gaps are drops). */
    if (m.producer >= (uint32_t)r->nprod || m.seq < r->next[m.producer])
        r->bad++;
    else
        r->next[m.producer] = m.seq + 1;
    if (r->turn_of != NULL && m.producer == 0 && m.seq < r->turn_of_len)
        r->turn_of[m.seq] = r->turns;
    r->got++;
    maybe_finish(r);
}

static void on_guard(uv_timer_t *t)
{
    struct run *r = t->data;
    r->timed_out = true;
    uv_stop(&r->loop);
}

static void on_turn(uv_prepare_t *p)
{
    struct run *r = p->data;
    r->turns++;
}

static void on_done(uv_async_t *a)
{
    struct run *r = a->data;
    if (r->joined || atomic_load(&r->finished) < r->nprod)
        return;
    for (int i = 0; i < r->nprod; i++)
        pthread_join(r->prod[i].t, NULL);
    r->joined = true;
    maybe_finish(r);
}

static void *produce(void *p)
{
    struct prod *pr = p;
    for (uint32_t s = 0; s < pr->count; s++) {
        struct tagged m = {pr->id, s};
        while (!handoff_send(&pr->r->h, &m)) {
            pr->refused++;
            if (!pr->retry)
                break;
            sched_yield();
        }
    }
    atomic_fetch_add(&pr->r->finished, 1);
    uv_async_send(&pr->r->done);
    return NULL;
}

static void run_init(struct run *r, size_t capacity)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(uv_loop_init(&r->loop), 0);
    assert_int_equal(handoff_init(&r->h, &r->loop, capacity, sizeof(struct tagged), on_msg, r), 0);
    assert_int_equal(uv_timer_init(&r->loop, &r->guard), 0);
    r->guard.data = r;
    assert_int_equal(uv_timer_start(&r->guard, on_guard, GUARD_MS, 0), 0);
    assert_int_equal(uv_async_init(&r->loop, &r->done, on_done), 0);
    r->done.data = r;
    assert_int_equal(uv_prepare_init(&r->loop, &r->turn), 0);
    r->turn.data = r;
    assert_int_equal(uv_prepare_start(&r->turn, on_turn), 0);
    atomic_init(&r->finished, 0);
}

static void start_producers(struct run *r, int n, uint32_t count, bool retry)
{
    r->nprod = n;
    for (int i = 0; i < n; i++) {
        r->prod[i] = (struct prod){.r = r, .id = (uint32_t)i, .count = count, .retry = retry};
        assert_int_equal(pthread_create(&r->prod[i].t, NULL, produce, &r->prod[i]), 0);
    }
}

static void run_loop(struct run *r)
{
    assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    if (r->timed_out)
        fail_msg("guard timer: the loop did not finish in %d ms (got %llu)", GUARD_MS,
                 (unsigned long long)r->got);
    assert_int_equal(r->closed_calls, 1);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_every_message_once_in_order(void **state)
{
    (void)state;
    static struct run r;
    const uint32_t per = 50000;
    run_init(&r, 1024);
    double t0 = now_s();
    start_producers(&r, 4, per, true);
    run_loop(&r);
    double dt = now_s() - t0;
    struct handoff_stats st;
    handoff_stats(&r.h, &st);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.got, 4u * per);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r.next[i], per); /* every seq, so none missing */
    assert_int_equal(st.sent, 4u * per);
    assert_int_equal(st.delivered, 4u * per);
    uint64_t refused = 0;
    for (int i = 0; i < 4; i++)
        refused += r.prod[i].refused;
    assert_int_equal(st.dropped_full, refused);
    assert_true(st.wakeups >= 1);
    assert_true(st.wakeups <= st.sent);
    printf("handoff: 4 x %u messages in %.3f s (%.0f/s), %llu wakeups, %llu full retries\n", per,
           dt, (double)r.got / dt, (unsigned long long)st.wakeups, (unsigned long long)refused);
}

static void test_full_ring_drops_and_counts(void **state)
{
    (void)state;
    static struct run r;
    run_init(&r, 8);
    /* One producer, the loop not yet running: 8 fit, 12 are refused. */
    start_producers(&r, 1, 20, false);
    pthread_join(r.prod[0].t, NULL);
    r.joined = true;
    struct handoff_stats st;
    handoff_stats(&r.h, &st);
    assert_int_equal(st.sent, 8);
    assert_int_equal(st.dropped_full, 12);
    assert_int_equal(r.prod[0].refused, 12);
    assert_int_equal(st.delivered, 0);
    run_loop(&r);
    handoff_stats(&r.h, &st);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.got, 8);
    assert_int_equal(r.next[0], 8); /* seq 0..7, the first ones, each once */
    assert_int_equal(st.delivered, 8);
    assert_int_equal(st.dropped_full, 12);
    assert_int_equal(st.wakeups, 1); /* 8 sends, one wake */
}

static void test_full_ring_under_four_producers(void **state)
{
    (void)state;
    static struct run r;
    const uint32_t per = 20000;
    run_init(&r, 16);
    start_producers(&r, 4, per, false);
    run_loop(&r);
    struct handoff_stats st;
    handoff_stats(&r.h, &st);
    assert_int_equal(r.bad, 0);
    assert_int_equal(st.sent + st.dropped_full, 4u * per);
    assert_int_equal(st.delivered, st.sent);
    assert_int_equal(r.got, st.sent);
    assert_true(st.wakeups <= st.sent);
    printf("handoff: ring of 16, 4 x %u offered: %llu delivered, %llu dropped_full, %llu "
           "wakeups\n",
           per, (unsigned long long)st.delivered, (unsigned long long)st.dropped_full,
           (unsigned long long)st.wakeups);
}

static void test_a_wake_delivers_a_bounded_batch(void **state)
{
    (void)state;
    static struct run r;
    static uint64_t turn_of[200];
    run_init(&r, 256);
    r.turn_of = turn_of;
    r.turn_of_len = 200;
    start_producers(&r, 1, 200, false);
    pthread_join(r.prod[0].t, NULL);
    r.joined = true;
    run_loop(&r);
    struct handoff_stats st;
    handoff_stats(&r.h, &st);
    assert_int_equal(r.got, 200);
    assert_int_equal(r.bad, 0);
    assert_int_equal(st.dropped_full, 0);
    /* 64 + 64 + 64 + 8: one wake from the sends, three re-arms. */
    assert_int_equal(HANDOFF_BATCH, 64);
    assert_int_equal(st.wakeups, 4);
    for (size_t i = 1; i < 200; i++) {
        if (i % HANDOFF_BATCH == 0)
            assert_true(turn_of[i] > turn_of[i - 1]); /* the loop turned in between */
        else
            assert_int_equal(turn_of[i], turn_of[i - 1]);
    }
}

static int plain_closed;
static void on_plain_closed(struct handoff *h)
{
    (void)h;
    plain_closed++;
}

static void test_close_runs_its_callback(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct handoff h;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(handoff_init(&h, &loop, 3, 8, on_msg, NULL), -EINVAL);
    assert_int_equal(handoff_init(&h, &loop, 4, 8, on_msg, NULL), 0);
    struct tagged m = {0, 0};
    assert_true(handoff_send(&h, &m)); /* queued, never delivered: close discards it */
    plain_closed = 0;
    handoff_close(&h, on_plain_closed);
    assert_int_equal(plain_closed, 0); /* not before the loop closes the handle */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(plain_closed, 1);
    struct handoff_stats st;
    handoff_stats(&h, &st);
    assert_int_equal(st.sent, 1);
    assert_int_equal(st.delivered, 0);
    /* A NULL callback is allowed. */
    assert_int_equal(handoff_init(&h, &loop, 4, 8, on_msg, NULL), 0);
    handoff_close(&h, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_message_once_in_order),
        cmocka_unit_test(test_full_ring_drops_and_counts),
        cmocka_unit_test(test_full_ring_under_four_producers),
        cmocka_unit_test(test_a_wake_delivers_a_bounded_batch),
        cmocka_unit_test(test_close_runs_its_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
