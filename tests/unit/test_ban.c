/* ban: ladder escalation, bounded table, mirror and backend calls. Explicit time. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guard/ban_backend.h"
#include "guard/guard_internal.h"
#include "sipedge/ban.h"

/* A backend that records what the engine asked for. */
struct rec_backend {
    struct ban_backend base;
    unsigned n_add, n_replace, n_del;
    uint32_t last_timeout_s;
    struct ban_key last;
};

static struct rec_backend *g_rec;

static int rec_add(struct ban_backend *be, const struct ban_key *k, uint32_t t, bool replace)
{
    struct rec_backend *r = (struct rec_backend *)be;
    r->n_add++;
    r->n_replace += replace;
    r->last_timeout_s = t;
    r->last = *k;
    return 0;
}

static int rec_del(struct ban_backend *be, const struct ban_key *k)
{
    struct rec_backend *r = (struct rec_backend *)be;
    r->n_del++;
    r->last = *k;
    return 0;
}

static void rec_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx)
{
    free(be);
    g_rec = NULL;
    if (cb != NULL)
        cb(ctx);
}

static const struct ban_backend_ops rec_ops = {
    .name = "recorder", .add = rec_add, .del = rec_del, .close = rec_close};

/* The engine borrows its backend: the previous test's recorder is closed here. */
static struct ban_backend *rec_new(void)
{
    if (g_rec != NULL)
        rec_close(&g_rec->base, NULL, NULL);
    g_rec = calloc(1, sizeof(*g_rec));
    g_rec->base.ops = &rec_ops;
    return &g_rec->base;
}

static const uint32_t ladder[] = {60, 600, 3600};

static struct ban_key key(const char *text)
{
    struct ban_key k;
    assert_int_equal(ban_key_parse(text, &k), 0);
    return k;
}

static void test_ban_escalation_ladder_climbs_and_caps(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 16, ladder, 3, 86400, rec_new()), 0);
    struct ban_key k = key("198.18.0.9");
    struct ban_entry e;
    uint64_t t = 1000;
    uint32_t want[] = {60, 600, 3600, 3600};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, t, &e), 0);
        assert_int_equal(e.duration_s, want[i]);
        assert_int_equal(g_rec->last_timeout_s, want[i]);
        assert_true(ban_is_banned(b, &k, t + 1));
        t += (uint64_t)want[i] * 1000;
        assert_false(ban_is_banned(b, &k, t));
        ban_tick(b, t, NULL, NULL);
        t += 1000;
    }
    assert_int_equal(ban_stats(b)->n_escalated, 3);
    assert_int_equal(ban_stats(b)->n_expired, 4);
    ban_free(b);
}

static void test_ban_escalation_is_forgotten_after_memory(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 16, ladder, 3, 100, NULL), 0);
    struct ban_key k = key("198.18.0.9:5060");
    struct ban_entry e;
    assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 0, &e), 0);
    ban_tick(b, 60000, NULL, NULL);
    assert_int_equal(ban_stats(b)->n_history, 1);
    ban_tick(b, 100001, NULL, NULL);
    assert_int_equal(ban_stats(b)->n_history, 0);
    assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 200000, &e), 0);
    assert_int_equal(e.duration_s, 60);
    ban_free(b);
}

static void test_ban_escalating_a_live_ban_asks_backend_to_replace(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 16, ladder, 3, 86400, rec_new()), 0);
    struct ban_key k = key("198.18.0.9");
    assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 0, NULL), 0);
    assert_int_equal(g_rec->n_replace, 0);
    assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 1000, NULL), 0);
    assert_int_equal(g_rec->n_replace, 1);
    assert_int_equal(g_rec->last_timeout_s, 600);
    assert_int_equal(ban_stats(b)->n_active, 1);
    ban_free(b);
}

static void test_ban_table_full_keeps_oldest_and_reports(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 3, ladder, 3, 86400, rec_new()), 0);
    struct ban_key k[4] = {key("198.18.0.1"), key("198.18.0.2"), key("198.18.0.3"),
                           key("198.18.0.4")};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ban_impose(b, &k[i], 0, BAN_ORIGIN_STRIKES, (uint64_t)i, NULL), 0);
    unsigned adds = g_rec->n_add;
    assert_int_equal(ban_impose(b, &k[3], 0, BAN_ORIGIN_STRIKES, 10, NULL), -ENOSPC);
    assert_int_equal(g_rec->n_add, adds); /* nothing reached the kernel */
    assert_int_equal(ban_stats(b)->n_refused_full, 1);
    for (int i = 0; i < 3; i++)
        assert_true(ban_is_banned(b, &k[i], 20));
    assert_false(ban_is_banned(b, &k[3], 20));
    ban_free(b);
}

