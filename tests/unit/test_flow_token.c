/* flow_token: HMAC-protected RFC 5626 flow tokens (encode, verify, key rotation). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/flow_token.h"

static const uint8_t key_a[FLOW_TOKEN_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const uint8_t key_b[FLOW_TOKEN_KEY_LEN] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static struct flow_token_keys *keys_new(const uint8_t *cur, const uint8_t *prev)
{
    struct flow_token_keys *k = NULL;

    assert_int_equal(flow_token_keys_new(&k, cur, prev), 0);
    assert_non_null(k);
    return k;
}

static struct flow_token_fields fields_v4(void)
{
    struct flow_token_fields f;

    memset(&f, 0, sizeof(f));
    f.worker = 3;
    f.transport = 1;
    f.sock = 5;
    f.slot = 0x01020304u;
    f.gen = 0xfffffffeu;
    f.epoch = 0xa5a5a5a5u;
    f.remote.in.sin_family = AF_INET;
    f.remote.in.sin_port = htons(40123);
    assert_int_equal(inet_pton(AF_INET, "198.51.100.77", &f.remote.in.sin_addr), 1);
    return f;
}

static struct flow_token_fields fields_v6(void)
{
    struct flow_token_fields f;

    memset(&f, 0, sizeof(f));
    f.worker = 250;
    f.transport = 3;
    f.slot = 77;
    f.gen = 1;
    f.remote.in6.sin6_family = AF_INET6;
    f.remote.in6.sin6_port = htons(5062);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1:2:3:4", &f.remote.in6.sin6_addr), 1);
    return f;
}

static int encode(struct flow_token_keys *k, const struct flow_token_fields *f, char *out)
{
    int n = flow_token_encode(k, f, out, FLOW_TOKEN_MAX);

    assert_true(n > 0);
    assert_true(n < FLOW_TOKEN_MAX);
    assert_int_equal(strlen(out), (size_t)n);
    return n;
}

static int decode(struct flow_token_keys *k, const char *tok, size_t len,
                  struct flow_token_fields *out)
{
    return flow_token_decode(k, slice_make(tok, len), out);
}

static void assert_fields_equal(const struct flow_token_fields *a,
                                const struct flow_token_fields *b)
{
    assert_int_equal(a->worker, b->worker);
    assert_int_equal(a->transport, b->transport);
    assert_int_equal(a->sock, b->sock);
    assert_int_equal(a->slot, b->slot);
    assert_int_equal(a->gen, b->gen);
    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->remote.sa.sa_family, b->remote.sa.sa_family);
    if (a->remote.sa.sa_family == AF_INET) {
        assert_int_equal(a->remote.in.sin_port, b->remote.in.sin_port);
        assert_memory_equal(&a->remote.in.sin_addr, &b->remote.in.sin_addr, 4);
    } else {
        assert_int_equal(a->remote.in6.sin6_port, b->remote.in6.sin6_port);
        assert_memory_equal(&a->remote.in6.sin6_addr, &b->remote.in6.sin6_addr, 16);
    }
}

static void assert_alphabet(const char *tok, int n)
{
    for (int i = 0; i < n; i++)
        assert_non_null(strchr(b64url_alphabet, tok[i]));
}

static void test_flow_token_roundtrip_ipv4_keeps_every_field(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields in = fields_v4(), out;
    char tok[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(k, &in, tok);
    assert_int_equal(n, FLOW_TOKEN_LEN_V4);
    assert_alphabet(tok, n);
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(decode(k, tok, (size_t)n, &out), 0);
    assert_fields_equal(&out, &in);
    flow_token_keys_free(k);
}

static void test_flow_token_roundtrip_ipv6_keeps_every_field(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields in = fields_v6(), out;
    char tok[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(k, &in, tok);
    assert_int_equal(n, FLOW_TOKEN_LEN_V6);
    assert_alphabet(tok, n);
    memset(&out, 0, sizeof(out));
    assert_int_equal(decode(k, tok, (size_t)n, &out), 0);
    assert_fields_equal(&out, &in);
    flow_token_keys_free(k);
}

static void test_flow_token_is_deterministic_and_depends_on_every_field(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields base = fields_v4(), f;
    char t0[FLOW_TOKEN_MAX], t1[FLOW_TOKEN_MAX];

    (void)state;
    encode(k, &base, t0);
    encode(k, &base, t1);
    assert_string_equal(t0, t1);

    f = base;
    f.worker++;
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.transport++;
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.sock = 7;
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.slot++;
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.gen++;
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.remote.in.sin_port = htons(40124);
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    f = base;
    f.remote.in.sin_addr.s_addr ^= htonl(1);
    encode(k, &f, t1);
    assert_string_not_equal(t0, t1);
    flow_token_keys_free(k);
}

static void test_flow_token_encode_rejects_unsupported_family_and_small_buffer(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields f = fields_v4();
    char tok[FLOW_TOKEN_MAX];

    (void)state;
    f.remote.sa.sa_family = AF_UNIX;
    assert_int_equal(flow_token_encode(k, &f, tok, sizeof(tok)), -EINVAL);
    f = fields_v4();
    assert_int_equal(flow_token_encode(k, &f, tok, FLOW_TOKEN_MAX - 1), -EINVAL);
    flow_token_keys_free(k);
}

/*
 * Changes one character of a valid token to every other base64url character (and a few
 * outside the alphabet) at every position: decoding must never succeed.
 */
