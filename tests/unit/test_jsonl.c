/* jsonl: JSON string escaping, and the writer thread: order kept, a full queue drops and
 * counts, nothing queued is lost at close, reopen splits the lines between the files. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

#include "sipedge/jsonl.h"

static void test_escape_quotes_controls_and_bad_utf8(void **state)
{
    (void)state;
    char out[128];
    const char in[] = "a\"b\\c\n\r\t\x01\x7f\xc3\xa9\xff\xed\xa0\x80z";
    size_t n = jsonl_escape(out, sizeof(out), in, sizeof(in) - 1);
    assert_string_equal(out, "a\\\"b\\\\c\\n\\r\\t\\u0001\\u007f\xc3\xa9\\ufffd\\ufffd\\ufffd"
                             "\\ufffdz");
    assert_int_equal(n, strlen(out));
}

static void test_escape_stops_before_a_character_that_does_not_fit(void **state)
{
    (void)state;
    char out[6];
    /* "ab" then \" (2 bytes) would need 5 + NUL = 6: fits; the next \u0001 does not. */
    size_t n = jsonl_escape(out, sizeof(out), "ab\"\x01", 4);
    assert_int_equal(n, 4);
    assert_string_equal(out, "ab\\\"");
    /* A multi-byte character is never cut. */
    char small[3];
    n = jsonl_escape(small, sizeof(small), "a\xc3\xa9", 3);
    assert_int_equal(n, 1);
    assert_string_equal(small, "a");
    assert_int_equal(jsonl_escape(small, 0, "x", 1), 0);
}

static void tmp_path(char *dir, size_t dcap, char *path, size_t pcap, const char *name)
{
    snprintf(dir, dcap, "/tmp/test_jsonl.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, pcap, "%s/%s", dir, name);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t r; (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Checks that buf holds lines "{\"n\":FIRST}" .. "{\"n\":LAST}" in order; returns the count. */
static unsigned check_numbered(const char *buf, size_t len, unsigned first)
{
    unsigned k = first;
    for (size_t o = 0; o < len;) {
        char want[32];
        int n = snprintf(want, sizeof(want), "{\"n\":%u}\n", k);
        assert_true(o + (size_t)n <= len);
        assert_memory_equal(buf + o, want, (size_t)n);
        o += (size_t)n;
        k++;
    }
    return k - first;
}

static void put_numbered(struct jsonl *w, unsigned from, unsigned to)
{
    for (unsigned k = from; k < to; k++) {
        char line[32];
        int n = snprintf(line, sizeof(line), "{\"n\":%u}\n", k);
        assert_int_equal(jsonl_put(w, line, (size_t)n), 0);
    }
}

static void test_order_kept_and_nothing_lost_at_close(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmp_path(dir, sizeof(dir), path, sizeof(path), "a.jsonl");
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, path, 0), 0);
    assert_string_equal(jsonl_path(w), path);
    put_numbered(w, 0, 20000);
    jsonl_close(w); /* straight after the puts: close writes everything first */
    size_t len;
    char *buf = slurp(path, &len);
    assert_int_equal(check_numbered(buf, len, 0), 20000);
    free(buf);
    unlink(path);
    rmdir(dir);
}

static void test_flush_makes_lines_visible_and_counts(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmp_path(dir, sizeof(dir), path, sizeof(path), "f.jsonl");
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, path, 4096), 0);
    put_numbered(w, 0, 3);
    jsonl_flush(w);
    size_t len;
    char *buf = slurp(path, &len);
    assert_int_equal(check_numbered(buf, len, 0), 3);
    free(buf);
    put_numbered(w, 3, 5);
    jsonl_flush_all();
    buf = slurp(path, &len);
    assert_int_equal(check_numbered(buf, len, 0), 5);
    free(buf);
    struct jsonl_stats st;
    jsonl_stats(w, &st);
    assert_int_equal(st.queued, 5);
    assert_int_equal(st.written, 5);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.dropped, 0);
    jsonl_close(w);
    unlink(path);
    rmdir(dir);
}

struct reader {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *read_all(void *arg)
{
    struct reader *r = arg;
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            usleep(1000);
            continue;
        }
        if (n <= 0)
            return NULL;
        r->len += (size_t)n;
    }
}

