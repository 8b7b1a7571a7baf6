/* sip_build: bounded writes with a sticky -ENOSPC. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/sip_build.h"

static void test_sip_build_appends_all_kinds(void **state)
{
    char buf[64];
    struct sip_build b;
    size_t len = 0;

    (void)state;
    sip_build_init(&b, buf, sizeof(buf));
    sip_build_str(&b, "Via: ");
    sip_build_slice(&b, SLICE_LIT("SIP/2.0/UDP h"));
    sip_build_mem(&b, ";rport=", 7);
    sip_build_u32(&b, 5060);
    sip_build_fmt(&b, ";x=%d%s", 7, "\r\n");
    sip_build_u32(&b, 0);
    sip_build_u32(&b, UINT32_MAX);
    assert_int_equal(sip_build_finish(&b, &len), 0);
    assert_int_equal(len, strlen("Via: SIP/2.0/UDP h;rport=5060;x=7\r\n04294967295"));
    assert_memory_equal(buf, "Via: SIP/2.0/UDP h;rport=5060;x=7\r\n04294967295", len);
}

static void test_sip_build_overflow_is_sticky(void **state)
{
    char buf[8];
    struct sip_build b;
    size_t len = 99;

    (void)state;
    sip_build_init(&b, buf, sizeof(buf));
    sip_build_str(&b, "12345");
    sip_build_str(&b, "6789");
    assert_int_equal(b.err, -ENOSPC);
    sip_build_str(&b, "1"); /* would fit, but the error sticks */
    assert_int_equal(b.len, 5);
    assert_int_equal(sip_build_finish(&b, &len), -ENOSPC);
    assert_int_equal(len, 99);
}

static void test_sip_build_fmt_uses_exact_capacity(void **state)
{
    char buf[4];
    struct sip_build b;
    size_t len;

    (void)state;
    sip_build_init(&b, buf, sizeof(buf));
    sip_build_fmt(&b, "%s", "abcd"); /* needs no NUL in the message, but vsnprintf does */
    assert_int_equal(sip_build_finish(&b, &len), -ENOSPC);
    sip_build_init(&b, buf, sizeof(buf));
    sip_build_fmt(&b, "%u", 123u);
    sip_build_str(&b, "4");
    assert_int_equal(sip_build_finish(&b, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "1234", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_build_appends_all_kinds),
        cmocka_unit_test(test_sip_build_overflow_is_sticky),
        cmocka_unit_test(test_sip_build_fmt_uses_exact_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
