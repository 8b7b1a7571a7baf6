/* guard: verdicts, strikes, scope rules, allowlist, events. Userspace backend, explicit time. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard/ban_backend.h"
#include "sipedge/admin.h"
#include "sipedge/config.h"
#include "sipedge/guard.h"
#include "sipedge/jsonl.h"

static struct config cfg;
static struct policy pol;
static char evpath[64];

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return ss;
}

static const struct sockaddr *sa_ptr(const char *ip, uint16_t port)
{
    static struct sockaddr_storage ring[8];
    static unsigned i;
    struct sockaddr_storage *s = &ring[i++ % 8];
    *s = sa(ip, port);
    return (const struct sockaddr *)s;
}

static const struct sockaddr *sa6_ptr(const char *ip, uint16_t port)
{
    static struct sockaddr_storage ring[8];
    static unsigned i;
    struct sockaddr_storage *s = &ring[i++ % 8];
    memset(s, 0, sizeof(*s));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)s;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    return (const struct sockaddr *)s;
}

static void set_addr(struct config_addr *ca, const char *ip, uint16_t port)
{
    memset(ca, 0, sizeof(*ca));
    ca->ss = sa(ip, port);
    ca->len = sizeof(struct sockaddr_in);
    ca->port = port;
    snprintf(ca->text, sizeof(ca->text), "%s:%u", ip, (unsigned)port);
}

static int setup(void **state)
{
    config_defaults(&cfg);
    snprintf(cfg.domains[0], sizeof(cfg.domains[0]), "example.com");
    cfg.n_domains = 1;
    policy_defaults(&pol);
    pol.guard_threshold = 6;
    pol.guard_ip_threshold = 20;
    pol.guard_w_auth_failure = 2;
    pol.guard_ban_durations_s[0] = 60;
    pol.guard_ban_durations_s[1] = 600;
    pol.n_guard_ban_durations = 2;
    pol.n_guard_allowlist = 1;
    snprintf(pol.guard_allowlist[0], sizeof(pol.guard_allowlist[0]), "198.18.100.0/24");
    snprintf(evpath, sizeof(evpath), "/tmp/test_guard_ev_%d", (int)getpid());
    unlink(evpath);
    snprintf(pol.guard_event_log, sizeof(pol.guard_event_log), "%s", evpath);
    *state = NULL;
    return 0;
}

static int teardown(void **state)
{
    guard_free(*state);
    unlink(evpath);
    return 0;
}

static struct guard *mk(void **state)
{
    struct guard *g;
    struct guard_opts o = {.cfg = &cfg, .policy = &pol, .seed = 42};
    assert_int_equal(guard_new(&g, &o, 1000), 0);
    *state = g;
    assert_string_equal(guard_backend_name(g), "userspace");
    return g;
}

static int count_events(const char *needle)
{
    jsonl_flush_all(); /* the event log is written by its own thread */
    FILE *f = fopen(evpath, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, needle) != NULL)
            n++;
    fclose(f);
    return n;
}

static void fail_auth(struct guard *g, const struct sockaddr *src, int times, uint64_t now)
{
    for (int i = 0; i < times; i++)
        guard_on_response(g, src, 401, true, SLICE_LIT("sip:alice@example.com"), now);
}

/* Proof of return routability for (address, port), as the edge gives it. */
static void prove(struct guard *g, const struct sockaddr *src, uint64_t now)
{
    guard_note_proven(g, src, now);
}

static void test_guard_per_port_limit_rejects_with_retry_after_in_range(void **state)
{
    pol.guard_ip_port_rate = 5;
    pol.guard_ip_port_burst = 5;
    pol.guard_retry_after_min_s = 7;
    pol.guard_retry_after_max_s = 9;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.10", 5060);
    for (int i = 0; i < 5; i++)
        assert_int_equal(guard_admit(g, a, 2000).action, GUARD_PASS);
    struct guard_verdict v = guard_admit(g, a, 2000);
    assert_int_equal(v.action, GUARD_REJECT);
    assert_int_equal(v.status, 503);
    assert_int_equal(v.reason, GUARD_REASON_RATE_IP_PORT);
    assert_in_range(v.retry_after_s, 7, 9);
    /* Another port of the same address has its own bucket. */
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.10", 5062), 2000).action, GUARD_PASS);
    /* Refill: 200 ms at 5/s is one token. */
    assert_int_equal(guard_admit(g, a, 2200).action, GUARD_PASS);
    assert_int_equal(count_events("\"event\":\"rate_limit\""), 1);
}

