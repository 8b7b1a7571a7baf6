/* statefile: atomic, versioned, checksummed snapshots. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sipedge/statefile.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sipedge-statefile-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    statefile_path(path, sizeof(path), dir, "t.state");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_sample(uint32_t version)
{
    struct statefile_buf b;
    statefile_buf_init(&b);
    statefile_put_u8(&b, 7);
    statefile_put_u16(&b, 0xbeef);
    statefile_put_u32(&b, 0xdeadbeef);
    statefile_put_u64(&b, 0x0102030405060708ull);
    statefile_put_str(&b, "sip:alice@example.com");
    assert_int_equal(b.err, 0);
    assert_int_equal(statefile_write(path, "test", version, b.p, b.len, NULL, 0), 0);
    statefile_buf_free(&b);
}

static void test_statefile_round_trip(void **state)
{
    (void)state;
    write_sample(1);
    uint8_t *p;
    size_t len;
    uint32_t ver;
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, &ver, NULL, 0), 0);
    assert_int_equal(ver, 1);
    struct statefile_rd r;
    statefile_rd_init(&r, p, len);
    assert_int_equal(statefile_get_u8(&r), 7);
    assert_int_equal(statefile_get_u16(&r), 0xbeef);
    assert_int_equal(statefile_get_u32(&r), 0xdeadbeef);
    assert_true(statefile_get_u64(&r) == 0x0102030405060708ull);
    char s[64];
    statefile_get_str(&r, s, sizeof(s));
    assert_string_equal(s, "sip:alice@example.com");
    assert_true(statefile_rd_done(&r));
    free(p);
    /* No temporary file is left behind. */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
}

static void test_statefile_missing_file_is_enoent(void **state)
{
    (void)state;
    uint8_t *p;
    size_t len;
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, NULL, NULL, 0), -ENOENT);
}

static void test_statefile_refuses_flipped_byte_newer_version_and_foreign_kind(void **state)
{
    (void)state;
    uint8_t *p;
    size_t len;
    char err[256];
    write_sample(1);
    /* One payload bit flipped: checksum mismatch. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, STATEFILE_HDR_LEN + 5, SEEK_SET);
    int c = fgetc(f);
    fseek(f, STATEFILE_HDR_LEN + 5, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, NULL, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "checksum"));

    write_sample(2);
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, NULL, err, sizeof(err)),
                     -EPROTONOSUPPORT);
    assert_non_null(strstr(err, "version 2"));

    write_sample(1);
    assert_int_equal(statefile_read(path, "other", 1, &p, &len, NULL, err, sizeof(err)), -EBADMSG);

    /* Truncated: the length in the header no longer matches. */
    assert_int_equal(truncate(path, STATEFILE_HDR_LEN + 3), 0);
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, NULL, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "truncated"));

    /* Not a state file at all. */
    f = fopen(path, "wb");
    fputs("hello, this is not state\n", f);
    fclose(f);
    assert_int_equal(statefile_read(path, "test", 1, &p, &len, NULL, err, sizeof(err)), -EBADMSG);
}

static void test_statefile_load_moves_a_refused_file_aside(void **state)
{
    (void)state;
    uint8_t *p;
    size_t len;
    write_sample(9);
    assert_int_equal(statefile_load(path, "test", 1, "test", &p, &len, NULL), -EPROTONOSUPPORT);
    assert_int_equal(access(path, F_OK), -1);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q '^t.state.bad-'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_statefile_reader_is_sticky_on_short_input(void **state)
{
    (void)state;
    uint8_t two[2] = {0, 5};
    struct statefile_rd r;
    statefile_rd_init(&r, two, sizeof(two));
    char s[16];
    statefile_get_str(&r, s, sizeof(s)); /* says 5 bytes, has 0 */
    assert_false(statefile_rd_done(&r));
    assert_int_equal(statefile_get_u32(&r), 0);
    assert_int_equal(r.err, -EBADMSG);
    /* A string that does not fit is refused, not cut. */
    struct statefile_buf b;
    statefile_buf_init(&b);
    statefile_put_str(&b, "0123456789abcdef");
    statefile_rd_init(&r, b.p, b.len);
    statefile_get_str(&r, s, sizeof(s));
    assert_false(statefile_rd_done(&r));
    statefile_buf_free(&b);
}

static int count_chunk(void *ctx, const uint8_t *p, size_t len)
{
    int *n = ctx;
    assert_true(len == 5 && memcmp(p, *n == 0 ? "first" : "secnd", 5) == 0);
    (*n)++;
    return 0;
}

static void test_statefile_chunks_stop_at_a_torn_tail(void **state)
{
    (void)state;
    assert_int_equal(statefile_append_chunk(path, "first", 5), 0);
    assert_int_equal(statefile_append_chunk(path, "secnd", 5), 0);
    int n = 0;
    bool is_torn = true;
    assert_int_equal(statefile_read_chunks(path, count_chunk, &n, &is_torn), 2);
    assert_false(is_torn);
    /* A third write cut short by a crash: its header says 5 bytes, 2 made it. */
    assert_int_equal(statefile_append_chunk(path, "third", 5), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 3), 0);
    n = 0;
    assert_int_equal(statefile_read_chunks(path, count_chunk, &n, &is_torn), 2);
    assert_true(is_torn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_statefile_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statefile_missing_file_is_enoent, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_statefile_refuses_flipped_byte_newer_version_and_foreign_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statefile_load_moves_a_refused_file_aside, setup,
                                        teardown),
        cmocka_unit_test(test_statefile_reader_is_sticky_on_short_input),
        cmocka_unit_test_setup_teardown(test_statefile_chunks_stop_at_a_torn_tail, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
