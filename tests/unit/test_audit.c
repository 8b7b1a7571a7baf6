/* audit: JSON lines with attacker bytes escaped, and the three security signals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "sipedge/audit.h"
#include "sipedge/flow_table.h"

static struct sockaddr_in addr4(const char *ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct audit *new_audit(void)
{
    struct audit *a = NULL;
    struct audit_opts o = {.path = "", .max_aors = 4, .max_contacts = 4, .device_window_s = 60};
    assert_int_equal(audit_new(&a, &o), 0);
    return a;
}

static struct edge_reg_event reg(const char *aor, const struct sockaddr_in *src,
                                 const char *contacts, const char *ua, uint16_t status)
{
    struct edge_reg_event ev = {
        .aor = aor,
        .src = (const struct sockaddr *)src,
        .transport = FLOW_UDP,
        .contacts = contacts,
        .expires_s = status == 200 ? 600 : 0,
        .user_agent = ua,
        .status = status,
        .flow_ref = (3ULL << 32) | 7,
    };
    return ev;
}

/* True when line is one line, ends in "}\n" and has no raw control byte. */
static int is_one_json_line(const char *line, size_t len)
{
    if (len < 3 || line[0] != '{' || line[len - 1] != '\n' || line[len - 2] != '}')
        return 0;
    for (size_t i = 0; i < len - 1; i++)
        if ((unsigned char)line[i] < 0x20)
            return 0;
    return 1;
}

static void test_audit_register_line_has_every_field(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    struct sockaddr_in src = addr4("198.51.100.7", 5062);
    struct edge_reg_event ev = reg("sip:alice@example.com", &src, "<sip:alice@10.0.0.2:5062>",
                                   "Phone/1.0", 200);
    char line[AUDIT_LINE_MAX];
    size_t n = audit_format_register(a, line, sizeof(line), &ev, 1714564800123ULL, 1000, NULL);
    assert_true(is_one_json_line(line, n));
    assert_non_null(strstr(line, "\"ts\":\"2024-05-01T12:00:00.123Z\""));
    assert_non_null(strstr(line, "\"event\":\"register\""));
    assert_non_null(strstr(line, "\"aor\":\"sip:alice@example.com\""));
    assert_non_null(strstr(line, "\"source\":\"198.51.100.7:5062\""));
    assert_non_null(strstr(line, "\"transport\":\"udp\""));
    assert_non_null(strstr(line, "\"contacts\":\"<sip:alice@10.0.0.2:5062>\""));
    assert_non_null(strstr(line, "\"expires\":600"));
    assert_non_null(strstr(line, "\"user_agent\":\"Phone/1.0\""));
    assert_non_null(strstr(line, "\"status\":200"));
    assert_non_null(strstr(line, "\"from_cache\":false"));
    assert_non_null(strstr(line, "\"flow\":\"0x0000000300000007\""));
    assert_null(strstr(line, "signals"));
    audit_free(a);
}

static void test_audit_escapes_hostile_user_agent(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    struct sockaddr_in src = addr4("198.51.100.7", 5062);
    struct edge_reg_event ev =
        reg("sip:\"x\"@example.com", &src, "<sip:a@b>", "evil\"\r\n{\"ua\":\\\x01\xff", 401);
    char line[AUDIT_LINE_MAX];
    size_t n = audit_format_register(a, line, sizeof(line), &ev, 1, 1000, NULL);
    assert_true(is_one_json_line(line, n));
    assert_non_null(strstr(line, "\"user_agent\":\"evil\\\"\\r\\n{\\\"ua\\\":\\\\\\u0001"));
    assert_non_null(strstr(line, "\"aor\":\"sip:\\\"x\\\"@example.com\""));
    audit_free(a);
}

static void test_audit_flags_device_change_within_window_only(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060), s2 = addr4("203.0.113.9", 5060);
    struct sockaddr_in s1p = addr4("198.51.100.7", 6000);
    char line[AUDIT_LINE_MAX];
    unsigned sig = 99;
    struct edge_reg_event ev = reg("sip:bob@x", &s1, "<sip:bob@1>", "UA", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 1000, &sig);
    assert_int_equal(sig, 0);
    /* Same address, other port (NAT rebinding): no signal. */
    ev = reg("sip:bob@x", &s1p, "<sip:bob@1>", "UA", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 2000, &sig);
    assert_int_equal(sig, 0);
    ev = reg("sip:bob@x", &s2, "<sip:bob@1>", "UA", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 3000, &sig);
    assert_int_equal(sig, AUDIT_SIGNAL_DEVICE_CHANGE);
    assert_non_null(strstr(line, "\"signals\":[\"device_change\"]"));
    /* Back to s1 after the 60 s window: no signal. */
    ev = reg("sip:bob@x", &s1, "<sip:bob@1>", "UA", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 3000 + 61000, &sig);
    assert_int_equal(sig, 0);
    assert_int_equal(audit_stats(a)->signals[0], 1);
    audit_free(a);
}

