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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