static void test_ban_history_is_reclaimed_before_refusing(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 2, ladder, 3, 86400, NULL), 0);
    struct ban_key a = key("198.18.0.1"), c = key("198.18.0.2"), d = key("198.18.0.3");
    assert_int_equal(ban_impose(b, &a, 1, BAN_ORIGIN_ADMIN, 0, NULL), 0);
    assert_int_equal(ban_impose(b, &c, 0, BAN_ORIGIN_STRIKES, 0, NULL), 0);
    ban_tick(b, 2000, NULL, NULL); /* a expires into history */
    assert_int_equal(ban_impose(b, &d, 0, BAN_ORIGIN_STRIKES, 2000, NULL), 0);
    assert_true(ban_is_banned(b, &c, 2001));
    assert_true(ban_is_banned(b, &d, 2001));
    ban_free(b);
}

/* A table full of live bans refuses each new ban after bounded work, not a scan. */
static void test_ban_full_table_refusal_is_bounded_work(void **state)
{
    (void)state;
    struct ban *b;
    char text[32];
    assert_int_equal(ban_new(&b, 256, ladder, 3, 86400, NULL), 0);
    for (int i = 0; i < 256; i++) {
        snprintf(text, sizeof(text), "198.18.%d.%d", i / 200, i % 200);
        struct ban_key k = key(text);
        assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 1000, NULL), 0);
    }
    struct ban_key extra = key("198.19.0.1");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ban_impose(b, &extra, 0, BAN_ORIGIN_STRIKES, 2000, NULL), -ENOSPC);
    assert_true(ban_reclaim_steps(b) <= 1000);
    assert_int_equal(ban_stats(b)->n_refused_full, 1000);
    ban_free(b);
}

/* History is reclaimed in the order it became history, one entry per insert. */
static void test_ban_history_reclaim_is_fifo(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 4, ladder, 3, 86400, NULL), 0);
    struct ban_key k[6] = {key("198.18.0.1"), key("198.18.0.2"), key("198.18.0.3"),
                           key("198.18.0.4"), key("198.18.0.5"), key("198.18.0.6")};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ban_impose(b, &k[i], 1, BAN_ORIGIN_ADMIN, 0, NULL), 0);
    assert_int_equal(ban_lift(b, &k[2], 10), 0); /* history: 2 */
    ban_tick(b, 2000, NULL, NULL);                /* history: 2, then 0 1 3 */
    assert_int_equal(ban_stats(b)->n_history, 4);
    /* Re-banning 0 takes it off the FIFO without freeing anything. */
    assert_int_equal(ban_impose(b, &k[0], 0, BAN_ORIGIN_STRIKES, 2000, NULL), 0);
    assert_int_equal(ban_stats(b)->n_history, 3);
    assert_int_equal(ban_impose(b, &k[4], 0, BAN_ORIGIN_STRIKES, 2000, NULL), 0); /* frees 2 */
    assert_int_equal(ban_impose(b, &k[5], 0, BAN_ORIGIN_STRIKES, 2000, NULL), 0); /* frees 1 */
    assert_int_equal(ban_reclaim_steps(b), 2);
    assert_int_equal(ban_stats(b)->n_history, 1);
    /* 3 is the history left: banning it again climbs the ladder, 1 and 2 start over. */
    struct ban_entry e;
    assert_int_equal(ban_impose(b, &k[3], 0, BAN_ORIGIN_STRIKES, 2000, &e), 0);
    assert_int_equal(e.level, 1);
    assert_int_equal(ban_stats(b)->n_history, 0);
    assert_int_equal(ban_impose(b, &k[1], 0, BAN_ORIGIN_STRIKES, 2000, NULL), -ENOSPC);
    ban_free(b);
}

#ifdef SIPEDGE_WITH_NFT
/* IPv6 address bans are prefixes: the address rules mask the packet's source, the
 * (address, port) rules and IPv4 do not. */