static void flip_every_character(const struct flow_token_fields *in)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields out;
    char tok[FLOW_TOKEN_MAX], bad[FLOW_TOKEN_MAX];
    static const char outsiders[] = "+/=.~ %@;";
    int n = encode(k, in, tok);
    int bad_pos = -1, bad_rc = 0, n_bad_alphabet = 0;
    char bad_char = 0;

    for (int pos = 0; pos < n; pos++) {
        for (const char *c = b64url_alphabet; *c; c++) {
            if (*c == tok[pos])
                continue;
            memcpy(bad, tok, sizeof(bad));
            bad[pos] = *c;
            int rc = decode(k, bad, (size_t)n, &out);
            if (rc != -EPERM && rc != -EBADMSG && bad_pos < 0) {
                bad_pos = pos;
                bad_char = *c;
                bad_rc = rc;
            }
        }
        for (const char *c = outsiders; *c; c++) {
            memcpy(bad, tok, sizeof(bad));
            bad[pos] = *c;
            if (decode(k, bad, (size_t)n, &out) != -EBADMSG)
                n_bad_alphabet++;
        }
    }
    flow_token_keys_free(k);
    assert_int_equal(n_bad_alphabet, 0);
    /*
     * The last character of a token carries bits that decode to nothing; they must be
     * zero, or one token would have several spellings that all verify.
     */
    if (bad_pos >= 0)
        fail_msg("token %s with position %d changed to '%c' decoded (rc %d)", tok, bad_pos,
                 bad_char, bad_rc);
}

static void test_flow_token_any_changed_character_fails_ipv4(void **state)
{
    struct flow_token_fields in = fields_v4();

    (void)state;
    flip_every_character(&in);
}

static void test_flow_token_any_changed_character_fails_ipv6(void **state)
{
    struct flow_token_fields in = fields_v6();

    (void)state;
    flip_every_character(&in);
}

