/* stream_frame: where a SIP message ends on a stream (RFC 3261 §18.3) and the CRLF
 * keepalives between messages (RFC 5626 §4.4.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "transport/stream_internal.h"

#define FRAME_MAX 4096

static const char REG[] = "REGISTER sip:example.com SIP/2.0\r\n"
                          "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
                          "Call-ID: a@b\r\n"
                          "Content-Length: 5\r\n"
                          "\r\n"
                          "hello";

static enum stream_frame_kind frame(const char *s, size_t len, struct stream_frame_res *r)
{
    return stream_frame(s, len, FRAME_MAX, 0, r);
}

static void test_stream_frame_one_message(void **state)
{
    (void)state;
    struct stream_frame_res r;
    assert_int_equal(frame(REG, strlen(REG), &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, strlen(REG));
    assert_true(r.is_request);
}

static void test_stream_frame_two_messages_in_one_buffer(void **state)
{
    (void)state;
    char buf[1024];
    size_t n = strlen(REG);
    memcpy(buf, REG, n);
    memcpy(buf + n, REG, n);
    struct stream_frame_res r;
    assert_int_equal(frame(buf, 2 * n, &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, n);
    assert_int_equal(frame(buf + r.len, 2 * n - r.len, &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, n);
}

/* Every prefix waits, with the scan hint handed back as the transport does. */
static void test_stream_frame_split_at_every_offset(void **state)
{
    (void)state;
    size_t n = strlen(REG);
    struct stream_frame_res r;
    for (size_t cut = 1; cut < n; cut++) {
        assert_int_equal(frame(REG, cut, &r), STREAM_FRAME_NEED);
        size_t scanned = r.scanned;
        assert_true(scanned <= cut);
        assert_int_equal(stream_frame(REG, n, FRAME_MAX, scanned, &r), STREAM_FRAME_MSG);
        assert_int_equal(r.len, n);
    }
    /* A growing buffer, one byte at a time, with the hint carried along. */
    size_t scanned = 0;
    for (size_t len = 1; len < n; len++) {
        assert_int_equal(stream_frame(REG, len, FRAME_MAX, scanned, &r), STREAM_FRAME_NEED);
        scanned = r.scanned;
    }
    assert_int_equal(stream_frame(REG, n, FRAME_MAX, scanned, &r), STREAM_FRAME_MSG);
}

static void test_stream_frame_need_reports_total_once_headers_end(void **state)
{
    (void)state;
    size_t n = strlen(REG);
    struct stream_frame_res r;
    assert_int_equal(frame(REG, n - 2, &r), STREAM_FRAME_NEED);
    assert_int_equal(r.len, n);
}

static void test_stream_frame_crlfcrlf_is_ping(void **state)
{
    (void)state;
    struct stream_frame_res r;
    assert_int_equal(frame("\r\n\r\n", 4, &r), STREAM_FRAME_PING);
    assert_int_equal(r.len, 4);
    char buf[1024];
    snprintf(buf, sizeof(buf), "\r\n\r\n%s", REG);
    assert_int_equal(frame(buf, strlen(buf), &r), STREAM_FRAME_PING);
    assert_int_equal(frame(buf + 4, strlen(buf) - 4, &r), STREAM_FRAME_MSG);
    /* Half a ping waits for the rest. */
    assert_int_equal(frame("\r\n\r", 3, &r), STREAM_FRAME_NEED);
    assert_int_equal(frame("\r\n", 2, &r), STREAM_FRAME_NEED);
    assert_int_equal(frame("\r", 1, &r), STREAM_FRAME_NEED);
}

static void test_stream_frame_lone_crlf_is_pong(void **state)
{
    (void)state;
    struct stream_frame_res r;
    char buf[1024];
    snprintf(buf, sizeof(buf), "\r\n%s", REG);
    assert_int_equal(frame(buf, strlen(buf), &r), STREAM_FRAME_PONG);
    assert_int_equal(r.len, 2);
    assert_int_equal(frame(buf + 2, strlen(buf) - 2, &r), STREAM_FRAME_MSG);
    assert_int_equal(frame("\r\nR", 3, &r), STREAM_FRAME_PONG);
}

static void test_stream_frame_missing_content_length(void **state)
{
    (void)state;
    struct stream_frame_res r;
    const char *m = "OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n";
    assert_int_equal(frame(m, strlen(m), &r), STREAM_FRAME_ERR_NO_CL);
    assert_true(r.is_request);
    const char *resp = "SIP/2.0 200 OK\r\nCall-ID: 1\r\n\r\n";
    assert_int_equal(frame(resp, strlen(resp), &r), STREAM_FRAME_ERR_NO_CL);
    assert_false(r.is_request);
    /* A name that only ends in "l", or a value mentioning it, is not the header. */
    const char *m2 = "OPTIONS sip:x SIP/2.0\r\nUrl: 4\r\nX: Content-Length: 3\r\n\r\n";
    assert_int_equal(frame(m2, strlen(m2), &r), STREAM_FRAME_ERR_NO_CL);
    /* Only at a line start: a folded line saying "l: 0" continues the header before. */
    const char *m3 = "OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n l: 0\r\n\r\n";
    assert_int_equal(frame(m3, strlen(m3), &r), STREAM_FRAME_ERR_NO_CL);
}