static void test_ban_nft_script_masks_ipv6_address_rules(void **state)
{
    (void)state;
    static const uint16_t udp[] = {5060};
    char buf[4096];
    struct ban_nft_opts o = {.udp_ports = udp, .n_udp_ports = 1, .ipv6_prefix = 64};
    assert_true(ban_nft_script(&o, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "input ip6 saddr & ffff:ffff:ffff:ffff:: @ban6 udp dport"));
    assert_non_null(strstr(buf, "input ip saddr @ban4 udp dport"));
    assert_non_null(strstr(buf, "input ip6 saddr . udp sport @ban6p udp dport"));
    o.drop_all = true;
    o.ipv6_prefix = 56;
    assert_true(ban_nft_script(&o, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "input ip6 saddr & ffff:ffff:ffff:ff00:: @ban6 counter drop"));
    o.ipv6_prefix = 128;
    assert_true(ban_nft_script(&o, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "input ip6 saddr @ban6 counter drop"));
}
#endif

static void on_expired(void *arg, const struct ban_entry *e)
{
    (void)e;
    (*(unsigned *)arg)++;
}

static void test_ban_lift_and_expiry_callback(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 8, ladder, 3, 86400, rec_new()), 0);
    struct ban_key k = key("2001:db8::7"), p = key("[2001:db8::7]:5062");
    assert_int_equal(ban_impose(b, &k, 30, BAN_ORIGIN_ADMIN, 0, NULL), 0);
    assert_int_equal(ban_impose(b, &p, 10, BAN_ORIGIN_ADMIN, 0, NULL), 0);
    assert_false(ban_is_banned(b, &(struct ban_key){.family = AF_INET6}, 0));
    assert_int_equal(ban_lift(b, &k, 5), 0);
    assert_int_equal(g_rec->n_del, 1);
    assert_int_equal(ban_lift(b, &k, 5), -ENOENT);
    unsigned n_expired = 0;
    ban_tick(b, 10000, on_expired, &n_expired);
    assert_int_equal(n_expired, 1);
    assert_false(ban_is_banned(b, &p, 10000));
    ban_free(b);
}

static void test_ban_restore_sets_level_from_timeout(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 8, ladder, 3, 86400, NULL), 0);
    struct ban_key k = key("198.18.0.5:5070");
    assert_int_equal(ban_restore(b, &k, 300000, 600000, 1000), 0);
    struct ban_entry e;
    assert_int_equal(ban_find(b, &k, 1000, &e), 0);
    assert_int_equal(e.level, 1);
    assert_int_equal(e.origin, BAN_ORIGIN_RESTORED);
    assert_int_equal(e.expires_ms, 301000);
    /* The next offence climbs from the restored step. */
    assert_int_equal(ban_impose(b, &k, 0, BAN_ORIGIN_STRIKES, 2000, &e), 0);
    assert_int_equal(e.duration_s, 3600);
    ban_free(b);
}

static bool collect_record(void *arg, const struct ban_record *r)
{
    struct ban_record **out = arg;
    *(*out)++ = *r;
    return true;
}

/* Records carry live bans and history (oldest first); restoring them into a fresh engine
 * gives the same table without a backend call; a ban read back from the kernel keeps its
 * time left and takes origin and level from the record. */
