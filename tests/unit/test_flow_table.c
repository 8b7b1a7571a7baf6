/* flow_table: bounded, generation-checked RFC 5626 flows of one worker. Explicit time. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/flow_table.h"
#include "sipedge/flow_token.h"

static const uint8_t key[FLOW_TOKEN_KEY_LEN] = "flow-table-test-key-0123456789ab";

struct fixture {
    struct flow_table *t;
    struct flow_token_keys *keys;
};

static int setup_cap(void **state, uint32_t cap)
{
    static struct fixture fx;

    memset(&fx, 0, sizeof(fx));
    if (flow_table_new(&fx.t, cap, 7) != 0)
        return -1;
    if (flow_token_keys_new(&fx.keys, key, NULL) != 0)
        return -1;
    *state = &fx;
    return 0;
}

static int setup_cap_1(void **state) { return setup_cap(state, 1); }
static int setup_4(void **state) { return setup_cap(state, 4); }
static int setup_64(void **state) { return setup_cap(state, 64); }

static int teardown(void **state)
{
    struct fixture *fx = *state;

    flow_table_free(fx->t);
    flow_token_keys_free(fx->keys);
    return 0;
}

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in a;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 a;

    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return a;
}

#define SA(x) ((const struct sockaddr *)&(x))

static struct flow *add(struct fixture *fx, uint8_t sock, const struct sockaddr *sa,
                        uint64_t now_ms)
{
    struct flow *f = NULL;

    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, sock, sa, now_ms, &f), 0);
    assert_non_null(f);
    return f;
}

static void test_flow_table_new_rejects_zero_and_huge_capacity(void **state)
{
    struct flow_table *t = NULL;

    (void)state;
    assert_int_equal(flow_table_new(&t, 0, 0), -EINVAL);
    assert_null(t);
    assert_int_equal(flow_table_new(&t, (1u << 24) + 1, 0), -EINVAL);
    assert_null(t);
    assert_int_equal(flow_table_new(&t, 1, 9), 0);
    assert_int_equal(flow_table_capacity(t), 1);
    assert_int_equal(flow_table_count(t), 0);
    assert_int_equal(flow_table_worker(t), 9);
    flow_table_free(t);
    flow_table_free(NULL);
}

static void test_flow_table_add_then_find_and_get_return_the_flow(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.10", 5060);

    struct flow *f = add(fx, 2, SA(a), 1000);
    assert_int_equal(f->state, FLOW_LIVE);
    assert_int_equal(f->transport, FLOW_UDP);
    assert_int_equal(f->sock, 2);
    assert_int_equal(f->last_rx_ms, 1000);
    assert_int_equal(f->reg_until_ms, 0);
    assert_int_equal(f->remote.in.sin_port, a.sin_port);
    assert_int_equal(f->remote.in.sin_addr.s_addr, a.sin_addr.s_addr);
    assert_int_equal(flow_table_count(fx->t), 1);

    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 2, SA(a)), f);
    uint32_t slot = flow_table_slot(fx->t, f);
    assert_true(slot < flow_table_capacity(fx->t));
    assert_ptr_equal(flow_table_get(fx->t, slot, f->gen), f);
    assert_null(flow_table_get(fx->t, slot, f->gen + 1));
    assert_null(flow_table_get(fx->t, flow_table_capacity(fx->t), f->gen));
    assert_null(flow_table_get(fx->t, UINT32_MAX, f->gen));

    /* A flow is (transport, socket, address, port): any difference is another flow. */
    struct sockaddr_in other_port = v4("192.0.2.10", 5061);
    struct sockaddr_in other_ip = v4("192.0.2.11", 5060);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 3, SA(a)));
    assert_null(flow_table_find(fx->t, FLOW_WS, 2, SA(a)));
    assert_null(flow_table_find(fx->t, FLOW_UDP, 2, SA(other_port)));
    assert_null(flow_table_find(fx->t, FLOW_UDP, 2, SA(other_ip)));
}

static void test_flow_table_token_names_the_flow(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("203.0.113.5", 40000);
    struct flow_token_fields tf;

    struct flow *f = add(fx, 1, SA(a), 0);
    assert_true(f->token_len == FLOW_TOKEN_LEN_V4);
    assert_int_equal(strlen(f->token), f->token_len);
    assert_int_equal(flow_token_decode(fx->keys, slice_make(f->token, f->token_len), &tf), 0);
    assert_int_equal(tf.worker, 7);
    assert_int_equal(tf.transport, FLOW_UDP);
    assert_int_equal(tf.slot, flow_table_slot(fx->t, f));
    assert_int_equal(tf.gen, f->gen);
    assert_int_equal(tf.remote.in.sin_port, a.sin_port);
    assert_int_equal(tf.remote.in.sin_addr.s_addr, a.sin_addr.s_addr);
}