static void test_stream_frame_compact_and_case_insensitive(void **state)
{
    (void)state;
    struct stream_frame_res r;
    const char *m = "OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc";
    assert_int_equal(frame(m, strlen(m), &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, strlen(m));
    const char *m2 = "OPTIONS sip:x SIP/2.0\r\nL :3\r\n\r\nabc";
    assert_int_equal(frame(m2, strlen(m2), &r), STREAM_FRAME_MSG);
    const char *m3 = "OPTIONS sip:x SIP/2.0\r\ncOnTeNt-LeNgTh:   2  \r\n\r\nab";
    assert_int_equal(frame(m3, strlen(m3), &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, strlen(m3));
    /* A folded value is read across the fold. */
    const char *m4 = "OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab";
    assert_int_equal(frame(m4, strlen(m4), &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, strlen(m4));
}

static void test_stream_frame_bad_content_length(void **state)
{
    (void)state;
    struct stream_frame_res r;
    const char *bad[] = {
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: abc\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: 1 2\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: 0x10\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(frame(bad[i], strlen(bad[i]), &r), STREAM_FRAME_ERR_BAD_CL);
    /* The same value twice is one value. */
    const char *twice = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\nx";
    assert_int_equal(frame(twice, strlen(twice), &r), STREAM_FRAME_MSG);
}

static void test_stream_frame_content_length_beyond_cap(void **state)
{
    (void)state;
    struct stream_frame_res r;
    const char *m = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 4097\r\n\r\n";
    assert_int_equal(frame(m, strlen(m), &r), STREAM_FRAME_ERR_BAD_CL);
    /* Under the cap alone, over it with the header block. */
    const char *m2 = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 4090\r\n\r\n";
    assert_int_equal(frame(m2, strlen(m2), &r), STREAM_FRAME_ERR_TOO_BIG);
    assert_true(r.is_request);
}

static void test_stream_frame_header_block_over_cap(void **state)
{
    (void)state;
    static char buf[FRAME_MAX + 100];
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "OPTIONS sip:x SIP/2.0\r\nX: ", 26);
    struct stream_frame_res r;
    assert_int_equal(frame(buf, FRAME_MAX - 1, &r), STREAM_FRAME_NEED);
    assert_int_equal(frame(buf, FRAME_MAX, &r), STREAM_FRAME_ERR_TOO_BIG);
    /* A terminator past the cap is not looked for. */
    memcpy(buf + FRAME_MAX + 10, "\r\n\r\n", 4);
    assert_int_equal(frame(buf, sizeof(buf), &r), STREAM_FRAME_ERR_TOO_BIG);
    memcpy(buf, "SIP/2.0 200 OK\r\n", 16);
    assert_int_equal(frame(buf, sizeof(buf), &r), STREAM_FRAME_ERR_TOO_BIG);
    assert_false(r.is_request);
}

static void test_stream_frame_body_with_crlfcrlf(void **state)
{
    (void)state;
    struct stream_frame_res r;
    char m[512];
    snprintf(m, sizeof(m),
             "MESSAGE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\n\r\n\r\nab\r\n\r\nREGISTER");
    size_t hdr = strlen("MESSAGE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\n");
    assert_int_equal(frame(m, strlen(m), &r), STREAM_FRAME_MSG);
    assert_int_equal(r.len, hdr + 10);
    assert_int_equal(frame(m + r.len, strlen(m) - r.len, &r), STREAM_FRAME_NEED);
}

static void test_stream_frame_zero_length_body(void **state)
{
    (void)state;
    struct stream_frame_res r;
    const char *m = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n\r\n\r\n";
    assert_int_equal(frame(m, strlen(m), &r), STREAM_FRAME_MSG);
    assert_false(r.is_request);
    assert_int_equal(frame(m + r.len, strlen(m) - r.len, &r), STREAM_FRAME_PING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_frame_one_message),
        cmocka_unit_test(test_stream_frame_two_messages_in_one_buffer),
        cmocka_unit_test(test_stream_frame_split_at_every_offset),
        cmocka_unit_test(test_stream_frame_need_reports_total_once_headers_end),
        cmocka_unit_test(test_stream_frame_crlfcrlf_is_ping),
        cmocka_unit_test(test_stream_frame_lone_crlf_is_pong),
        cmocka_unit_test(test_stream_frame_missing_content_length),
        cmocka_unit_test(test_stream_frame_compact_and_case_insensitive),
        cmocka_unit_test(test_stream_frame_bad_content_length),
        cmocka_unit_test(test_stream_frame_content_length_beyond_cap),
        cmocka_unit_test(test_stream_frame_header_block_over_cap),
        cmocka_unit_test(test_stream_frame_body_with_crlfcrlf),
        cmocka_unit_test(test_stream_frame_zero_length_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
