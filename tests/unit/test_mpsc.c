/* mpsc: FIFO order, a full ring refuses and keeps what it holds, many laps around the ring,
 * four producer threads and one consumer (nothing lost or duplicated, per-producer order),
 * and messages whose size is not a multiple of 8. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sipedge/mpsc.h"

static void test_init_rejects_bad_sizes(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 0, 8), -EINVAL);
    assert_int_equal(mpsc_init(&q, 1, 8), -EINVAL);
    assert_int_equal(mpsc_init(&q, 12, 8), -EINVAL);
    assert_int_equal(mpsc_init(&q, 8, 0), -EINVAL);
    assert_int_equal(mpsc_init(&q, 2, 1), 0);
    mpsc_free(&q);
}

static void test_fifo_from_one_producer(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 16, sizeof(uint32_t)), 0);
    uint32_t v;
    assert_false(mpsc_pop(&q, &v));
    for (uint32_t i = 0; i < 10; i++)
        assert_true(mpsc_push(&q, &i));
    for (uint32_t i = 0; i < 10; i++) {
        assert_true(mpsc_pop(&q, &v));
        assert_int_equal(v, i);
    }
    assert_false(mpsc_pop(&q, &v));
    assert_int_equal(mpsc_pushed(&q), 10);
    mpsc_free(&q);
}

static void test_full_refuses_and_keeps_what_it_holds(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 8, sizeof(uint64_t)), 0);
    for (uint64_t i = 0; i < 8; i++)
        assert_true(mpsc_push(&q, &i));
    uint64_t extra = 99;
    for (int k = 0; k < 3; k++)
        assert_false(mpsc_push(&q, &extra));
    assert_int_equal(mpsc_pushed(&q), 8);
    uint64_t v;
    for (uint64_t i = 0; i < 8; i++) {
        assert_true(mpsc_pop(&q, &v));
        assert_int_equal(v, i);
    }
    assert_false(mpsc_pop(&q, &v));
    /* Room again, once. */
    assert_true(mpsc_push(&q, &extra));
    assert_true(mpsc_pop(&q, &v));
    assert_int_equal(v, 99);
    mpsc_free(&q);
}

static void test_wraps_around_many_times(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 4, sizeof(uint64_t)), 0);
    uint64_t next_in = 0, next_out = 0, v;
    for (int round = 0; round < 100000; round++) {
        int k = 1 + round % 4; /* 1..4 messages per round: the ring fills now and then */
        for (int i = 0; i < k; i++) {
            assert_true(mpsc_push(&q, &next_in));
            next_in++;
        }
        if (k == 4)
            assert_false(mpsc_push(&q, &next_in));
        for (int i = 0; i < k; i++) {
            assert_true(mpsc_pop(&q, &v));
            assert_int_equal(v, next_out);
            next_out++;
        }
        assert_false(mpsc_pop(&q, &v));
    }
    assert_true(next_in > 60000 * 4); /* thousands of laps of a 4-cell ring */
    mpsc_free(&q);
}

/* 13 bytes: the cells are padded, and a message never spills into its neighbour. */
struct odd {
    unsigned char b[13];
};

static void fill_odd(struct odd *m, uint32_t n)
{
    for (size_t i = 0; i < sizeof(m->b); i++)
        m->b[i] = (unsigned char)(n * 31u + i * 7u + 1u);
}

static void test_message_size_not_a_multiple_of_8(void **state)
{
    (void)state;
    assert_int_equal(sizeof(struct odd), 13);
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 8, sizeof(struct odd)), 0);
    uint32_t in = 0, out = 0;
    struct odd m, got, want;
    for (int round = 0; round < 1000; round++) {
        int k = 1 + round % 8;
        for (int i = 0; i < k; i++) {
            fill_odd(&m, in++);
            assert_true(mpsc_push(&q, &m));
        }
        for (int i = 0; i < k; i++) {
            assert_true(mpsc_pop(&q, &got));
            fill_odd(&want, out++);
            assert_memory_equal(got.b, want.b, sizeof(want.b));
        }
    }
    mpsc_free(&q);
}

/* ---- four producers, one consumer ---- */

#define PRODUCERS 4
#define PER_PRODUCER 200000u

struct tagged {
    uint32_t producer;
    uint32_t seq;
};

struct prod_arg {
    struct mpsc *q;
    uint32_t id;
    uint64_t full; /* pushes refused and retried */
};

static void *produce(void *p)
{
    struct prod_arg *a = p;
    for (uint32_t s = 0; s < PER_PRODUCER; s++) {
        struct tagged m = {a->id, s};
        while (!mpsc_push(a->q, &m)) {
            a->full++;
            sched_yield();
        }
    }
    return NULL;
}

struct cons_arg {
    struct mpsc *q;
    uint32_t next[PRODUCERS];
    uint64_t total;
    uint64_t bad; /* out of order, duplicated or from nowhere */
};

static void *consume(void *p)
{
    struct cons_arg *c = p;
    const uint64_t want = (uint64_t)PRODUCERS * PER_PRODUCER;
    struct tagged m;
    while (c->total < want) {
        if (!mpsc_pop(c->q, &m)) {
            sched_yield();
            continue;
        }
        if (m.producer >= PRODUCERS || m.seq != c->next[m.producer])
            c->bad++;
        else
            c->next[m.producer]++;
        c->total++;
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_four_producers_one_consumer(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(mpsc_init(&q, 1024, sizeof(struct tagged)), 0);
    struct cons_arg c = {.q = &q};
    struct prod_arg pa[PRODUCERS];
    pthread_t pt[PRODUCERS], ct;
    double t0 = now_s();
    assert_int_equal(pthread_create(&ct, NULL, consume, &c), 0);
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        pa[i] = (struct prod_arg){.q = &q, .id = i};
        assert_int_equal(pthread_create(&pt[i], NULL, produce, &pa[i]), 0);
    }
    uint64_t full = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(pt[i], NULL);
        full += pa[i].full;
    }
    pthread_join(ct, NULL);
    double dt = now_s() - t0;
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.total, (uint64_t)PRODUCERS * PER_PRODUCER);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(c.next[i], PER_PRODUCER);
    struct tagged m;
    assert_false(mpsc_pop(&q, &m)); /* nothing left over, nothing duplicated */
    assert_int_equal(mpsc_pushed(&q), (size_t)PRODUCERS * PER_PRODUCER);
    printf("mpsc: %u producers x %u messages: %.3f s, %.0f messages/s (%llu full retries)\n",
           PRODUCERS, PER_PRODUCER, dt, (double)c.total / dt, (unsigned long long)full);
    mpsc_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_sizes),
        cmocka_unit_test(test_fifo_from_one_producer),
        cmocka_unit_test(test_full_refuses_and_keeps_what_it_holds),
        cmocka_unit_test(test_wraps_around_many_times),
        cmocka_unit_test(test_message_size_not_a_multiple_of_8),
        cmocka_unit_test(test_four_producers_one_consumer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