static void test_flow_table_release_frees_slot_and_reuse_changes_generation(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.10", 5060);
    struct sockaddr_in b = v4("192.0.2.20", 5060);

    struct flow *f = add(fx, 0, SA(a), 0);
    uint32_t slot = flow_table_slot(fx->t, f);
    uint32_t gen = f->gen;
    char old_token[FLOW_TOKEN_MAX];
    memcpy(old_token, f->token, sizeof(old_token));

    flow_table_release(fx->t, f);
    assert_int_equal(flow_table_count(fx->t), 0);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(a)));
    assert_null(flow_table_get(fx->t, slot, gen));
    /* Releasing twice is harmless. */
    flow_table_release(fx->t, f);
    assert_int_equal(flow_table_count(fx->t), 0);

    /* The only free slot is reused by another peer with a new generation. */
    struct flow *g = add(fx, 0, SA(b), 10);
    assert_int_equal(flow_table_slot(fx->t, g), slot);
    assert_int_not_equal(g->gen, gen);
    assert_null(flow_table_get(fx->t, slot, gen));
    assert_ptr_equal(flow_table_get(fx->t, slot, g->gen), g);
    assert_string_not_equal(g->token, old_token);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(a)));
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(b)), g);

    /* The old token still verifies but names a (slot, gen) that is gone. */
    struct flow_token_fields tf;
    assert_int_equal(flow_token_decode(fx->keys, slice_make(old_token, strlen(old_token)), &tf),
                     0);
    assert_null(flow_table_get(fx->t, tf.slot, tf.gen));
}

static void test_flow_table_full_is_enospc_and_never_evicts(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in peers[4];
    struct flow *flows[4];
    uint32_t gens[4];
    struct flow *extra = NULL;

    for (int i = 0; i < 4; i++) {
        peers[i] = v4("192.0.2.30", (uint16_t)(6000 + i));
        flows[i] = add(fx, 0, SA(peers[i]), 0);
        gens[i] = flows[i]->gen;
    }
    assert_int_equal(flow_table_count(fx->t), 4);

    struct sockaddr_in late = v4("192.0.2.31", 7000);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(late), 1u << 30, &extra),
                     -ENOSPC);
    assert_null(extra);
    assert_int_equal(flow_table_count(fx->t), 4);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(late)));
    for (int i = 0; i < 4; i++) {
        assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(peers[i])), flows[i]);
        assert_ptr_equal(flow_table_get(fx->t, flow_table_slot(fx->t, flows[i]), gens[i]),
                         flows[i]);
        assert_int_equal(flows[i]->state, FLOW_LIVE);
        assert_int_equal(flows[i]->remote.in.sin_port, peers[i].sin_port);
    }

    /* Room again after one release: exactly one more fits. */
    flow_table_release(fx->t, flows[1]);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(late), 0, &extra), 0);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(peers[1]), 0, &extra),
                     -ENOSPC);
}

static void test_flow_table_add_rejects_unsupported_family(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_storage ss;
    struct flow *f = NULL;

    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(ss), 0, &f), -EINVAL);
    assert_null(f);
    assert_int_equal(flow_table_count(fx->t), 0);
    /* The slot it tried is still usable: the table can still be filled. */
    for (uint16_t i = 0; i < 4; i++) {
        struct sockaddr_in a = v4("192.0.2.40", (uint16_t)(1000 + i));
        add(fx, 0, SA(a), 0);
    }
    assert_int_equal(flow_table_count(fx->t), 4);
}

static void test_flow_table_sweep_releases_idle_flows_only_after_registration_ends(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.50", 5060); /* idle, no registration */
    struct sockaddr_in b = v4("192.0.2.51", 5060); /* idle, registered until 100 s */
    struct sockaddr_in c = v4("192.0.2.52", 5060); /* active */
    const uint64_t idle_ms = 30000;

    struct flow *fa = add(fx, 0, SA(a), 0);
    struct flow *fb = add(fx, 0, SA(b), 0);
    struct flow *fc = add(fx, 0, SA(c), 0);
    fb->reg_until_ms = 100000;

    /* Nothing is idle long enough yet. */
    assert_int_equal(flow_table_sweep(fx->t, 29999, idle_ms, 64, NULL, NULL), 0);
    assert_int_equal(flow_table_count(fx->t), 3);

    fc->last_rx_ms = 20000;
    assert_int_equal(flow_table_sweep(fx->t, 30000, idle_ms, 64, NULL, NULL), 1);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(a)));
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(b)), fb);
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(c)), fc);
    (void)fa;

    /* b is idle but its registration holds it until 100 s; c goes idle at 50 s. */
    assert_int_equal(flow_table_sweep(fx->t, 99999, idle_ms, 64, NULL, NULL), 1);
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(b)), fb);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(c)));

    assert_int_equal(flow_table_sweep(fx->t, 100000, idle_ms, 64, NULL, NULL), 1);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(b)));
    assert_int_equal(flow_table_count(fx->t), 0);
}