static void test_guard_drop_action_and_one_trip_per_second(void **state)
{
    pol.guard_ip_rate = 2;
    pol.guard_ip_burst = 2;
    pol.guard_over_limit_action = POLICY_OVER_LIMIT_DROP;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.11", 5060);
    guard_admit(g, a, 2000);
    guard_admit(g, a, 2000);
    for (int i = 0; i < 50; i++) {
        struct guard_verdict v = guard_admit(g, a, 2000 + (uint64_t)i);
        assert_int_equal(v.action, GUARD_DROP);
        assert_int_equal(v.reason, GUARD_REASON_RATE_IP);
    }
    assert_int_equal(guard_stats(g)->rate_trips, 1);
    assert_int_equal(count_events("rate_limit"), 1);
}

static void test_guard_sustained_flood_is_banned_by_over_limit_strikes(void **state)
{
    pol.guard_ip_port_rate = 1;
    pol.guard_ip_port_burst = 1;
    pol.guard_w_over_limit = 2; /* threshold 6: the third trip bans */
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.12", 5060);
    uint64_t t = 2000;
    int i;
    for (i = 0; i < 10000; i++, t += 10)
        if (guard_admit(g, a, t).reason == GUARD_REASON_BANNED)
            break;
    assert_true(i < 10000);
    assert_true(t < 5100);
    assert_int_equal(count_events("\"reason\":\"over_limit\""), 1);
}

static void test_guard_auth_failures_ban_only_that_port(void **state)
{
    struct guard *g = mk(state);
    const struct sockaddr *bad = sa_ptr("198.18.0.20", 5070);
    const struct sockaddr *good = sa_ptr("198.18.0.20", 5071);
    guard_on_response(g, good, 200, true, SLICE_LIT("sip:bob@example.com"), 1500);
    assert_true(guard_is_authenticated(g, good, 1500));
    prove(g, bad, 1500);
    fail_auth(g, bad, 2, 2000);
    assert_int_equal(guard_admit(g, bad, 2000).action, GUARD_PASS);
    fail_auth(g, bad, 1, 2001); /* 3 x 2 = 6 = threshold */
    struct guard_verdict v = guard_admit(g, bad, 2002);
    assert_int_equal(v.action, GUARD_DROP);
    assert_int_equal(v.reason, GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, good, 2002).action, GUARD_PASS);
    assert_int_equal(count_events("\"event\":\"ban\""), 1);
    assert_int_equal(count_events("\"port\":5070,\"reason\":\"auth_failure\",\"strikes\":6,"
                                  "\"duration_s\":60,\"aor\":\"sip:alice@example.com\""),
                     1);
}

static void test_guard_whole_address_banned_at_ip_threshold(void **state)
{
    struct guard *g = mk(state);
    /* Spread over ports: no single port reaches 6, the address reaches 20. */
    for (uint16_t p = 6000; p < 6010; p++) {
        prove(g, sa_ptr("198.18.0.21", p), 1500);
        fail_auth(g, sa_ptr("198.18.0.21", p), 2, 2000);
    }
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.21", 9999), 2001).reason,
                     GUARD_REASON_BANNED);
    struct ban_key k;
    ban_key_parse("198.18.0.21", &k);
    assert_true(ban_is_banned(guard_bans(g), &k, 2001));
}

static void test_guard_scope_ip_bans_address_unless_another_port_authenticated(void **state)
{
    pol.guard_ban_scope = POLICY_BAN_SCOPE_IP;
    struct guard *g = mk(state);
    prove(g, sa_ptr("198.18.0.30", 5000), 1500);
    fail_auth(g, sa_ptr("198.18.0.30", 5000), 3, 2000);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.30", 5001), 2001).reason,
                     GUARD_REASON_BANNED);
    /* Behind this NAT another phone is authenticated: only the failing port goes. */
    guard_on_response(g, sa_ptr("198.18.0.31", 5001), 200, true, SLICE_NULL, 2000);
    prove(g, sa_ptr("198.18.0.31", 5000), 2000);
    fail_auth(g, sa_ptr("198.18.0.31", 5000), 3, 2000);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.31", 5000), 2001).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.31", 5001), 2001).action, GUARD_PASS);
}

/* Forged garbage from one address over many ports: each (address, port) is banned briefly
 * on its own, the address never, and the brief ban does not climb the ladder. */
