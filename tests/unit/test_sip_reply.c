/* sip_reply: stateless responses (RFC 3261 §8.2.6, RFC 3581). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/sip_check.h"
#include "sipedge/sip_reply.h"

#define MAX_HDRS 32

static const struct sip_limits limits = {.max_msg_bytes = 65535, .max_headers = MAX_HDRS};
static struct sip_hdr hdrs[MAX_HDRS];

static const char req_text[] =
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKa1\r\n"
    "v: SIP/2.0/TCP p1.example.com;branch=z9hG4bKp1, "
    "SIP/2.0/TCP p0.example.com;branch=z9hG4bKp0\r\n"
    "Max-Forwards: 70\r\n"
    "f: <sip:a@example.com>;tag=f1\r\n"
    "To: <sip:a@example.com>\r\n"
    "i: cid-1\r\n"
    "CSeq: 5 REGISTER\r\n"
    "Contact: <sip:a@10.0.0.2>\r\n"
    "Content-Length: 0\r\n\r\n";

static void parse_req(struct sip_msg *m, const char *text)
{
    struct sip_err err = {0};

    assert_int_equal(sip_msg_parse(m, text, strlen(text), hdrs, &limits, &err), 0);
}

static void test_sip_reply_copies_headers_and_fills_received_rport(void **state)
{
    struct sip_msg m;
    char out[1024];
    struct sip_reply_opts opts = {.received = "192.0.2.7", .rport = 40123, .to_tag = "edge9"};
    const char *want =
        "SIP/2.0 403 Forbidden\r\n"
        "Via: SIP/2.0/UDP 10.0.0.2:5060;rport=40123;branch=z9hG4bKa1;received=192.0.2.7\r\n"
        "Via: SIP/2.0/TCP p1.example.com;branch=z9hG4bKp1, SIP/2.0/TCP p0.example.com;"
        "branch=z9hG4bKp0\r\n"
        "From: <sip:a@example.com>;tag=f1\r\n"
        "To: <sip:a@example.com>;tag=edge9\r\n"
        "Call-ID: cid-1\r\n"
        "CSeq: 5 REGISTER\r\n"
        "Content-Length: 0\r\n\r\n";
    int n;

    (void)state;
    parse_req(&m, req_text);
    n = sip_reply_build(&m, 403, "Forbidden", &opts, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(out, want, strlen(want));
}

static void test_sip_reply_reparses_as_response(void **state)
{
    struct sip_msg m, r;
    char out[1024];
    struct sip_reply_opts opts = {.received = "192.0.2.7", .extra = "Retry-After: 30\r\n"};
    struct sip_hdr rh[MAX_HDRS];
    struct sip_err err = {0};
    int n;

    (void)state;
    parse_req(&m, req_text);
    n = sip_reply_build(&m, 503, "Service Unavailable", &opts, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal(sip_msg_parse(&r, out, (size_t)n, rh, &limits, &err), 0);
    assert_false(r.is_request);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.count[SIP_HDR_VIA], 2);
    assert_int_equal(sip_check_msg(&r, &err), 0);
    assert_non_null(strstr(out, "Retry-After: 30\r\nContent-Length: 0\r\n\r\n"));
    /* No rport port given: the flag stays bare. */
    assert_non_null(strstr(out, ";rport;branch=z9hG4bKa1;received=192.0.2.7\r\n"));
    /* Default edge tag when the caller gives none. */
    assert_non_null(strstr(out, "To: <sip:a@example.com>;tag="));
}