static void test_flow_table_sweep_scans_at_most_max_scan_slots_and_resumes(void **state)
{
    struct fixture *fx = *state;

    for (uint16_t i = 0; i < 10; i++) {
        struct sockaddr_in a = v4("192.0.2.60", (uint16_t)(2000 + i));
        add(fx, 0, SA(a), 0);
    }
    uint32_t total = 0;
    for (int round = 0; round < 100 && total < 10; round++) {
        uint32_t n = flow_table_sweep(fx->t, 10000, 1000, 3, NULL, NULL);
        assert_true(n <= 3);
        total += n;
    }
    assert_int_equal(total, 10);
    assert_int_equal(flow_table_count(fx->t), 0);
}

struct release_log {
    struct flow_table *t;
    unsigned n;
    uint32_t slot;
    uint8_t state_seen;
};

static void on_release(void *ctx, struct flow *f)
{
    struct release_log *log = ctx;

    log->n++;
    log->slot = flow_table_slot(log->t, f);
    log->state_seen = f->state; /* still the live flow when the callback runs */
}

static void test_flow_table_sweep_calls_on_release_before_each_release(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.80", 5060);
    struct sockaddr_in b = v4("192.0.2.81", 5060);
    struct release_log log = {.t = fx->t};

    add(fx, 0, SA(a), 0);
    struct flow *fb = add(fx, 0, SA(b), 0);
    fb->last_rx_ms = 500;
    assert_int_equal(flow_table_sweep(fx->t, 1000, 1000, 64, on_release, &log), 1);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.slot, 0);
    assert_int_equal(log.state_seen, FLOW_LIVE);
    assert_int_equal(flow_table_sweep(fx->t, 1000, 1000, 64, on_release, &log), 0);
    assert_int_equal(log.n, 1);
}

static void test_flow_table_sweep_leaves_dead_and_connection_flows_alone(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.90", 5060);
    struct sockaddr_in b = v4("192.0.2.91", 443);
    struct flow *ws = NULL;

    struct flow *dead = add(fx, 0, SA(a), 0);
    flow_table_mark_dead(fx->t, dead);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_WS, 1, SA(b), 0, &ws), 0);
    assert_int_equal(flow_table_sweep(fx->t, 1u << 30, 1000, 64, NULL, NULL), 0);
    assert_int_equal(flow_table_count(fx->t), 2);
    assert_int_equal(dead->state, FLOW_DEAD);
    assert_int_equal(ws->state, FLOW_LIVE);
}

static void test_flow_table_get_slot_returns_any_slot_in_range(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.95", 5060);

    struct flow *f = add(fx, 0, SA(a), 0);
    assert_ptr_equal(flow_table_get_slot(fx->t, flow_table_slot(fx->t, f)), f);
    struct flow *unused = flow_table_get_slot(fx->t, 3);
    assert_non_null(unused);
    assert_int_equal(unused->state, FLOW_FREE);
    assert_null(flow_table_get_slot(fx->t, 4));
    assert_null(flow_table_get_slot(fx->t, UINT32_MAX));
}

static void test_flow_table_mark_dead_keeps_slot_until_release(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = v4("192.0.2.70", 5060);

    struct flow *f = add(fx, 0, SA(a), 0);
    uint32_t slot = flow_table_slot(fx->t, f);
    uint32_t gen = f->gen;

    flow_table_mark_dead(fx->t, f);
    assert_int_equal(f->state, FLOW_DEAD);
    assert_int_equal(flow_table_count(fx->t), 1);
    assert_ptr_equal(flow_table_get(fx->t, slot, gen), f);
    assert_int_equal(f->gen, gen);

    /* Still occupying its slot: a table of 4 takes only 3 more. */
    for (uint16_t i = 0; i < 3; i++) {
        struct sockaddr_in b = v4("192.0.2.71", (uint16_t)(3000 + i));
        add(fx, 0, SA(b), 0);
    }
    struct flow *g = NULL;
    struct sockaddr_in late = v4("192.0.2.72", 1);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(late), 0, &g), -ENOSPC);

    flow_table_release(fx->t, f);
    assert_null(flow_table_get(fx->t, slot, gen));
    assert_int_equal(flow_table_count(fx->t), 3);
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(late), 0, &g), 0);
    assert_int_equal(flow_table_slot(fx->t, g), slot);
    assert_int_not_equal(g->gen, gen);
}

