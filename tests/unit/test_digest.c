/*
 * digest: RFC 7616 responses, stateless nonces, credentials parsing, users file loading.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "registrar/registrar_internal.h"

#define REALM "example.com"
#define T0 5000000ull

static struct digest *load(const char *text)
{
    struct digest *d = NULL;
    char err[256] = "";
    int rc = digest_new_string(&d, "users", text, strlen(text), REALM, err, sizeof(err));
    if (rc != 0)
        fail_msg("digest_new_string: %d %s", rc, err);
    return d;
}

/* RFC 7616 §3.9.1 example (HTTP, but the computation is the same). */
static void test_digest_response_matches_rfc7616_example(void **state)
{
    (void)state;
    struct digest_creds c = {
        .nonce = SLICE_LIT("7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"),
        .uri = SLICE_LIT("/dir/index.html"),
        .nc = SLICE_LIT("00000001"),
        .cnonce = SLICE_LIT("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
        .qop = SLICE_LIT("auth"),
    };
    const char a1[] = "Mufasa:http-auth@example.org:Circle of Life";
    char ha1[65], resp[65];
    digest_hash_hex(DIGEST_ALG_MD5, a1, strlen(a1), ha1);
    assert_int_equal(digest_response_hex(DIGEST_ALG_MD5, ha1, &c, SLICE_LIT("GET"), resp), 0);
    assert_string_equal(resp, "8ca523f5e9506fed4657c9700eebdbec");
    digest_hash_hex(DIGEST_ALG_SHA256, a1, strlen(a1), ha1);
    assert_int_equal(digest_response_hex(DIGEST_ALG_SHA256, ha1, &c, SLICE_LIT("GET"), resp), 0);
    assert_string_equal(resp, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
}

static void test_digest_nonce_valid_until_ttl_then_stale(void **state)
{
    (void)state;
    struct digest *d = load("alice:pw\n");
    char nonce[DIGEST_NONCE_LEN + 1];
    digest_nonce_make(d, T0, nonce, sizeof(nonce));
    assert_int_equal(strlen(nonce), DIGEST_NONCE_LEN);
    struct slice n = slice_make(nonce, strlen(nonce));
    assert_int_equal(digest_nonce_check(d, n, T0, 30), 0);
    assert_int_equal(digest_nonce_check(d, n, T0 + 30000, 30), 0);
    assert_int_equal(digest_nonce_check(d, n, T0 + 30001, 30), -ETIMEDOUT);
    /* From the future (beyond clock skew): not ours. */
    assert_int_equal(digest_nonce_check(d, n, T0 - 60000, 30), -EBADMSG);
    /* Tampered time or MAC. */
    nonce[3] = nonce[3] == '0' ? '1' : '0';
    assert_int_equal(digest_nonce_check(d, n, T0, 30), -EBADMSG);
    assert_int_equal(digest_nonce_check(d, SLICE_LIT("abc"), T0, 30), -EBADMSG);
    /* Another instance (another key) does not accept it. */
    struct digest *other = load("alice:pw\n");
    digest_nonce_make(d, T0, nonce, sizeof(nonce));
    assert_int_equal(digest_nonce_check(other, n, T0, 30), -EBADMSG);
    digest_free(other);
    digest_free(d);
}

static void test_digest_creds_parse_reads_fields(void **state)
{
    (void)state;
    struct digest_creds c;
    struct slice v = SLICE_LIT("Digest username=\"alice\", realm=\"example.com\", nonce=\"n1\", "
                               "uri=\"sip:example.com\", response=\"abc\", algorithm=SHA-256, "
                               "qop=auth, nc=00000001, cnonce=\"xyz\"");
    assert_int_equal(digest_creds_parse(v, &c), 0);
    assert_true(slice_eq(c.username, SLICE_LIT("alice")));
    assert_true(slice_eq(c.uri, SLICE_LIT("sip:example.com")));
    assert_true(slice_eq(c.algorithm, SLICE_LIT("SHA-256")));
    assert_true(slice_eq(c.nc, SLICE_LIT("00000001")));
    assert_true(slice_eq(c.cnonce, SLICE_LIT("xyz")));
    assert_int_equal(digest_creds_parse(SLICE_LIT("Basic YWxpY2U6cHc="), &c), -EBADMSG);
    assert_int_equal(
        digest_creds_parse(SLICE_LIT("Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\""),
                           &c),
        -EBADMSG);
}

static void make_creds(struct digest *d, enum digest_alg alg, const char *pw, char *nonce,
                       char *resp, struct digest_creds *c)
{
    digest_nonce_make(d, T0, nonce, DIGEST_NONCE_LEN + 1);
    *c = (struct digest_creds){
        .username = SLICE_LIT("alice"),
        .realm = SLICE_LIT(REALM),
        .nonce = slice_make(nonce, strlen(nonce)),
        .uri = SLICE_LIT("sip:example.com"),
        .algorithm = alg == DIGEST_ALG_MD5 ? SLICE_LIT("MD5") : SLICE_LIT("SHA-256"),
        .qop = SLICE_LIT("auth"),
        .nc = SLICE_LIT("00000001"),
        .cnonce = SLICE_LIT("c0ffee"),
    };
    char a1[128], ha1[65];
    snprintf(a1, sizeof(a1), "alice:%s:%s", REALM, pw);
    digest_hash_hex(alg, a1, strlen(a1), ha1);
    assert_int_equal(digest_response_hex(alg, ha1, c, SLICE_LIT("REGISTER"), resp), 0);
    c->response = slice_make(resp, strlen(resp));
}

static void test_digest_verify_outcomes(void **state)
{
    (void)state;
    struct digest *d = load("alice:alicepw\n");
    char nonce[DIGEST_NONCE_LEN + 1], resp[65];
    struct digest_creds c;
    const struct slice reg = SLICE_LIT("REGISTER");
    make_creds(d, DIGEST_ALG_MD5, "alicepw", nonce, resp, &c);
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), 0);
    c.algorithm = SLICE_NULL; /* MD5 is the default algorithm */
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), 0);
    assert_int_equal(digest_verify(d, &c, SLICE_LIT("INVITE"), T0, 30), -EACCES);
    assert_int_equal(digest_verify(d, &c, reg, T0 + 31000, 30), -ETIMEDOUT);
    make_creds(d, DIGEST_ALG_SHA256, "alicepw", nonce, resp, &c);
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), 0);
    make_creds(d, DIGEST_ALG_SHA256, "wrong", nonce, resp, &c);
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), -EACCES);
    c.realm = SLICE_LIT("other");
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), -EBADMSG);
    c.realm = SLICE_LIT(REALM);
    c.qop = SLICE_NULL;
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), -EBADMSG);
    c.username = SLICE_LIT("bob");
    assert_int_equal(digest_verify(d, &c, reg, T0, 30), -ENOENT);
    digest_free(d);
}