static void test_sip_reply_keeps_existing_to_tag_and_skips_rport_without_flag(void **state)
{
    const char *text = "BYE sip:b@example.com SIP/2.0\r\n"
                       "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"
                       "From: <sip:a@example.com>;tag=f1\r\n"
                       "To: sip:b@example.com;tag=t7\r\n"
                       "Call-ID: c\r\nCSeq: 2 BYE\r\n\r\n";
    struct sip_msg m;
    char out[512];
    struct sip_reply_opts opts = {.rport = 5060};
    int n;

    (void)state;
    parse_req(&m, text);
    n = sip_reply_build(&m, 481, "Call/Transaction Does Not Exist", &opts, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nTo: sip:b@example.com;tag=t7\r\n"));
    assert_null(strstr(out, "rport"));
    assert_null(strstr(out, "received"));
    n = sip_reply_build(&m, 200, "OK", NULL, out, sizeof(out));
    assert_true(n > 0);
}

static void test_sip_reply_ipv6_top_via(void **state)
{
    const char *text = "OPTIONS sip:e SIP/2.0\r\n"
                       "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6;rport\r\n"
                       "From: <sip:a@e>;tag=1\r\nTo: <sip:e>\r\nCall-ID: c\r\n"
                       "CSeq: 1 OPTIONS\r\n\r\n";
    struct sip_msg m;
    char out[512];
    struct sip_reply_opts opts = {.received = "2001:db8::1", .rport = 5062};
    int n;

    (void)state;
    parse_req(&m, text);
    n = sip_reply_build(&m, 200, "OK", &opts, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6;"
                                "rport=5062;received=2001:db8::1\r\n"));
}

static void test_sip_reply_fails_cleanly(void **state)
{
    struct sip_msg m;
    char out[1024];

    (void)state;
    parse_req(&m, req_text);
    assert_int_equal(sip_reply_build(&m, 400, "Bad Request", NULL, out, 60), -ENOSPC);
    assert_int_equal(sip_reply_build(&m, 99, "x", NULL, out, sizeof(out)), -EINVAL);
}

static void test_sip_reply_needs_the_request_headers(void **state)
{
    const char *text = "INVITE sip:b@e SIP/2.0\r\nCSeq: 1 INVITE\r\n"
                       "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n";
    const char *no_via = "INVITE sip:b@e SIP/2.0\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};
    char out[512];

    (void)state;
    /* Parse fails with 400 but leaves the index: the 400 goes back along the Via with
     * what the request has (RFC 4475 §3.3.1, insuf), no From/To/Call-ID invented. */
    assert_int_equal(sip_msg_parse(&m, text, strlen(text), hdrs, &limits, &err), -EBADMSG);
    assert_int_equal(err.status, 400);
    int n = sip_reply_build(&m, 400, err.reason, NULL, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "SIP/2.0 400 "));
    assert_non_null(strstr(out, "branch=z9hG4bK1"));
    assert_non_null(strstr(out, "CSeq: 1 INVITE\r\n"));
    assert_null(strstr(out, "From:"));
    /* Without a Via there is nothing to answer along. */
    assert_int_equal(sip_msg_parse(&m, no_via, strlen(no_via), hdrs, &limits, &err), -EBADMSG);
    assert_int_equal(sip_reply_build(&m, 400, "x", NULL, out, sizeof(out)), -EBADMSG);
}

static void test_sip_reply_after_failed_check(void **state)
{
    const char *text = "INVITE sip:b@e SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                       "From: <sip:a@e>;tag=1\r\nTo: <sip:b@e>\r\nCall-ID: c\r\n"
                       "CSeq: 1 INVITE\r\nMax-Forwards: 300\r\nl: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_err err = {0};
    char out[512];

    (void)state;
    parse_req(&m, text);
    assert_int_equal(sip_check_msg(&m, &err), -EBADMSG);
    assert_int_equal(err.status, 400);
    assert_true(sip_reply_build(&m, err.status, err.reason, NULL, out, sizeof(out)) > 0);
    assert_memory_equal(out, "SIP/2.0 400 Bad Max-Forwards\r\n", 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_reply_copies_headers_and_fills_received_rport),
        cmocka_unit_test(test_sip_reply_reparses_as_response),
        cmocka_unit_test(test_sip_reply_keeps_existing_to_tag_and_skips_rport_without_flag),
        cmocka_unit_test(test_sip_reply_ipv6_top_via),
        cmocka_unit_test(test_sip_reply_fails_cleanly),
        cmocka_unit_test(test_sip_reply_needs_the_request_headers),
        cmocka_unit_test(test_sip_reply_after_failed_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