static void test_flow_table_ipv6_flows(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in6 a = v6("2001:db8::10", 5060);
    struct sockaddr_in6 b = v6("2001:db8::10", 5061);
    struct sockaddr_in6 c = v6("2001:db8::11", 5060);
    struct sockaddr_in v4same = v4("192.0.2.10", 5060);
    struct flow_token_fields tf;

    struct flow *fa = add(fx, 1, SA(a), 5);
    struct flow *fb = add(fx, 1, SA(b), 5);
    struct flow *fv4 = add(fx, 1, SA(v4same), 5);
    assert_ptr_not_equal(fa, fb);
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 1, SA(a)), fa);
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 1, SA(b)), fb);
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 1, SA(v4same)), fv4);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 1, SA(c)));
    assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(a)));
    assert_int_equal(fa->remote.sa.sa_family, AF_INET6);
    assert_memory_equal(&fa->remote.in6.sin6_addr, &a.sin6_addr, 16);
    assert_int_equal(fa->token_len, FLOW_TOKEN_LEN_V6);
    assert_int_equal(flow_token_decode(fx->keys, slice_make(fa->token, fa->token_len), &tf), 0);
    assert_int_equal(tf.remote.sa.sa_family, AF_INET6);
    assert_memory_equal(&tf.remote.in6.sin6_addr, &a.sin6_addr, 16);
    assert_int_equal(tf.remote.in6.sin6_port, a.sin6_port);

    flow_table_release(fx->t, fa);
    assert_null(flow_table_find(fx->t, FLOW_UDP, 1, SA(a)));
    assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 1, SA(b)), fb);
}

/* Many flows, many of them sharing hash buckets: find/release keep every chain intact. */
static void test_flow_table_many_flows_survive_interleaved_release(void **state)
{
    struct fixture *fx = *state;
    struct flow *flows[64];
    struct sockaddr_in peers[64];

    for (int i = 0; i < 64; i++) {
        peers[i] = v4(i % 2 ? "198.51.100.1" : "198.51.100.2", (uint16_t)(10000 + i));
        flows[i] = add(fx, 0, SA(peers[i]), 0);
    }
    struct flow *f = NULL;
    assert_int_equal(flow_table_add(fx->t, fx->keys, FLOW_UDP, 0, SA(peers[0]), 0, &f),
                     -ENOSPC);
    for (int i = 0; i < 64; i += 3)
        flow_table_release(fx->t, flows[i]);
    for (int i = 0; i < 64; i++) {
        if (i % 3 == 0)
            assert_null(flow_table_find(fx->t, FLOW_UDP, 0, SA(peers[i])));
        else
            assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(peers[i])), flows[i]);
    }
    for (int i = 0; i < 64; i += 3)
        flows[i] = add(fx, 0, SA(peers[i]), 1);
    assert_int_equal(flow_table_count(fx->t), 64);
    for (int i = 0; i < 64; i++)
        assert_ptr_equal(flow_table_find(fx->t, FLOW_UDP, 0, SA(peers[i])), flows[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flow_table_new_rejects_zero_and_huge_capacity),
        cmocka_unit_test_setup_teardown(test_flow_table_add_then_find_and_get_return_the_flow,
                                        setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_token_names_the_flow, setup_4, teardown),
        cmocka_unit_test_setup_teardown(
            test_flow_table_release_frees_slot_and_reuse_changes_generation, setup_cap_1,
            teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_full_is_enospc_and_never_evicts, setup_4,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_add_rejects_unsupported_family, setup_4,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_flow_table_sweep_releases_idle_flows_only_after_registration_ends, setup_4,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_flow_table_sweep_scans_at_most_max_scan_slots_and_resumes, setup_64, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_sweep_calls_on_release_before_each_release,
                                        setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_sweep_leaves_dead_and_connection_flows_alone,
                                        setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_get_slot_returns_any_slot_in_range,
                                        setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_mark_dead_keeps_slot_until_release,
                                        setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_ipv6_flows, setup_4, teardown),
        cmocka_unit_test_setup_teardown(test_flow_table_many_flows_survive_interleaved_release,
                                        setup_64, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
