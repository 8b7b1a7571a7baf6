/* events: JSON lines with every attacker-controlled byte escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sipedge/events.h"

/* Strict checker for one flat JSON object line: {"k":"v"|number,...}\n, valid UTF-8, no raw
 * control bytes. Returns the number of members, or -1. */
static int utf8_ok(const unsigned char *p, size_t n, size_t *adv)
{
    unsigned c = p[0], len, cp, min;
    if (c < 0x80) {
        *adv = 1;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0xf, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 7, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (unsigned i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *adv = len;
    return 1;
}

static const char *json_string(const char *s)
{
    if (*s++ != '"')
        return NULL;
    while (*s != '"') {
        const unsigned char c = (unsigned char)*s;
        if (c == 0 || c < 0x20 || c == 0x7f)
            return NULL;
        if (c == '\\') {
            s++;
            if (*s == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", s[i]) || s[i] == 0)
                        return NULL;
                s += 5;
            } else if (*s && strchr("\"\\/bfnrt", *s)) {
                s++;
            } else {
                return NULL;
            }
            continue;
        }
        size_t adv;
        if (!utf8_ok((const unsigned char *)s, strlen(s), &adv))
            return NULL;
        s += adv;
    }
    return s + 1;
}

static int json_line_members(const char *line)
{
    size_t n = strlen(line);
    if (n < 3 || line[n - 1] != '\n' || memchr(line, '\n', n - 1) != NULL || line[0] != '{')
        return -1;
    const char *s = line + 1;
    int members = 0;
    while (*s != '}') {
        if (members > 0 && *s++ != ',')
            return -1;
        s = json_string(s);
        if (s == NULL || *s++ != ':')
            return -1;
        if (*s == '"') {
            s = json_string(s);
            if (s == NULL)
                return -1;
        } else {
            if (*s == '-')
                s++;
            if (*s < '0' || *s > '9')
                return -1;
            while (*s >= '0' && *s <= '9')
                s++;
        }
        members++;
    }
    return s[1] == '\n' && s[2] == '\0' ? members : -1;
}

static void test_events_hostile_user_agent_is_one_valid_line(void **state)
{
    (void)state;
    static const char ua[] = "evil\"}\n{\"event\":\"unban\\\x01\x1b[31m\x7f"
                             "\xff\xfe\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80 caf\xc3\xa9 \xe2\x82";
    char line[EVENTS_LINE_MAX];
    struct events_rec r = {.wall_ms = 1700000000123ULL, .event = "ban", .source = "198.18.0.9",
                           .port = 5060, .reason = "scanner", .detail = ua,
                           .detail_len = sizeof(ua) - 1, .aor = "sip:\"a\"@x\r\n",
                           .strikes = 10, .duration_s = 600};
    size_t n = events_format(line, sizeof(line), &r);
    assert_int_equal(n, strlen(line));
    assert_int_equal(json_line_members(line), 9);
    assert_non_null(strstr(line, "\"ts\":\"2023-11-14T22:13:20.123Z\""));
    assert_non_null(strstr(line, "\"port\":5060,"));
    assert_non_null(strstr(line, "\\u0001\\u001b[31m\\u007f"));
    assert_non_null(strstr(line, "\\ufffd\\ufffd"));
    assert_non_null(strstr(line, "caf\xc3\xa9"));           /* valid UTF-8 kept */
    assert_non_null(strstr(line, "\"aor\":\"sip:\\\"a\\\"@x\\r\\n\""));
}

static void test_events_escape_stops_on_character_boundary(void **state)
{
    (void)state;
    char out[8];
    size_t n = events_json_escape(out, sizeof(out), "ab\"\x01", 4);
    /* a b \" fit (4 bytes), \u0001 (6) does not: cut before it, NUL-terminated. */
    assert_int_equal(n, 4);
    assert_string_equal(out, "ab\\\"");
}

static void test_events_long_fields_are_cut_but_line_stays_valid(void **state)
{
    (void)state;
    char big[6000];
    memset(big, '"', sizeof(big));
    char line[512];
    struct events_rec r = {.wall_ms = 1, .event = "ban", .source = "::1", .detail = big,
                           .detail_len = sizeof(big), .strikes = -1, .duration_s = -1};
    size_t n = events_format(line, sizeof(line), &r);
    assert_true(n < sizeof(line));
    assert_true(json_line_members(line) >= 2);
}

static void test_events_emit_appends_lines_to_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_events_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct events *ev;
    assert_int_equal(events_open(&ev, path), 0);
    struct events_rec r = {.event = "unban", .source = "198.18.0.1", .strikes = -1,
                           .duration_s = -1};
    assert_int_equal(events_emit(ev, &r), 0);
    assert_int_equal(events_emit(ev, &r), 0);
    assert_int_equal(events_n_written(ev), 2);
    events_close(ev);
    FILE *f = fopen(path, "r");
    char line[EVENTS_LINE_MAX];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        assert_int_equal(json_line_members(line), 3);
        n++;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(n, 2);
}

static void test_events_empty_path_is_off(void **state)
{
    (void)state;
    struct events *ev = (struct events *)1;
    assert_int_equal(events_open(&ev, ""), 0);
    assert_null(ev);
    struct events_rec r = {.event = "ban", .strikes = -1, .duration_s = -1};
    assert_int_equal(events_emit(ev, &r), 0);
    assert_true(events_open(&ev, "/nonexistent-dir/x.log") < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_hostile_user_agent_is_one_valid_line),
        cmocka_unit_test(test_events_escape_stops_on_character_boundary),
        cmocka_unit_test(test_events_long_fields_are_cut_but_line_stays_valid),
        cmocka_unit_test(test_events_emit_appends_lines_to_file),
        cmocka_unit_test(test_events_empty_path_is_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