static void test_full_queue_drops_and_counts(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmp_path(dir, sizeof(dir), path, sizeof(path), "fifo");
    assert_int_equal(mkfifo(path, 0600), 0);
    /* The reader end first, so the writer's open does not wait; the pipe is made small
     * and nobody reads until the puts are done, so the writer blocks in write(2). */
    int rfd = open(path, O_RDONLY | O_NONBLOCK);
    assert_true(rfd >= 0);
    fcntl(rfd, F_SETPIPE_SZ, 4096);
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, path, 1024), 0);
    enum { N = 10000 };
    unsigned accepted = 0, refused = 0;
    for (unsigned k = 0; k < N; k++) {
        char line[32];
        int n = snprintf(line, sizeof(line), "{\"n\":%u}\n", k);
        int rc = jsonl_put(w, line, (size_t)n);
        if (rc == 0)
            accepted++;
        else {
            assert_int_equal(rc, -ENOBUFS);
            refused++;
        }
    }
    /* Pipe (4 KiB, at most 64 KiB if the size was not taken) + one batch + the queue hold
     * far less than the ~100 KiB put. */
    assert_true(refused > 0);
    struct jsonl_stats st;
    jsonl_stats(w, &st);
    assert_int_equal(st.queued, accepted);
    assert_int_equal(st.dropped, refused);
    /* A line longer than the whole queue is always refused. */
    static char big[2048];
    memset(big, 'x', sizeof(big));
    assert_int_equal(jsonl_put(w, big, sizeof(big)), -ENOBUFS);

    struct reader r = {.fd = rfd, .cap = 1 << 20};
    r.buf = malloc(r.cap);
    assert_non_null(r.buf);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_all, &r), 0);
    jsonl_stats(w, &st);
    uint64_t dropped = st.dropped;
    jsonl_close(w); /* every accepted line is written before the fifo closes */
    pthread_join(t, NULL);
    close(rfd);
    assert_int_equal(dropped, refused + 1);
    /* The accepted lines arrive whole and in order (with gaps where lines were dropped). */
    unsigned n_lines = 0, last = 0;
    for (size_t o = 0; o < r.len;) {
        unsigned k;
        int used = 0;
        assert_int_equal(sscanf(r.buf + o, "{\"n\":%u}\n%n", &k, &used), 1);
        assert_true(used > 0);
        if (n_lines > 0)
            assert_true(k > last);
        last = k;
        n_lines++;
        o += (size_t)used;
    }
    assert_int_equal(n_lines, accepted);
    free(r.buf);
    unlink(path);
    rmdir(dir);
}

static void test_failed_writes_are_counted(void **state)
{
    (void)state;
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, "/dev/full", 0), 0);
    put_numbered(w, 0, 3);
    jsonl_flush(w);
    struct jsonl_stats st;
    jsonl_stats(w, &st);
    assert_int_equal(st.queued, 3);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.written, 0);
    jsonl_close(w);
}

static void test_reopen_splits_lines_between_files(void **state)
{
    (void)state;
    char dir[64], path[128], moved[160];
    tmp_path(dir, sizeof(dir), path, sizeof(path), "r.jsonl");
    snprintf(moved, sizeof(moved), "%s.1", path);
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, path, 0), 0);
    put_numbered(w, 0, 1000);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(jsonl_reopen(w), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0); /* the new file exists at once */
    put_numbered(w, 1000, 1500);
    jsonl_close(w);
    size_t len;
    char *buf = slurp(moved, &len);
    assert_int_equal(check_numbered(buf, len, 0), 1000);
    free(buf);
    buf = slurp(path, &len);
    assert_int_equal(check_numbered(buf, len, 1000), 500);
    free(buf);
    unlink(path);
    unlink(moved);
    rmdir(dir);
}

static void test_open_errors(void **state)
{
    (void)state;
    struct jsonl *w = NULL;
    assert_int_equal(jsonl_open(&w, "", 0), -EINVAL);
    assert_int_equal(jsonl_open(&w, "/nonexistent-dir/x.jsonl", 0), -ENOENT);
    char longp[600];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(jsonl_open(&w, longp, 0), -ENAMETOOLONG);
    jsonl_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_quotes_controls_and_bad_utf8),
        cmocka_unit_test(test_escape_stops_before_a_character_that_does_not_fit),
        cmocka_unit_test(test_order_kept_and_nothing_lost_at_close),
        cmocka_unit_test(test_flush_makes_lines_visible_and_counts),
        cmocka_unit_test(test_full_queue_drops_and_counts),
        cmocka_unit_test(test_failed_writes_are_counted),
        cmocka_unit_test(test_reopen_splits_lines_between_files),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