static void test_guard_unproven_strikes_ban_only_that_port_briefly(void **state)
{
    for (int scope = 0; scope < 2; scope++) {
        pol.guard_ban_scope = scope == 0 ? POLICY_BAN_SCOPE_PORT : POLICY_BAN_SCOPE_IP;
        pol.guard_unproven_ban_s = 30;
        struct guard *g = mk(state);
        for (uint16_t p = 7000; p < 7020; p++)
            for (int i = 0; i < 3; i++) /* 3 x 2 = threshold on each port, 120 in all */
                guard_strike_malformed(g, sa_ptr("198.18.0.25", p), 2000);
        struct ban_key ka, kp;
        ban_key_parse("198.18.0.25", &ka);
        assert_false(ban_is_banned(guard_bans(g), &ka, 2001));
        assert_int_equal(guard_admit(g, sa_ptr("198.18.0.25", 9999), 2001).action, GUARD_PASS);
        struct ban_entry e;
        ban_key_parse("198.18.0.25:7000", &kp);
        assert_int_equal(ban_find(guard_bans(g), &kp, 2001, &e), 0);
        assert_int_equal(e.duration_s, 30);
        assert_int_equal(guard_admit(g, sa_ptr("198.18.0.25", 7019), 2001).reason,
                         GUARD_REASON_BANNED);
        assert_int_equal(guard_stats(g)->bans_unproven, 20);
        assert_int_equal(guard_stats(g)->strikes_unproven, 60);
        /* Again after expiry: the same brief ban, no escalation. */
        guard_tick(g, 40000);
        for (int i = 0; i < 3; i++)
            guard_strike_malformed(g, sa_ptr("198.18.0.25", 7000), 40000);
        assert_int_equal(ban_find(guard_bans(g), &kp, 40001, &e), 0);
        assert_int_equal(e.duration_s, 30);
        assert_false(ban_is_banned(guard_bans(g), &ka, 40001));
        guard_free(g);
        *state = NULL;
        unlink(evpath);
    }
}

/* A 2xx after credentials is proof too: that port's strikes count towards the address. */
static void test_guard_authenticated_port_counts_towards_address(void **state)
{
    pol.guard_ban_scope = POLICY_BAN_SCOPE_IP;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.26", 5060);
    guard_on_response(g, a, 200, true, SLICE_LIT("sip:bob@example.com"), 1500);
    for (int i = 0; i < 3; i++) /* threshold; no other port authenticated */
        guard_strike_malformed(g, a, 2000);
    struct ban_key ka;
    ban_key_parse("198.18.0.26", &ka);
    assert_true(ban_is_banned(guard_bans(g), &ka, 2001));
    assert_int_equal(guard_stats(g)->bans_unproven, 0);
}

/* The default scope is ip: a proven source at threshold loses its whole address, an
 * unproven one only its (address, port). */
static void test_guard_default_scope_is_ip(void **state)
{
    policy_defaults(&pol);
    assert_int_equal(pol.guard_ban_scope, POLICY_BAN_SCOPE_IP);
    pol.guard_threshold = 6;
    snprintf(pol.guard_event_log, sizeof(pol.guard_event_log), "%s", evpath);
    struct guard *g = mk(state);
    const struct sockaddr *proven = sa_ptr("198.18.0.27", 5060);
    prove(g, proven, 1500);
    for (int i = 0; i < 3; i++) {
        guard_strike_malformed(g, proven, 2000);
        guard_strike_malformed(g, sa_ptr("198.18.0.28", 5060), 2000);
    }
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.27", 5061), 2001).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.28", 5060), 2001).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.28", 5061), 2001).action, GUARD_PASS);
}

/* One IPv6 /64 is one source for the per-address bucket: rotating addresses inside it
 * gets one budget, and an over-limit prefix cannot fill the source table. */
static void test_guard_ipv6_prefix_shares_one_bucket(void **state)
{
    pol.guard_max_sources = 64;
    pol.guard_ip_rate = 3;
    pol.guard_ip_burst = 3;
    struct guard *g = mk(state);
    char ip[64];
    int passed = 0;
    for (int i = 1; i <= 200; i++) {
        snprintf(ip, sizeof(ip), "2001:db8:1:2::%x", i);
        passed += guard_admit(g, sa6_ptr(ip, 5060), 2000).action == GUARD_PASS;
    }
    assert_int_equal(passed, 3);
    assert_int_equal(guard_stats(g)->sources_full, 0);
    /* Another /64 has its own budget. */
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:1:3::1", 5060), 2000).action, GUARD_PASS);
}

