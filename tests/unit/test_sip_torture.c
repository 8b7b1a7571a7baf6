/*
 * RFC 4475 torture messages against sip_msg_parse + sip_check_msg.
 * tests/data/sip/torture/classes.tsv says which class each message belongs to.
 */
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

#define TORTURE_DIR TEST_DATA_DIR "/sip/torture/"
#define MAX_HDRS 64

static const struct sip_limits limits = {.max_msg_bytes = 65535, .max_headers = MAX_HDRS};

static size_t read_msg(const char *name, char *buf, size_t cap)
{
    char path[512];
    FILE *f;
    size_t n;

    if (snprintf(path, sizeof(path), TORTURE_DIR "%s.dat", name) >= (int)sizeof(path))
        fail_msg("path too long for %s", name);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Returns 0 when both parse and check accept the message. */
static int parse_and_check(const char *name, struct sip_msg *m, struct sip_hdr *hdrs,
                           struct sip_err *err)
{
    static char buf[65536];
    size_t n = read_msg(name, buf, sizeof(buf));
    int rc = sip_msg_parse(m, buf, n, hdrs, &limits, err);

    if (rc < 0)
        return rc;
    return sip_check_msg(m, err);
}

struct torture_row {
    char name[32];
    char cls[16];
};

static size_t load_classes(struct torture_row *rows, size_t cap)
{
    FILE *f = fopen(TORTURE_DIR "classes.tsv", "r");
    char line[512];
    size_t n = 0;

    if (f == NULL)
        fail_msg("cannot open classes.tsv");
    while (fgets(line, sizeof(line), f) && n < cap) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char section[32];
        if (sscanf(line, "%31s %31s %15s", rows[n].name, section, rows[n].cls) == 3)
            n++;
    }
    fclose(f);
    return n;
}

static void test_sip_torture_classes_hold(void **state)
{
    struct torture_row rows[64];
    size_t n = load_classes(rows, 64);
    size_t n_valid = 0, n_invalid = 0, n_bad = 0;

    (void)state;
    assert_int_equal(n, 49);
    for (size_t i = 0; i < n; i++) {
        struct sip_msg m;
        struct sip_hdr hdrs[MAX_HDRS];
        struct sip_err err = {0};
        int rc = parse_and_check(rows[i].name, &m, hdrs, &err);

        if (strcmp(rows[i].cls, "valid") == 0) {
            if (rc != 0)
                {
                print_error("%s: valid message rejected (%s)\n", rows[i].name, err.reason);
                n_bad++;
            }
            n_valid++;
        } else if (strcmp(rows[i].cls, "invalid") == 0 || strcmp(rows[i].name, "insuf") == 0) {
            if (rc == 0)
                {
                print_error("%s: invalid message accepted\n", rows[i].name);
                n_bad++;
                continue;
            }
            assert_int_equal(rc, -EBADMSG);
            n_invalid++;
        } else {
            /* Other semantic messages are well-formed enough to parse. */
            static char buf[65536];
            size_t len = read_msg(rows[i].name, buf, sizeof(buf));
            if (sip_msg_parse(&m, buf, len, hdrs, &limits, &err) != 0)
                {
                print_error("%s: semantic message does not parse (%s)\n", rows[i].name,
                            err.reason);
                n_bad++;
            }
        }
    }
    assert_int_equal(n_bad, 0);
    assert_int_equal(n_valid, 13);
    assert_int_equal(n_invalid, 20);
}

static void test_sip_torture_zeromf_passes_with_max_forwards_zero(void **state)
{
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_err err = {0};
    uint32_t mf = 99;

    (void)state;
    assert_int_equal(parse_and_check("zeromf", &m, hdrs, &err), 0);
    assert_non_null(sip_msg_hdr(&m, SIP_HDR_MAX_FORWARDS));
    assert_int_equal(slice_to_u32(sip_msg_hdr(&m, SIP_HDR_MAX_FORWARDS)->value, 255, &mf), 0);
    assert_int_equal(mf, 0);
}

static void test_sip_torture_dblreq_parses_first_request_only(void **state)
{
    static char buf[4096];
    size_t n = read_msg("dblreq", buf, sizeof(buf));
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_err err = {0};
    const char *second = strstr(buf, "INVITE sip:joe");

    (void)state;
    assert_non_null(second);
    assert_int_equal(sip_msg_parse(&m, buf, n, hdrs, &limits, &err), 0);
    assert_int_equal(m.method_id, SIP_METHOD_REGISTER);
    assert_true(m.len < (uint32_t)(second - buf));
    assert_int_equal(m.content_length, 0);
    assert_int_equal(sip_check_msg(&m, &err), 0);
}

static void test_sip_torture_insuf_gets_400_missing(void **state)
{
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(parse_and_check("insuf", &m, hdrs, &err), -EBADMSG);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.reason, "Missing"));
}

static void test_sip_torture_mismatch_fails_in_parse(void **state)
{
    static const char *names[] = {"mismatch01", "mismatch02"};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        static char buf[4096];
        size_t n = read_msg(names[i], buf, sizeof(buf));
        struct sip_msg m;
        struct sip_hdr hdrs[MAX_HDRS];
        struct sip_err err = {0};

        assert_int_equal(sip_msg_parse(&m, buf, n, hdrs, &limits, &err), -EBADMSG);
        assert_int_equal(err.status, 400);
    }
}

static void test_sip_torture_responses_parse(void **state)
{
    static const char *names[] = {"unreason", "noreason", "bcast"};

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        static char buf[4096];
        size_t n = read_msg(names[i], buf, sizeof(buf));
        struct sip_msg m;
        struct sip_hdr hdrs[MAX_HDRS];
        struct sip_err err = {0};

        assert_int_equal(sip_msg_parse(&m, buf, n, hdrs, &limits, &err), 0);
        assert_false(m.is_request);
    }
}

static void test_sip_torture_badvers_gets_505(void **state)
{
    static char buf[4096];
    size_t n = read_msg("badvers", buf, sizeof(buf));
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_err err = {0};

    (void)state;
    assert_int_equal(sip_msg_parse(&m, buf, n, hdrs, &limits, &err), -EBADMSG);
    assert_int_equal(err.status, 505);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_torture_classes_hold),
        cmocka_unit_test(test_sip_torture_zeromf_passes_with_max_forwards_zero),
        cmocka_unit_test(test_sip_torture_dblreq_parses_first_request_only),
        cmocka_unit_test(test_sip_torture_insuf_gets_400_missing),
        cmocka_unit_test(test_sip_torture_mismatch_fails_in_parse),
        cmocka_unit_test(test_sip_torture_responses_parse),
        cmocka_unit_test(test_sip_torture_badvers_gets_505),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
