/* sip_msg: start line, header index, limits, Content-Length, mandatory headers. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/sip_check.h"
#include "sipedge/sip_msg.h"

#define MAX_HDRS 64

static const struct sip_limits limits = {.max_msg_bytes = 65535, .max_headers = MAX_HDRS};
static struct sip_hdr hdrs[MAX_HDRS];

#define REG_HEAD "REGISTER sip:example.com SIP/2.0\r\n" REG_HEAD_HEADERS
#define REG_HEAD_HEADERS                                                                   \
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"                            \
    "From: <sip:a@example.com>;tag=1\r\n"                                                  \
    "To: <sip:a@example.com>\r\n"                                                          \
    "Call-ID: c1\r\n"                                                                      \
    "CSeq: 1 REGISTER\r\n"

static int parse(struct sip_msg *m, const char *s, struct sip_err *err)
{
    return sip_msg_parse(m, s, strlen(s), hdrs, &limits, err);
}

static void test_sip_msg_parses_request_line_and_index(void **state)
{
    const char *s = REG_HEAD "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, s, &err), 0);
    assert_true(m.is_request);
    assert_int_equal(m.method_id, SIP_METHOD_REGISTER);
    assert_true(slice_eq(m.method, SLICE_LIT("REGISTER")));
    assert_true(slice_eq(m.ruri, SLICE_LIT("sip:example.com")));
    assert_int_equal(m.start_line_len, strlen("REGISTER sip:example.com SIP/2.0\r\n"));
    assert_int_equal(m.n_hdrs, 7);
    assert_int_equal(m.first[SIP_HDR_VIA], 0);
    assert_int_equal(m.first[SIP_HDR_CSEQ], 4);
    assert_int_equal(m.first[SIP_HDR_EXPIRES], -1);
    assert_true(slice_eq(sip_msg_hdr(&m, SIP_HDR_CALL_ID)->value, SLICE_LIT("c1")));
    assert_int_equal(m.hdrs[1].off, m.start_line_len + strlen(
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"));
    assert_int_equal(m.hdrs[4].line_len, strlen("CSeq: 1 REGISTER\r\n"));
    assert_true(m.has_content_length);
    assert_int_equal(m.len, strlen(s));
    assert_int_equal(m.hdr_end, strlen(s) - 2);
    assert_null(sip_msg_hdr(&m, SIP_HDR_EXPIRES));
}

static void test_sip_msg_parses_status_line(void **state)
{
    const char *s = "SIP/2.0 401 Unauthorized here\r\n"
                    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
                    "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\n"
                    "Call-ID: c1\r\nCSeq: 1 REGISTER\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, s, &err), 0);
    assert_false(m.is_request);
    assert_int_equal(m.status, 401);
    assert_true(slice_eq(m.reason, SLICE_LIT("Unauthorized here")));
}

static void test_sip_msg_compact_forms_map_to_ids(void **state)
{
    static const struct {
        const char *name;
        enum sip_hdr_id id;
    } cases[] = {
        {"v", SIP_HDR_VIA},           {"f", SIP_HDR_FROM},          {"t", SIP_HDR_TO},
        {"i", SIP_HDR_CALL_ID},       {"m", SIP_HDR_CONTACT},       {"k", SIP_HDR_SUPPORTED},
        {"l", SIP_HDR_CONTENT_LENGTH}, {"c", SIP_HDR_CONTENT_TYPE}, {"V", SIP_HDR_VIA},
        {"e", SIP_HDR_OTHER},         {"s", SIP_HDR_OTHER},         {"o", SIP_HDR_OTHER},
        {"via", SIP_HDR_VIA},         {"cAlL-iD", SIP_HDR_CALL_ID}, {"Contact", SIP_HDR_CONTACT},
        {"Max-Forwards", SIP_HDR_MAX_FORWARDS}, {"Record-Route", SIP_HDR_RECORD_ROUTE},
        {"P-Preferred-Identity", SIP_HDR_P_PREFERRED_IDENTITY}, {"Flow-Timer", SIP_HDR_FLOW_TIMER},
        {"Proxy-Authorization", SIP_HDR_PROXY_AUTHORIZATION}, {"Date", SIP_HDR_DATE},
        {"Contacts", SIP_HDR_OTHER},  {"Vias", SIP_HDR_OTHER},      {"", SIP_HDR_OTHER},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct slice n = slice_make(cases[i].name, strlen(cases[i].name));
        assert_int_equal(sip_hdr_id_lookup(n), cases[i].id);
    }
}

static void test_sip_msg_compact_message_indexes_all(void **state)
{
    const char *s = "REGISTER sip:example.com SIP/2.0\r\n"
                    "v: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\n"
                    "i: x\r\nCSeq: 1 REGISTER\r\nm: <sip:a@h>\r\nl: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, s, &err), 0);
    assert_int_equal(m.count[SIP_HDR_CONTACT], 1);
    assert_true(slice_eq(sip_msg_hdr(&m, SIP_HDR_CONTACT)->name, SLICE_LIT("m")));
    assert_true(m.has_content_length);
}

static void test_sip_msg_folded_value_stays_in_one_header(void **state)
{
    const char *s = REG_HEAD "Contact: <sip:a@h1>,\r\n  <sip:a@h2>\r\n"
                             "Subject: one\r\n\ttwo \r\nl: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};
    const struct sip_hdr *h;

    (void)state;
    assert_int_equal(parse(&m, s, &err), 0);
    assert_int_equal(m.n_hdrs, 8);
    h = sip_msg_hdr(&m, SIP_HDR_CONTACT);
    assert_true(slice_eq(h->value, SLICE_LIT("<sip:a@h1>,\r\n  <sip:a@h2>")));
    assert_int_equal(h->line_len, strlen("Contact: <sip:a@h1>,\r\n  <sip:a@h2>\r\n"));
    h = &m.hdrs[6];
    assert_true(slice_eq(h->value, SLICE_LIT("one\r\n\ttwo")));
}

static void test_sip_msg_fold_before_first_header_fails(void **state)
{
    const char *s = "OPTIONS sip:x SIP/2.0\r\n folded\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, s, &err), -EBADMSG);
    assert_int_equal(err.status, 400);
}

static void test_sip_msg_bare_lf_is_accepted_bare_cr_is_not(void **state)
{
    const char *lf = "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n"
                     "From: <sip:a@b>;tag=1\nTo: <sip:a@b>\nCall-ID: x\nCSeq: 1 REGISTER\n\n";
    const char *cr = REG_HEAD "Subject: a\rb\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, lf, &err), 0);
    assert_int_equal(m.n_hdrs, 5);
    assert_true(slice_eq(sip_msg_hdr(&m, SIP_HDR_CALL_ID)->value, SLICE_LIT("x")));
    assert_int_equal(parse(&m, cr, &err), -EBADMSG);
}

static void test_sip_msg_header_count_limit(void **state)
{
    const char *s = REG_HEAD "Max-Forwards: 70\r\nl: 0\r\n\r\n";
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 6};
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(sip_msg_parse(&m, s, strlen(s), hdrs, &lim, &err), -E2BIG);
    lim.max_headers = 7;
    assert_int_equal(sip_msg_parse(&m, s, strlen(s), hdrs, &lim, &err), 0);
}

static void test_sip_msg_size_limit(void **state)
{
    const char *s = REG_HEAD "l: 0\r\n\r\n";
    struct sip_limits lim = {.max_msg_bytes = (uint32_t)strlen(s) - 1, .max_headers = MAX_HDRS};
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(sip_msg_parse(&m, s, strlen(s), hdrs, &lim, &err), -EMSGSIZE);
    assert_int_equal(err.status, 513);
    lim.max_msg_bytes++;
    assert_int_equal(sip_msg_parse(&m, s, strlen(s), hdrs, &lim, &err), 0);
}

static void test_sip_msg_missing_mandatory_headers(void **state)
{
    static const char *cases[][2] = {
        {"REGISTER sip:e SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\n"
         "CSeq: 1 REGISTER\r\n\r\n", "Missing Via"},
        {"REGISTER sip:e SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nCall-ID: x\r\n"
         "CSeq: 1 REGISTER\r\n\r\n", "Missing From"},
        {"REGISTER sip:e SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nCall-ID: x\r\n"
         "CSeq: 1 REGISTER\r\n\r\n", "Missing To"},
        {"REGISTER sip:e SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
         "CSeq: 1 REGISTER\r\n\r\n", "Missing Call-ID"},
        {"REGISTER sip:e SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
         "Call-ID: x\r\n\r\n", "Missing CSeq"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sip_msg m;
        struct sip_err err = {0};

        assert_int_equal(parse(&m, cases[i][0], &err), -EBADMSG);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.reason, cases[i][1]);
    }
}

static void test_sip_msg_non_sip_payload_gets_no_response(void **state)
{
    static const unsigned char tls_hello[] = {0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00,
                                              0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a};
    static const char *texts[] = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n\r\n",
                                  "hello world", "SIP/2.0 99 Bad\r\n\r\n"};
    struct sip_msg m;
    struct sip_err err = {.status = 1};

    (void)state;
    assert_int_equal(sip_msg_parse(&m, (const char *)tls_hello, sizeof(tls_hello), hdrs,
                                   &limits, &err), -EBADMSG);
    assert_int_equal(err.status, 0);
    for (size_t i = 0; i < 4; i++) {
        err.status = 1;
        assert_int_equal(parse(&m, texts[i], &err), -EBADMSG);
        assert_int_equal(err.status, 0);
    }
    assert_int_equal(sip_msg_parse(&m, "", 0, hdrs, &limits, &err), -EBADMSG);
}

static void test_sip_msg_start_line_errors(void **state)
{
    static const struct {
        const char *line;
        int status;
    } cases[] = {
        {"REGISTER  sip:example.com SIP/2.0", 400}, {"REGISTER sip:example.com  SIP/2.0", 400},
        {"REGISTER sip:example.com SIP/2.0 ", 400}, {"REGISTER sip:example.com SIP/3.0", 505},
        {"REGISTER sip:example.com; lr SIP/2.0", 400}, {"SIP/2.0 2000 OK", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[512];
        struct sip_msg m;
        struct sip_err err = {0};

        snprintf(buf, sizeof(buf), "%s\r\n%s", cases[i].line, REG_HEAD_HEADERS "\r\n");
        assert_int_equal(parse(&m, buf, &err), -EBADMSG);
        assert_int_equal(err.status, cases[i].status);
    }
}

static void test_sip_msg_content_length_rules(void **state)
{
    char buf[512];
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    /* Absent: the rest of the datagram is the body (RFC 3261 §18.3). */
    assert_int_equal(parse(&m, REG_HEAD "\r\nabc", &err), 0);
    assert_false(m.has_content_length);
    assert_int_equal(m.content_length, 3);
    assert_true(slice_eq(m.body, SLICE_LIT("abc")));
    /* Present: bytes after the body are ignored. */
    assert_int_equal(parse(&m, REG_HEAD "l: 2\r\n\r\nabc", &err), 0);
    assert_true(slice_eq(m.body, SLICE_LIT("ab")));
    assert_int_equal(m.len, strlen(REG_HEAD "l: 2\r\n\r\nab"));
    /* Larger than what is left, negative, not a number. */
    assert_int_equal(parse(&m, REG_HEAD "l: 4\r\n\r\nabc", &err), -EBADMSG);
    assert_int_equal(err.status, 400);
    assert_int_equal(parse(&m, REG_HEAD "l: -1\r\n\r\nabc", &err), -EBADMSG);
    assert_int_equal(parse(&m, REG_HEAD "l: 1 2\r\n\r\nabc", &err), -EBADMSG);
    snprintf(buf, sizeof(buf), REG_HEAD "Content-Length: 99999999999\r\n\r\n");
    assert_int_equal(parse(&m, buf, &err), -EBADMSG);
}