/* Strikes of proven sources anywhere in one /64 add up, and the ban covers the prefix. */
static void test_guard_ipv6_address_ban_covers_the_prefix(void **state)
{
    pol.guard_ban_scope = POLICY_BAN_SCOPE_PORT;
    struct guard *g = mk(state);
    char ip[64];
    for (int i = 1; i <= 10; i++) { /* 10 addresses x 2 strikes = ip_threshold */
        snprintf(ip, sizeof(ip), "2001:db8:1:2::%x", i);
        prove(g, sa6_ptr(ip, 5060), 1500);
        fail_auth(g, sa6_ptr(ip, 5060), 1, 2000);
    }
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:1:2:ffff::1", 40000), 2001).reason,
                     GUARD_REASON_BANNED);
    struct ban_key k;
    ban_key_parse("2001:db8:1:2::", &k);
    assert_true(ban_is_banned(guard_bans(g), &k, 2001));
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:1:3::1", 5060), 2001).action, GUARD_PASS);
    /* An operator ban of one IPv6 address covers its /64 too (as the kernel rule does). */
    struct ban_entry e;
    ban_key_parse("2001:db8:9::5", &k);
    assert_int_equal(guard_ban(g, &k, 60, 2001, &e), 0);
    struct ban_key want;
    ban_key_parse("2001:db8:9::", &want);
    assert_memory_equal(&e.key, &want, sizeof(want));
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:9::6", 5060), 2002).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:9:1::5", 5060), 2002).action,
                     GUARD_PASS);
    assert_int_equal(guard_unban(g, &k, 2003), 0);
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:9::6", 5060), 2003).action, GUARD_PASS);
}

/* UDP flows per address (IPv6: per /64) are capped, allowlisted ones too, and the count
 * survives the idle sweep. */
static void test_guard_flows_per_address_are_capped(void **state)
{
    pol.guard_max_flows_per_ip = 3;
    struct guard *g = mk(state);
    for (uint16_t p = 1; p <= 3; p++)
        assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.95", p), 2000), 0);
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.95", 9), 2000), -ENOSPC);
    assert_int_equal(guard_stats(g)->flows_per_ip_full, 1);
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.96", 9), 2000), 0);
    /* Idle for hours: the entry holding flows is kept, so is its count. */
    for (uint64_t t = 2000; t < 4 * 3600 * 1000; t += 600000)
        guard_tick(g, t);
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.95", 9), 4 * 3600 * 1000), -ENOSPC);
    guard_flow_remove(g, sa_ptr("198.18.0.95", 2));
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.95", 9), 4 * 3600 * 1000), 0);
    /* Removes never go below zero. */
    for (int i = 0; i < 10; i++)
        guard_flow_remove(g, sa_ptr("198.18.0.97", 1));
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.0.97", 1), 4 * 3600 * 1000), 0);
    /* Allowlisted: capped as well. */
    for (uint16_t p = 1; p <= 3; p++)
        assert_int_equal(guard_flow_add(g, sa_ptr("198.18.100.7", p), 2000), 0);
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.100.7", 4), 2000), -ENOSPC);
    /* IPv6: one /64 shares the cap. */
    char ip[64];
    for (int i = 1; i <= 3; i++) {
        snprintf(ip, sizeof(ip), "2001:db8:5:6::%x", i);
        assert_int_equal(guard_flow_add(g, sa6_ptr(ip, 5060), 2000), 0);
    }
    assert_int_equal(guard_flow_add(g, sa6_ptr("2001:db8:5:6::ff", 5060), 2000), -ENOSPC);
    assert_int_equal(guard_flow_add(g, sa6_ptr("2001:db8:5:7::1", 5060), 2000), 0);
    assert_int_equal(guard_stats(g)->flows_per_ip_full, 4);
}

/* A full source table admits the flow uncounted rather than refusing it. */
static void test_guard_flows_admitted_when_sources_full(void **state)
{
    pol.guard_max_sources = 16;
    pol.guard_max_flows_per_ip = 1;
    struct guard *g = mk(state);
    char ip[32];
    for (int i = 0; i < 8; i++) {
        snprintf(ip, sizeof(ip), "198.18.3.%d", i);
        guard_admit(g, sa_ptr(ip, 5060), 2000);
    }
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.3.100", 5060), 2000), 0);
    assert_int_equal(guard_flow_add(g, sa_ptr("198.18.3.100", 5061), 2000), 0);
    assert_int_equal(guard_stats(g)->flows_untracked, 2);
    guard_flow_remove(g, sa_ptr("198.18.3.100", 5060));
}