static void test_audit_flags_dup_contact_and_ua_change(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060);
    char line[AUDIT_LINE_MAX];
    unsigned sig;
    struct edge_reg_event ev = reg("sip:carol@x", &s1, "<sip:shared@10.0.0.1>;q=1", "UA/1", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 1000, &sig);
    assert_int_equal(sig, 0);
    ev = reg("sip:dave@x", &s1, "<sip:other@10.0.0.2>, <sip:shared@10.0.0.1>", "UA/1", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 2000, &sig);
    assert_int_equal(sig, AUDIT_SIGNAL_DUP_CONTACT);
    ev = reg("sip:carol@x", &s1, "<sip:shared@10.0.0.1>", "Scanner/9", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 3000, &sig);
    assert_true(sig & AUDIT_SIGNAL_UA_CHANGE);
    assert_non_null(strstr(line, "\"ua_change\""));
    /* A removal (its 200 carries no User-Agent) says nothing about who holds the AOR. */
    ev = reg("sip:carol@x", &s1, "", "", 200);
    ev.expires_s = 0;
    audit_format_register(a, line, sizeof(line), &ev, 1, 4000, &sig);
    assert_false(sig & AUDIT_SIGNAL_UA_CHANGE);
    audit_free(a);
}

static void test_audit_table_full_counts_and_keeps_old_entries(void **state)
{
    (void)state;
    struct audit *a = new_audit(); /* 4 AORs */
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060), s2 = addr4("203.0.113.9", 5060);
    char line[AUDIT_LINE_MAX], aor[32], c[32];
    unsigned sig;
    for (int i = 0; i < 6; i++) {
        snprintf(aor, sizeof(aor), "sip:u%d@x", i);
        snprintf(c, sizeof(c), "<sip:u%d@h>", i);
        struct edge_reg_event ev = reg(aor, &s1, c, "UA", 200);
        audit_format_register(a, line, sizeof(line), &ev, 1, 1000, &sig);
    }
    assert_int_equal(audit_stats(a)->aors_full, 2);
    assert_int_equal(audit_stats(a)->contacts_full, 2);
    /* The first AOR is still tracked. */
    struct edge_reg_event ev = reg("sip:u0@x", &s2, "<sip:u0@h>", "UA", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 2000, &sig);
    assert_int_equal(sig, AUDIT_SIGNAL_DEVICE_CHANGE);
    audit_free(a);
}

static void test_audit_failed_registration_does_not_train_tables(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060), s2 = addr4("203.0.113.9", 5060);
    char line[AUDIT_LINE_MAX];
    unsigned sig;
    struct edge_reg_event ev = reg("sip:erin@x", &s2, "<sip:e@h>", "Bad", 401);
    audit_format_register(a, line, sizeof(line), &ev, 1, 1000, &sig);
    ev = reg("sip:erin@x", &s1, "<sip:e@h>", "Good", 200);
    audit_format_register(a, line, sizeof(line), &ev, 1, 2000, &sig);
    assert_int_equal(sig, 0);
    audit_free(a);
}

static void test_audit_writes_lines_and_reopens(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_audit.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], moved[128];
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    snprintf(moved, sizeof(moved), "%s/audit.log.1", dir);
    struct audit *a = NULL;
    struct audit_opts o = {.path = path};
    assert_int_equal(audit_new(&a, &o), 0);
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060);
    audit_flow(a, EDGE_FLOW_OPENED, 1, FLOW_WS, (const struct sockaddr *)&s1, "ws");
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(audit_reopen(a), 0);
    struct edge_reg_event ev = reg("sip:f@x", &s1, "<sip:f@h>", "UA", 200);
    audit_register(a, &ev, 1000);
    assert_int_equal(audit_stats(a)->lines_written, 2);
    audit_free(a);
    char buf[4096];
    FILE *f = fopen(moved, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    assert_non_null(strstr(buf, "\"event\":\"flow_open\""));
    assert_non_null(strstr(buf, "\"transport\":\"ws\""));
    fclose(f);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    assert_non_null(strstr(buf, "\"event\":\"register\""));
    fclose(f);
    unlink(path);
    unlink(moved);
    rmdir(dir);
}

static unsigned count_lines(const char *path, const char *needle)
{
    char buf[AUDIT_LINE_MAX];
    unsigned n = 0;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(buf, sizeof(buf), f))
        n += strstr(buf, needle) != NULL;
    fclose(f);
    return n;
}