static void test_digest_challenge_offers_sha256_and_md5(void **state)
{
    (void)state;
    struct digest *d = load("alice:pw\n");
    char buf[1024];
    int n = digest_challenge_build(d, T0, false, 3, buf, sizeof(buf));
    assert_true(n > 0);
    const char *sha = strstr(buf, "algorithm=SHA-256");
    const char *md5 = strstr(buf, "algorithm=MD5");
    assert_non_null(sha);
    assert_non_null(md5);
    assert_true(sha < md5);
    assert_null(strstr(buf, "stale"));
    /* The other order, and each algorithm alone (MD5 alone is the default). */
    assert_true(digest_challenge_build(d, T0, false, 2, buf, sizeof(buf)) > 0);
    assert_true(strstr(buf, "algorithm=MD5") < strstr(buf, "algorithm=SHA-256"));
    assert_true(digest_challenge_build(d, T0, false, 0, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "algorithm=MD5"));
    assert_null(strstr(buf, "SHA-256"));
    assert_true(digest_challenge_build(d, T0, false, 1, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "algorithm=SHA-256"));
    assert_null(strstr(buf, "MD5"));
    assert_true(digest_challenge_build(d, T0, true, 3, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "stale=true"));
    assert_int_equal(digest_challenge_build(d, T0, false, 3, buf, 40), -ENOSPC);
    digest_free(d);
}

/* The nonce-count table fails closed: with every slot in use a new use is refused
 * (-ENOSPC) and counted, never let through unchecked. */
static void test_digest_nc_table_full_refuses(void **state)
{
    (void)state;
    struct digest *d = load("alice:pw\n");
    digest_nc_size(d, 16);
    char nonce[DIGEST_NONCE_LEN + 1];
    digest_nonce_make(d, T0, nonce, sizeof(nonce));
    char cnonces[17][8];
    struct digest_creds c = {.username = SLICE_LIT("alice"),
                             .nonce = slice_make(nonce, strlen(nonce)),
                             .nc = SLICE_LIT("00000001")};
    for (int i = 0; i < 17; i++) {
        snprintf(cnonces[i], sizeof(cnonces[i]), "cn%d", i);
        c.cnonce = slice_make(cnonces[i], strlen(cnonces[i]));
        assert_int_equal(digest_nc_note(d, &c, 1, T0, 30), i < 16 ? 0 : -ENOSPC);
    }
    assert_int_equal(digest_nc_full(d), 1);
    /* A known entry is still checked: a replay is caught, a higher nc passes. */
    c.cnonce = slice_make(cnonces[3], strlen(cnonces[3]));
    assert_int_equal(digest_nc_note(d, &c, 2, T0, 30), -EALREADY);
    c.nc = SLICE_LIT("00000002");
    assert_int_equal(digest_nc_note(d, &c, 2, T0, 30), 0);
    /* Once the nonces expire their slots are free again. */
    c.cnonce = slice_make(cnonces[16], strlen(cnonces[16]));
    assert_int_equal(digest_nc_note(d, &c, 1, T0 + 60000, 30), 0);
    digest_free(d);
}