/* A /64 holding an allowlisted address is never banned whole: its other sources lose
 * only their (address, port). */
static void test_guard_ipv6_prefix_with_allowlisted_address_not_banned_whole(void **state)
{
    pol.guard_ban_scope = POLICY_BAN_SCOPE_IP;
    snprintf(pol.guard_allowlist[1], sizeof(pol.guard_allowlist[1]), "2001:db8:4:4::10/128");
    pol.n_guard_allowlist = 2;
    struct guard *g = mk(state);
    const struct sockaddr *bad = sa6_ptr("2001:db8:4:4::66", 5060);
    prove(g, bad, 1500);
    fail_auth(g, bad, 3, 2000);
    assert_int_equal(guard_admit(g, bad, 2001).reason, GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa6_ptr("2001:db8:4:4::10", 5060), 2001).action,
                     GUARD_PASS);
    struct ban_key k;
    ban_key_parse("2001:db8:4:4::77", &k);
    assert_int_equal(guard_ban(g, &k, 60, 2001, NULL), -EPERM);
}

/* Registrars and core peers are never banned, whatever the allowlist says. */
static void test_guard_core_side_never_banned(void **state)
{
    pol.n_guard_allowlist = 0;
    set_addr(&cfg.registrar, "198.18.7.1", 5060);
    set_addr(&cfg.registrar_backups[0], "198.18.7.2", 5060);
    cfg.n_registrar_backups = 1;
    set_addr(&cfg.core_peers[0], "198.18.7.3", 5060);
    cfg.n_core_peers = 1;
    struct guard *g = mk(state);
    const char *ips[] = {"198.18.7.1", "198.18.7.2", "198.18.7.3"};
    for (int i = 0; i < 3; i++) {
        const struct sockaddr *s = sa_ptr(ips[i], 40000);
        prove(g, s, 1500);
        for (int n = 0; n < 50; n++)
            guard_strike_malformed(g, s, 2000);
        assert_int_equal(guard_admit(g, s, 2001).action, GUARD_PASS);
        struct ban_key k;
        ban_key_parse(ips[i], &k);
        assert_int_equal(guard_ban(g, &k, 60, 2001, NULL), -EPERM);
        k.port = 5060;
        assert_int_equal(guard_ban(g, &k, 60, 2001, NULL), -EPERM);
    }
    assert_int_equal(guard_stats(g)->bans, 0);
    assert_true(guard_stats(g)->strikes_allowlisted >= 150);
    config_defaults(&cfg);
}

static void test_guard_allowlisted_source_never_banned(void **state)
{
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.100.5", 5060);
    fail_auth(g, a, 100, 2000);
    guard_check_request(g, a, SLICE_LIT("REGISTER"), SLICE_LIT("friendly-scanner"), SLICE_NULL,
                        SLICE_NULL, false, 2000);
    assert_int_equal(guard_admit(g, a, 2001).action, GUARD_PASS);
    assert_int_equal(guard_stats(g)->bans, 0);
    assert_true(guard_stats(g)->strikes_allowlisted > 0);
    struct ban_key k;
    ban_key_parse("198.18.100.5", &k);
    assert_int_equal(guard_ban(g, &k, 60, 2000, NULL), -EPERM);
}

static void test_guard_scanner_user_agent_drops_and_bans(void **state)
{
    pol.guard_w_scanner = 6;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.40", 5060);
    struct guard_verdict v = guard_check_request(g, a, SLICE_LIT("OPTIONS"),
                                                 SLICE_LIT("Mozilla SIPVicious/0.3"),
                                                 SLICE_LIT("100"), SLICE_LIT("example.com"),
                                                 false, 2000);
    assert_int_equal(v.action, GUARD_DROP);
    assert_int_equal(v.reason, GUARD_REASON_SCANNER);
    assert_int_equal(guard_admit(g, a, 2001).reason, GUARD_REASON_BANNED);
    assert_int_equal(count_events("\"reason\":\"scanner\""), 1);
}

static void test_guard_unknown_domain_gets_403(void **state)
{
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.41", 5060);
    struct guard_verdict v = guard_check_request(g, a, SLICE_LIT("REGISTER"), SLICE_LIT("x"),
                                                 SLICE_LIT("alice"), SLICE_LIT("evil.test"),
                                                 true, 2000);
    assert_int_equal(v.action, GUARD_REJECT);
    assert_int_equal(v.status, 403);
    v = guard_check_request(g, a, SLICE_LIT("REGISTER"), SLICE_LIT("x"), SLICE_LIT("alice"),
                            SLICE_LIT("EXAMPLE.com:5060"), true, 2000);
    assert_int_equal(v.action, GUARD_PASS);
}