static void test_audit_source_budget_suppresses_and_summarises(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_audit.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    struct audit *a = NULL;
    struct audit_opts o = {.path = path};
    assert_int_equal(audit_new(&a, &o), 0);
    struct sockaddr_in s1 = addr4("198.51.100.7", 5060);
    struct sockaddr_in s1b = addr4("198.51.100.7", 5062); /* same source, other port */
    struct sockaddr_in s2 = addr4("198.51.100.8", 5060);
    struct edge_reg_event ev = reg("sip:flood@x", &s1, "<sip:f@h>", "UA", 401);
    struct edge_reg_event evb = reg("sip:flood@x", &s1b, "<sip:f@h>", "UA", 401);
    struct edge_reg_event ev2 = reg("sip:other@x", &s2, "<sip:o@h>", "UA", 401);
    uint64_t t = 1000000;

    /* 100 lines in the same millisecond: the burst goes out, the rest is counted. */
    for (int i = 0; i < 100; i++)
        audit_register(a, i % 2 ? &evb : &ev, t);
    assert_int_equal(audit_stats(a)->lines_written, AUDIT_SOURCE_BURST);
    assert_int_equal(audit_stats(a)->lines_suppressed, 100 - AUDIT_SOURCE_BURST);
    /* Another source is not affected. */
    audit_register(a, &ev2, t);
    assert_int_equal(audit_stats(a)->lines_written, AUDIT_SOURCE_BURST + 1);

    /* 50 ms later one token is back: the summary line, then the line itself. */
    audit_register(a, &ev, t + 50);
    assert_int_equal(audit_stats(a)->lines_written, AUDIT_SOURCE_BURST + 3);
    /* ... and the next one is suppressed again and starts a new count. */
    audit_register(a, &ev, t + 50);
    assert_int_equal(audit_stats(a)->lines_suppressed, 100 - AUDIT_SOURCE_BURST + 1);

    /* Flow lines share the budget of their source. */
    uint64_t sup = 99;
    assert_false(audit_source_allow(a, (const struct sockaddr *)&s1, t + 50, &sup));
    assert_true(audit_source_allow(a, (const struct sockaddr *)&s1, t + 100, &sup));
    assert_int_equal(sup, 2);
    /* After a second at rest the whole burst is there again. */
    for (int i = 0; i < AUDIT_SOURCE_BURST; i++)
        assert_true(audit_source_allow(a, (const struct sockaddr *)&s1, t + 2100, &sup));
    assert_false(audit_source_allow(a, (const struct sockaddr *)&s1, t + 2100, &sup));
    /* No address: never limited. */
    for (int i = 0; i < 100; i++)
        assert_true(audit_source_allow(a, NULL, t, &sup));
    audit_free(a);

    char want[64];
    snprintf(want, sizeof(want), "\"lines\":%d,", 100 - AUDIT_SOURCE_BURST);
    assert_int_equal(count_lines(path, "\"event\":\"suppressed\""), 1);
    assert_int_equal(count_lines(path, want), 1);
    assert_int_equal(count_lines(path, "\"source\":\"198.51.100.7\""), 1);
    char msg[64];
    snprintf(msg, sizeof(msg), "suppressed %d lines", 100 - AUDIT_SOURCE_BURST);
    assert_int_equal(count_lines(path, msg), 1);
    assert_int_equal(count_lines(path, "sip:flood@x"), AUDIT_SOURCE_BURST + 1);
    assert_int_equal(count_lines(path, "sip:other@x"), 1);
    unlink(path);
    rmdir(dir);
}

static void test_audit_source_table_is_bounded(void **state)
{
    (void)state;
    struct audit *a = new_audit();
    uint64_t sup;
    /* Far more sources than the table holds, each over its burst: the table never grows,
     * busy runs let lines through (counted) rather than silencing others. */
    for (uint32_t i = 0; i < 4 * AUDIT_SOURCES_MAX; i++) {
        struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        for (int k = 0; k < AUDIT_SOURCE_BURST + 1; k++)
            audit_source_allow(a, (const struct sockaddr *)&s, 1000, &sup);
    }
    assert_true(audit_stats(a)->sources_untracked > 0);
    assert_true(audit_stats(a)->lines_suppressed > 0);
    assert_true(audit_stats(a)->lines_suppressed <= (uint64_t)AUDIT_SOURCES_MAX);
    audit_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_register_line_has_every_field),
        cmocka_unit_test(test_audit_escapes_hostile_user_agent),
        cmocka_unit_test(test_audit_flags_device_change_within_window_only),
        cmocka_unit_test(test_audit_flags_dup_contact_and_ua_change),
        cmocka_unit_test(test_audit_table_full_counts_and_keeps_old_entries),
        cmocka_unit_test(test_audit_failed_registration_does_not_train_tables),
        cmocka_unit_test(test_audit_writes_lines_and_reopens),
        cmocka_unit_test(test_audit_source_budget_suppresses_and_summarises),
        cmocka_unit_test(test_audit_source_table_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