/* The same property, restricted to the bits the decoder actually uses. */
static void test_flow_token_any_changed_payload_bit_fails(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields in = fields_v4(), out;
    char tok[FLOW_TOKEN_MAX], bad[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(k, &in, tok);
    for (int pos = 0; pos < n; pos++) {
        int v = (int)(strchr(b64url_alphabet, tok[pos]) - b64url_alphabet);
        /* The last of 43 characters holds 4 payload bits (258 bits for 256). */
        int bits = pos == n - 1 ? 4 : 6;
        for (int b = 6 - bits; b < 6; b++) {
            memcpy(bad, tok, sizeof(bad));
            bad[pos] = b64url_alphabet[v ^ (1 << b)];
            int rc = decode(k, bad, (size_t)n, &out);
            assert_true(rc == -EPERM || rc == -EBADMSG);
        }
    }
    flow_token_keys_free(k);
}

static void test_flow_token_wrong_key_is_eperm(void **state)
{
    struct flow_token_keys *ka = keys_new(key_a, NULL);
    struct flow_token_keys *kb = keys_new(key_b, NULL);
    struct flow_token_fields in4 = fields_v4(), in6 = fields_v6(), out;
    char tok[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(ka, &in4, tok);
    assert_int_equal(decode(kb, tok, (size_t)n, &out), -EPERM);
    n = encode(ka, &in6, tok);
    assert_int_equal(decode(kb, tok, (size_t)n, &out), -EPERM);
    flow_token_keys_free(ka);
    flow_token_keys_free(kb);
}

static void test_flow_token_rotation_accepts_previous_key_only_when_configured(void **state)
{
    struct flow_token_keys *ka = keys_new(key_a, NULL);
    struct flow_token_keys *rotated = keys_new(key_b, key_a);
    struct flow_token_keys *no_prev = keys_new(key_b, NULL);
    struct flow_token_keys *other_prev = keys_new(key_b, key_b);
    struct flow_token_fields in = fields_v6(), out;
    char tok[FLOW_TOKEN_MAX], fresh[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(ka, &in, tok);
    memset(&out, 0, sizeof(out));
    assert_int_equal(decode(rotated, tok, (size_t)n, &out), 0);
    assert_fields_equal(&out, &in);
    assert_int_equal(decode(no_prev, tok, (size_t)n, &out), -EPERM);
    assert_int_equal(decode(other_prev, tok, (size_t)n, &out), -EPERM);

    /* New tokens are made under the current key, not the previous one. */
    n = encode(rotated, &in, fresh);
    assert_string_not_equal(tok, fresh);
    assert_int_equal(decode(no_prev, fresh, (size_t)n, &out), 0);
    assert_int_equal(decode(ka, fresh, (size_t)n, &out), -EPERM);
    flow_token_keys_free(ka);
    flow_token_keys_free(rotated);
    flow_token_keys_free(no_prev);
    flow_token_keys_free(other_prev);
}

static void test_flow_token_wrong_length_or_alphabet_is_ebadmsg(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields in = fields_v4(), out;
    char tok[FLOW_TOKEN_MAX], bad[FLOW_TOKEN_MAX + 8];

    (void)state;
    int n = encode(k, &in, tok);
    assert_int_equal(decode(k, "", 0, &out), -EBADMSG);
    assert_int_equal(decode(k, NULL, 0, &out), -EBADMSG);
    for (int len = 1; len < n; len++)
        assert_int_equal(decode(k, tok, (size_t)len, &out), -EBADMSG);
    /* One character too many, and padded forms. */
    memcpy(bad, tok, (size_t)n);
    bad[n] = 'A';
    assert_int_equal(decode(k, bad, (size_t)n + 1, &out), -EBADMSG);
    bad[n] = '=';
    bad[n + 1] = '=';
    assert_int_equal(decode(k, bad, (size_t)n + 2, &out), -EBADMSG);
    /* Right length, wrong alphabet (standard base64 and junk). */
    memset(bad, '+', FLOW_TOKEN_LEN_V4);
    assert_int_equal(decode(k, bad, FLOW_TOKEN_LEN_V4, &out), -EBADMSG);
    memset(bad, '/', FLOW_TOKEN_LEN_V6);
    assert_int_equal(decode(k, bad, FLOW_TOKEN_LEN_V6, &out), -EBADMSG);
    memset(bad, 0, FLOW_TOKEN_LEN_V4);
    assert_int_equal(decode(k, bad, FLOW_TOKEN_LEN_V4, &out), -EBADMSG);
    memcpy(bad, tok, (size_t)n);
    bad[10] = '\0';
    assert_int_equal(decode(k, bad, (size_t)n, &out), -EBADMSG);
    flow_token_keys_free(k);
}

static void test_flow_token_forged_token_of_right_shape_is_eperm(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_fields out;
    char forged[FLOW_TOKEN_LEN_V6 + 1];

    (void)state;
    memset(forged, 'A', FLOW_TOKEN_LEN_V6);
    forged[FLOW_TOKEN_LEN_V6] = '\0';
    assert_int_equal(decode(k, forged, FLOW_TOKEN_LEN_V4, &out), -EPERM);
    assert_int_equal(decode(k, forged, FLOW_TOKEN_LEN_V6, &out), -EPERM);
    flow_token_keys_free(k);
}

static void test_flow_token_decode_failure_leaves_output_untouched(void **state)
{
    struct flow_token_keys *k = keys_new(key_a, NULL);
    struct flow_token_keys *kb = keys_new(key_b, NULL);
    struct flow_token_fields in = fields_v4(), out, before;
    char tok[FLOW_TOKEN_MAX];

    (void)state;
    int n = encode(kb, &in, tok);
    memset(&out, 0x5a, sizeof(out));
    before = out;
    assert_int_equal(decode(k, tok, (size_t)n, &out), -EPERM);
    assert_memory_equal(&out, &before, sizeof(out));
    assert_int_equal(decode(k, tok, 5, &out), -EBADMSG);
    assert_memory_equal(&out, &before, sizeof(out));
    flow_token_keys_free(k);
    flow_token_keys_free(kb);
}

static void test_flow_token_keys_free_accepts_null(void **state)
{
    (void)state;
    flow_token_keys_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flow_token_roundtrip_ipv4_keeps_every_field),
        cmocka_unit_test(test_flow_token_roundtrip_ipv6_keeps_every_field),
        cmocka_unit_test(test_flow_token_is_deterministic_and_depends_on_every_field),
        cmocka_unit_test(test_flow_token_encode_rejects_unsupported_family_and_small_buffer),
        cmocka_unit_test(test_flow_token_any_changed_character_fails_ipv4),
        cmocka_unit_test(test_flow_token_any_changed_character_fails_ipv6),
        cmocka_unit_test(test_flow_token_any_changed_payload_bit_fails),
        cmocka_unit_test(test_flow_token_wrong_key_is_eperm),
        cmocka_unit_test(test_flow_token_rotation_accepts_previous_key_only_when_configured),
        cmocka_unit_test(test_flow_token_wrong_length_or_alphabet_is_ebadmsg),
        cmocka_unit_test(test_flow_token_forged_token_of_right_shape_is_eperm),
        cmocka_unit_test(test_flow_token_decode_failure_leaves_output_untouched),
        cmocka_unit_test(test_flow_token_keys_free_accepts_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