static void test_guard_distinct_404_users_count_as_scan(void **state)
{
    pol.guard_w_not_found = 0;
    pol.guard_w_user_scan = 6;
    pol.guard_unknown_users = 4;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.42", 5060);
    char aor[32];
    for (int i = 0; i < 3; i++) {
        snprintf(aor, sizeof(aor), "sip:%d@example.com", 100 + i);
        guard_on_response(g, a, 404, false, slice_make(aor, strlen(aor)), 2000);
        guard_on_response(g, a, 404, false, slice_make(aor, strlen(aor)), 2000); /* repeat */
    }
    assert_int_equal(guard_admit(g, a, 2001).action, GUARD_PASS);
    guard_on_response(g, a, 404, false, SLICE_LIT("sip:999@example.com"), 2002);
    assert_int_equal(guard_admit(g, a, 2003).reason, GUARD_REASON_BANNED);
    assert_int_equal(guard_stats(g)->user_scans, 1);
}

static void test_guard_registrar_reserve_serves_known_flows(void **state)
{
    pol.guard_registrar_rate = 10;
    pol.guard_registrar_burst = 10;
    pol.guard_registrar_reserved_pct = 30;
    pol.guard_aor_rate = 1000;
    pol.guard_aor_burst = 1000;
    struct guard *g = mk(state);
    char aor[32];
    int passed = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(aor, sizeof(aor), "sip:u%d@example.com", i);
        passed += guard_admit_register(g, sa_ptr("198.18.0.50", 5060),
                                       slice_make(aor, strlen(aor)), false, 1, 2000)
                      .action == GUARD_PASS;
    }
    assert_int_equal(passed, 7);
    struct guard_verdict v = guard_admit_register(g, sa_ptr("198.18.0.51", 5060),
                                                  SLICE_LIT("sip:k@example.com"), true, 1, 2000);
    assert_int_equal(v.action, GUARD_PASS);
    v = guard_admit_register(g, sa_ptr("198.18.0.50", 5060), SLICE_LIT("sip:z@example.com"),
                             false, 1, 2000);
    assert_int_equal(v.status, 503);
    assert_int_equal(v.reason, GUARD_REASON_RATE_REGISTRAR);
}

/* A REGISTER without credentials pays for its challenge answer too (cost 2), and that
 * answer (cost 0) passes when the budget is spent: the budget admits registrations it
 * can complete. The per-AOR bucket still applies to the answer. */
static void test_guard_registrar_challenge_answer_is_prepaid(void **state)
{
    pol.guard_registrar_rate = 10;
    pol.guard_registrar_burst = 10;
    pol.guard_registrar_reserved_pct = 0;
    pol.guard_aor_rate = 1;
    pol.guard_aor_burst = 2;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.53", 5060);
    char aor[32];
    int passed = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(aor, sizeof(aor), "sip:p%d@example.com", i);
        passed += guard_admit_register(g, a, slice_make(aor, strlen(aor)), false, 2, 2000)
                      .action == GUARD_PASS;
    }
    assert_int_equal(passed, 5); /* 10 tokens, 2 each */
    assert_int_equal(guard_admit_register(g, a, SLICE_LIT("sip:q@example.com"), false, 1, 2000)
                         .reason,
                     GUARD_REASON_RATE_REGISTRAR);
    /* The five answers pass on their prepaid tokens with the budget empty. */
    for (int i = 0; i < 5; i++) {
        snprintf(aor, sizeof(aor), "sip:p%d@example.com", i);
        assert_int_equal(
            guard_admit_register(g, a, slice_make(aor, strlen(aor)), false, 0, 2000).action,
            GUARD_PASS);
    }
    assert_int_equal(guard_stats(g)->registrar_prepaid_served, 5);
    /* A third REGISTER for one AOR within a second is over its bucket, prepaid or not. */
    assert_int_equal(
        guard_admit_register(g, a, SLICE_LIT("sip:p0@example.com"), false, 0, 2000).reason,
        GUARD_REASON_RATE_AOR);
    /* A burst of 1 still admits a first REGISTER (its cost is cut to the burst). */
    guard_free(g);
    pol.guard_registrar_burst = 1;
    g = mk(state);
    assert_int_equal(
        guard_admit_register(g, a, SLICE_LIT("sip:r@example.com"), false, 2, 2000).action,
        GUARD_PASS);
}