static void test_sip_msg_cseq_checked_against_method(void **state)
{
    const char *s = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\n"
                    "To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    const char *big = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\n"
                      "To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 2147483648 OPTIONS\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse(&m, s, &err), -EBADMSG);
    assert_string_equal(err.reason, "CSeq method mismatch");
    assert_int_equal(parse(&m, big, &err), -EBADMSG);
    assert_string_equal(err.reason, "Bad CSeq");
}

static void test_sip_msg_hdr_next_walks_same_id(void **state)
{
    const char *s = REG_HEAD "Contact: <sip:a@1>\r\nX: y\r\nm: <sip:a@2>\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};
    const struct sip_hdr *h;

    (void)state;
    assert_int_equal(parse(&m, s, &err), 0);
    h = sip_msg_hdr(&m, SIP_HDR_CONTACT);
    assert_true(slice_eq(h->value, SLICE_LIT("<sip:a@1>")));
    h = sip_msg_hdr_next(&m, h);
    assert_non_null(h);
    assert_true(slice_eq(h->value, SLICE_LIT("<sip:a@2>")));
    assert_null(sip_msg_hdr_next(&m, h));
    assert_int_equal(m.count[SIP_HDR_CONTACT], 2);
}

static void test_sip_msg_method_lookup(void **state)
{
    (void)state;
    assert_int_equal(sip_method_lookup(SLICE_LIT("INVITE")), SIP_METHOD_INVITE);
    assert_int_equal(sip_method_lookup(SLICE_LIT("SUBSCRIBE")), SIP_METHOD_SUBSCRIBE);
    assert_int_equal(sip_method_lookup(SLICE_LIT("ACK")), SIP_METHOD_ACK);
    assert_int_equal(sip_method_lookup(SLICE_LIT("invite")), SIP_METHOD_OTHER);
    assert_int_equal(sip_method_lookup(SLICE_LIT("INVITEX")), SIP_METHOD_OTHER);
}