static void test_ban_records_round_trip_and_merge(void **state)
{
    (void)state;
    struct ban *b;
    assert_int_equal(ban_new(&b, 8, ladder, 3, 86400, NULL), 0);
    struct ban_key op = key("198.18.0.6"), h1 = key("198.18.0.7"), h2 = key("198.18.0.8:5060");
    assert_int_equal(ban_impose(b, &op, 0, BAN_ORIGIN_ADMIN, 1000, NULL), 0);
    assert_int_equal(ban_impose(b, &op, 0, BAN_ORIGIN_ADMIN, 2000, NULL), 0);
    assert_int_equal(ban_impose(b, &h1, 5, BAN_ORIGIN_STRIKES, 1000, NULL), 0);
    assert_int_equal(ban_impose(b, &h2, 0, BAN_ORIGIN_STRIKES, 1500, NULL), 0);
    assert_int_equal(ban_lift(b, &h2, 1600), 0);
    ban_tick(b, 10000, NULL, NULL);
    struct ban_record recs[8], *w = recs;
    assert_int_equal(ban_foreach_record(b, 10000, collect_record, &w), 3);
    assert_true(recs[0].is_live);
    assert_int_equal(recs[0].level, 1);
    assert_int_equal(recs[0].origin, BAN_ORIGIN_ADMIN);
    assert_int_equal(recs[0].remaining_ms, 600000 - 8000);
    assert_int_equal(recs[0].age_ms, 8000);
    /* History in the order it became history: h2 lifted at 1600, h1 expired at 10000. */
    assert_false(recs[1].is_live);
    assert_memory_equal(&recs[1].key, &h2, sizeof(h2));
    assert_memory_equal(&recs[2].key, &h1, sizeof(h1));
    ban_free(b);

    assert_int_equal(ban_new(&b, 8, ladder, 3, 86400, rec_new()), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ban_restore_record(b, &recs[i], 50), 0);
    assert_int_equal(g_rec->n_add, 0);
    struct ban_entry e;
    assert_int_equal(ban_find(b, &op, 50, &e), 0);
    assert_int_equal(e.origin, BAN_ORIGIN_ADMIN);
    assert_int_equal(e.level, 1);
    assert_int_equal(e.expires_ms, 50 + 592000);
    assert_int_equal(ban_stats(b)->n_history, 2);
    assert_int_equal(ban_find(b, &h1, 50, NULL), -ENOENT);
    /* The history FIFO keeps its order: a full table reclaims h2 first. */
    struct ban_record again[8], *w2 = again;
    assert_int_equal(ban_foreach_record(b, 50, collect_record, &w2), 3);
    assert_memory_equal(&again[1].key, &h2, sizeof(h2));
    assert_int_equal(ban_impose(b, &h1, 0, BAN_ORIGIN_STRIKES, 100, &e), 0);
    assert_int_equal(e.level, 1); /* remembered */
    ban_free(b);

    /* Kernel first: the element's time left stands, the record gives origin and level. */
    assert_int_equal(ban_new(&b, 8, ladder, 3, 86400, NULL), 0);
    assert_int_equal(ban_restore(b, &op, 100000, 600000, 50), 0);
    assert_int_equal(ban_restore_record(b, &recs[0], 50), 0);
    assert_int_equal(ban_find(b, &op, 50, &e), 0);
    assert_int_equal(e.origin, BAN_ORIGIN_ADMIN);
    assert_int_equal(e.level, 1);
    assert_int_equal(e.expires_ms, 50 + 100000);
    assert_int_equal(ban_stats(b)->n_active, 1);
    /* History older than the memory is not kept. */
    struct ban_record stale = recs[1];
    stale.age_ms = 86400ULL * 1000 + 1;
    assert_int_equal(ban_restore_record(b, &stale, 50), -ESTALE);
    ban_free(b);
}

static void test_ban_key_parse_and_format(void **state)
{
    (void)state;
    struct ban_key k;
    char buf[BAN_ADDR_MAX];
    assert_int_equal(ban_key_parse("1.2.3.4:5060", &k), 0);
    assert_int_equal(k.family, AF_INET);
    assert_int_equal(k.port, 5060);
    assert_string_equal(ban_key_format_addr(&k, buf, sizeof(buf)), "1.2.3.4");
    assert_int_equal(ban_key_parse("[2001:db8::1]:7", &k), 0);
    assert_int_equal(k.port, 7);
    assert_int_equal(ban_key_parse("2001:db8::1", &k), 0);
    assert_int_equal(k.port, 0);
    assert_int_equal(ban_key_parse("::ffff:1.2.3.4", &k), 0);
    assert_int_equal(k.family, AF_INET);
    assert_int_equal(ban_key_parse("1.2.3.4:0", &k), -EINVAL);
    assert_int_equal(ban_key_parse("1.2.3.4:70000", &k), -EINVAL);
    assert_int_equal(ban_key_parse("1.2.3", &k), -EINVAL);
    assert_int_equal(ban_key_parse("[::1", &k), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ban_escalation_ladder_climbs_and_caps),
        cmocka_unit_test(test_ban_escalation_is_forgotten_after_memory),
        cmocka_unit_test(test_ban_escalating_a_live_ban_asks_backend_to_replace),
        cmocka_unit_test(test_ban_table_full_keeps_oldest_and_reports),
        cmocka_unit_test(test_ban_history_is_reclaimed_before_refusing),
        cmocka_unit_test(test_ban_full_table_refusal_is_bounded_work),
        cmocka_unit_test(test_ban_history_reclaim_is_fifo),
#ifdef SIPEDGE_WITH_NFT
        cmocka_unit_test(test_ban_nft_script_masks_ipv6_address_rules),
#endif
        cmocka_unit_test(test_ban_lift_and_expiry_callback),
        cmocka_unit_test(test_ban_restore_sets_level_from_timeout),
        cmocka_unit_test(test_ban_records_round_trip_and_merge),
        cmocka_unit_test(test_ban_key_parse_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