static void test_guard_per_aor_limit(void **state)
{
    pol.guard_aor_rate = 1;
    pol.guard_aor_burst = 2;
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.52", 5060);
    assert_int_equal(guard_admit_register(g, a, SLICE_LIT("sip:A@x"), false, 1, 2000).action,
                     GUARD_PASS);
    assert_int_equal(guard_admit_register(g, a, SLICE_LIT("sip:a@x"), false, 1, 2000).action,
                     GUARD_PASS);
    struct guard_verdict v = guard_admit_register(g, a, SLICE_LIT("sip:a@X"), false, 1, 2000);
    assert_int_equal(v.reason, GUARD_REASON_RATE_AOR);
    assert_int_equal(guard_admit_register(g, a, SLICE_LIT("sip:b@x"), false, 1, 2000).action,
                     GUARD_PASS);
}

static void test_guard_ban_table_full_keeps_oldest_and_reports(void **state)
{
    pol.guard_max_bans = 2;
    struct guard *g = mk(state);
    fail_auth(g, sa_ptr("198.18.0.60", 5060), 3, 2000);
    fail_auth(g, sa_ptr("198.18.0.61", 5060), 3, 2001);
    fail_auth(g, sa_ptr("198.18.0.62", 5060), 3, 2002);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.60", 5060), 2003).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.61", 5060), 2003).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.62", 5060), 2003).action, GUARD_PASS);
    assert_int_equal(guard_stats(g)->bans_refused_full, 1);
    assert_int_equal(count_events("\"event\":\"ban_refused\""), 1);
}

static void test_guard_escalates_after_expiry(void **state)
{
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.70", 5060);
    prove(g, a, 1500);
    fail_auth(g, a, 3, 2000);
    assert_int_equal(guard_admit(g, a, 2001).reason, GUARD_REASON_BANNED);
    guard_tick(g, 62001);
    assert_int_equal(guard_admit(g, a, 62001).action, GUARD_PASS);
    assert_int_equal(count_events("\"event\":\"expire\""), 1);
    fail_auth(g, a, 3, 63000);
    assert_int_equal(count_events("\"duration_s\":600"), 1);
}

static void test_guard_sources_table_full_uses_shared_bucket(void **state)
{
    pol.guard_max_sources = 16;
    pol.guard_ip_rate = 3;
    pol.guard_ip_burst = 3;
    struct guard *g = mk(state);
    char ip[32];
    for (int i = 0; i < 8; i++) { /* 8 addresses x 2 entries fill the table */
        snprintf(ip, sizeof(ip), "198.18.1.%d", i);
        assert_int_equal(guard_admit(g, sa_ptr(ip, 5060), 2000).action, GUARD_PASS);
    }
    int passed = 0;
    for (int i = 8; i < 40; i++) {
        snprintf(ip, sizeof(ip), "198.18.1.%d", i);
        passed += guard_admit(g, sa_ptr(ip, 5060), 2000).action == GUARD_PASS;
    }
    assert_int_equal(passed, 3);
    assert_true(guard_stats(g)->sources_full >= 32);
}

static void test_guard_set_policy_keeps_bans_and_refuses_bad_event_log(void **state)
{
    struct guard *g = mk(state);
    const struct sockaddr *a = sa_ptr("198.18.0.80", 5060);
    fail_auth(g, a, 3, 2000);
    struct policy p2 = pol;
    p2.guard_threshold = 100;
    snprintf(p2.guard_event_log, sizeof(p2.guard_event_log), "/nonexistent-dir/ev.log");
    assert_true(guard_set_policy(g, &p2, 2001) < 0);
    snprintf(p2.guard_event_log, sizeof(p2.guard_event_log), "%s", evpath);
    assert_int_equal(guard_set_policy(g, &p2, 2001), 0);
    assert_int_equal(guard_admit(g, a, 2002).reason, GUARD_REASON_BANNED);
}

static void on_backend_closed(void *ctx)
{
    (*(unsigned *)ctx)++;
}

/* The guard borrows the backend it is given: it runs on it, and the owner closes it after
 * guard_free, with the callback telling when it is gone. */