static void test_digest_uri_and_algorithm_checks(void **state)
{
    (void)state;
    struct digest_creds c = {.uri = SLICE_LIT("sip:example.com")};
    assert_true(digest_uri_matches(&c, SLICE_LIT("sip:example.com")));
    assert_false(digest_uri_matches(&c, SLICE_LIT("sip:example.com;transport=tcp")));
    assert_false(digest_uri_matches(&c, SLICE_LIT("sip:other.example.com")));
    /* challenges: 0 md5, 1 sha256, 2 md5 then sha256, 3 sha256 then md5. */
    c.algorithm = SLICE_NULL; /* absent means MD5 */
    assert_true(digest_alg_offered(&c, 0));
    assert_false(digest_alg_offered(&c, 1));
    assert_true(digest_alg_offered(&c, 3));
    c.algorithm = SLICE_LIT("md5");
    assert_false(digest_alg_offered(&c, 1));
    assert_true(digest_alg_offered(&c, 2));
    c.algorithm = SLICE_LIT("SHA-256");
    assert_true(digest_alg_offered(&c, 1));
    assert_false(digest_alg_offered(&c, 0));
    assert_true(digest_alg_offered(&c, 2));
    c.algorithm = SLICE_LIT("SHA-512-256");
    assert_false(digest_alg_offered(&c, 3));

    struct digest *d = load("alice:pw\n");
    char buf[1024];
    int n = digest_challenge_build_hdr(d, "Proxy-Authenticate", T0, false, 3, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(strncmp(buf, "Proxy-Authenticate: Digest realm=\"example.com\"", 46), 0);
    assert_null(strstr(buf, "WWW-Authenticate"));
    digest_free(d);
}

static void test_digest_users_file_loads_and_reports_bad_lines(void **state)
{
    (void)state;
    struct digest *d = load("# comment\n\n  alice:a:b:c  \r\nbob:pw\n");
    assert_int_equal(digest_n_users(d), 2);
    assert_true(digest_has_user(d, SLICE_LIT("alice")));
    assert_true(digest_has_user(d, SLICE_LIT("bob")));
    assert_false(digest_has_user(d, SLICE_LIT("Bob")));
    digest_free(d);

    char err[256];
    static const struct {
        const char *text;
        const char *err;
    } bad[] = {
        {"alice:pw\n# c\nnocolon\n", "users:3: "},
        {"alice:pw\n:pw\n", "users:2: "},
        {"alice:pw\nalice:again\n", "users:2: duplicate user"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d = NULL;
        assert_int_equal(digest_new_string(&d, "users", bad[i].text, strlen(bad[i].text), REALM,
                                           err, sizeof(err)),
                         -EINVAL);
        assert_null(d);
        assert_non_null(strstr(err, bad[i].err));
    }

    assert_int_equal(digest_new(&d, TEST_DATA_DIR "/users.txt", REALM, err, sizeof(err)), 0);
    assert_int_equal(digest_n_users(d), 1002);
    assert_true(digest_has_user(d, SLICE_LIT("1000")));
    assert_true(digest_has_user(d, SLICE_LIT("1999")));
    assert_false(digest_has_user(d, SLICE_LIT("2000")));
    digest_free(d);
    assert_true(digest_new(&d, TEST_DATA_DIR "/no-such-file", REALM, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "no-such-file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_response_matches_rfc7616_example),
        cmocka_unit_test(test_digest_nonce_valid_until_ttl_then_stale),
        cmocka_unit_test(test_digest_creds_parse_reads_fields),
        cmocka_unit_test(test_digest_verify_outcomes),
        cmocka_unit_test(test_digest_challenge_offers_sha256_and_md5),
        cmocka_unit_test(test_digest_nc_table_full_refuses),
        cmocka_unit_test(test_digest_uri_and_algorithm_checks),
        cmocka_unit_test(test_digest_users_file_loads_and_reports_bad_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