/* Every file in tests/data/sip/valid passes parse+check; every invalid one fails. */
static void run_dir(const char *sub, bool want_ok)
{
    char dir[512], path[1024];
    static char buf[65536];
    struct dirent *de;
    DIR *d;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/sip/%s", TEST_DATA_DIR, sub);
    d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".sip") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        struct sip_msg m;
        struct sip_err err = {0};
        int rc = sip_msg_parse(&m, buf, len, hdrs, &limits, &err);
        if (rc == 0)
            rc = sip_check_msg(&m, &err);
        if ((rc == 0) != want_ok)
            fail_msg("%s: rc=%d (%s)", de->d_name, rc, rc ? err.reason : "accepted");
        n++;
    }
    closedir(d);
    assert_true(n >= 5);
}

static void test_sip_msg_valid_files_pass(void **state)
{
    (void)state;
    run_dir("valid", true);
}

static void test_sip_msg_invalid_files_fail(void **state)
{
    (void)state;
    run_dir("invalid", false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_msg_parses_request_line_and_index),
        cmocka_unit_test(test_sip_msg_parses_status_line),
        cmocka_unit_test(test_sip_msg_compact_forms_map_to_ids),
        cmocka_unit_test(test_sip_msg_compact_message_indexes_all),
        cmocka_unit_test(test_sip_msg_folded_value_stays_in_one_header),
        cmocka_unit_test(test_sip_msg_fold_before_first_header_fails),
        cmocka_unit_test(test_sip_msg_bare_lf_is_accepted_bare_cr_is_not),
        cmocka_unit_test(test_sip_msg_header_count_limit),
        cmocka_unit_test(test_sip_msg_size_limit),
        cmocka_unit_test(test_sip_msg_missing_mandatory_headers),
        cmocka_unit_test(test_sip_msg_non_sip_payload_gets_no_response),
        cmocka_unit_test(test_sip_msg_start_line_errors),
        cmocka_unit_test(test_sip_msg_content_length_rules),
        cmocka_unit_test(test_sip_msg_cseq_checked_against_method),
        cmocka_unit_test(test_sip_msg_hdr_next_walks_same_id),
        cmocka_unit_test(test_sip_msg_method_lookup),
        cmocka_unit_test(test_sip_msg_valid_files_pass),
        cmocka_unit_test(test_sip_msg_invalid_files_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