static void test_guard_borrows_its_backend(void **state)
{
    (void)state;
    struct ban_backend *be = NULL;
    assert_int_equal(ban_null_new(&be), 0);
    struct guard *g;
    struct guard_opts o = {.cfg = &cfg, .policy = &pol, .backend = be, .seed = 42};
    assert_int_equal(guard_new(&g, &o, 1000), 0);
    assert_ptr_equal(ban_backend_of(guard_bans(g)), be);
    assert_string_equal(guard_backend_name(g), "userspace");
    guard_free(g);
    unsigned closed = 0;
    ban_backend_close(be, on_backend_closed, &closed);
    assert_int_equal(closed, 1);
    ban_backend_close(NULL, on_backend_closed, &closed); /* none: at once */
    assert_int_equal(closed, 2);
}

static void test_guard_admin_commands(void **state)
{
    struct guard *g = mk(state);
    char out[4096];
    guard_tick(g, 5000);
    assert_true(admin_cmd_exec(g, "ban 198.18.0.90:5062 2m\n", out, sizeof(out)) > 0);
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_non_null(strstr(out, "\"duration_s\":120"));
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.90", 5062), 5001).reason,
                     GUARD_REASON_BANNED);
    admin_cmd_exec(g, "bans", out, sizeof(out));
    assert_non_null(strstr(out, "\"source\":\"198.18.0.90\",\"port\":5062"));
    admin_cmd_exec(g, "unban 198.18.0.90:5062", out, sizeof(out));
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_int_equal(guard_admit(g, sa_ptr("198.18.0.90", 5062), 5002).action, GUARD_PASS);
    admin_cmd_exec(g, "unban 198.18.0.90:5062", out, sizeof(out));
    assert_non_null(strstr(out, "not banned"));
    admin_cmd_exec(g, "ban 198.18.100.1", out, sizeof(out));
    assert_non_null(strstr(out, "allowlisted"));
    admin_cmd_exec(g, "ban nonsense\x01\"", out, sizeof(out));
    assert_non_null(strstr(out, "bad address: nonsense\\u0001\\\""));
    admin_cmd_exec(g, "stats", out, sizeof(out));
    assert_non_null(strstr(out, "\"unbans\":1"));
    assert_int_equal(count_events("\"event\":\"unban\""), 1);
    assert_int_equal(admin_cmd_exec(g, "stats", out, 16), -EINVAL);
}

static void test_guard_bans_list_is_cut_when_reply_is_small(void **state)
{
    struct guard *g = mk(state);
    char cmd[64], out[400];
    for (int i = 0; i < 20; i++) {
        snprintf(cmd, sizeof(cmd), "ban 198.18.2.%d 60", i);
        admin_cmd_exec(g, cmd, out, sizeof(out));
    }
    int n = admin_cmd_exec(g, "bans", out, sizeof(out));
    assert_true(n > 0 && (size_t)n < sizeof(out));
    assert_non_null(strstr(out, "\"truncated\":true}"));
    assert_int_equal(out[n - 1], '\n');
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_guard_per_port_limit_rejects_with_retry_after_in_range),
        T(test_guard_drop_action_and_one_trip_per_second),
        T(test_guard_sustained_flood_is_banned_by_over_limit_strikes),
        T(test_guard_auth_failures_ban_only_that_port),
        T(test_guard_whole_address_banned_at_ip_threshold),
        T(test_guard_scope_ip_bans_address_unless_another_port_authenticated),
        T(test_guard_unproven_strikes_ban_only_that_port_briefly),
        T(test_guard_authenticated_port_counts_towards_address),
        T(test_guard_default_scope_is_ip),
        T(test_guard_ipv6_prefix_shares_one_bucket),
        T(test_guard_ipv6_prefix_with_allowlisted_address_not_banned_whole),
        T(test_guard_flows_per_address_are_capped),
        T(test_guard_flows_admitted_when_sources_full),
        T(test_guard_ipv6_address_ban_covers_the_prefix),
        T(test_guard_core_side_never_banned),
        T(test_guard_allowlisted_source_never_banned),
        T(test_guard_scanner_user_agent_drops_and_bans),
        T(test_guard_unknown_domain_gets_403),
        T(test_guard_distinct_404_users_count_as_scan),
        T(test_guard_registrar_reserve_serves_known_flows),
        T(test_guard_registrar_challenge_answer_is_prepaid),
        T(test_guard_per_aor_limit),
        T(test_guard_ban_table_full_keeps_oldest_and_reports),
        T(test_guard_escalates_after_expiry),
        T(test_guard_sources_table_full_uses_shared_bucket),
        T(test_guard_set_policy_keeps_bans_and_refuses_bad_event_log),
        T(test_guard_borrows_its_backend),
        T(test_guard_admin_commands),
        T(test_guard_bans_list_is_cut_when_reply_is_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
