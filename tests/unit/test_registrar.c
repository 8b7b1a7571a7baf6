/*
 * Embedded registrar: REGISTER processing, digest auth, routing and response relay,
 * driven with raw SIP text and a send callback that records every datagram.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "registrar/registrar_internal.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/registrar.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

#define REALM "example.com"
#define SELF "127.0.0.1:5080"
#define MAX_SENT 8
#define T0 1000000ull

struct sent {
    struct sockaddr_storage dst;
    socklen_t dst_len;
    char buf[8192];
    size_t len;
};

struct fx {
    struct registrar *r;
    struct config_addr self, edge, peer;
    struct policy pol;
    struct sent sent[MAX_SENT];
    size_t n_sent;
    struct sip_msg msg; /* last parsed output */
    struct sip_hdr hdrs[64];
    struct sockaddr_storage edge_ss, other_ss;
    socklen_t edge_len, other_len;
};

static void on_send(void *ctx, const struct sockaddr *dst, socklen_t dst_len, const char *buf,
                    size_t len)
{
    struct fx *f = ctx;
    assert_true(f->n_sent < MAX_SENT);
    assert_true(len < sizeof(f->sent[0].buf));
    struct sent *s = &f->sent[f->n_sent++];
    memcpy(&s->dst, dst, dst_len);
    s->dst_len = dst_len;
    memcpy(s->buf, buf, len);
    s->buf[len] = '\0';
    s->len = len;
}

#include "reg_tx.h"

static void addr_set(struct config_addr *a, const char *ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    a->len = sizeof(*sin);
    snprintf(a->host, sizeof(a->host), "%s", ip);
    snprintf(a->text, sizeof(a->text), "%s:%u", ip, port);
    a->port = port;
}

static int fx_setup_opts(void **state, bool with_auth, uint32_t nc_slots, int challenges)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f) /* not assert_non_null: gcc -O2 does not know that it returns only on success */
        return -1;
    addr_set(&f->self, "127.0.0.1", 5080);
    addr_set(&f->edge, "127.0.0.1", 5070);
    addr_set(&f->peer, "198.51.100.7", 5070);
    struct config_addr other;
    addr_set(&other, "127.0.0.1", 5071);
    memcpy(&f->edge_ss, &f->edge.ss, sizeof(f->edge_ss));
    f->edge_len = f->edge.len;
    memcpy(&f->other_ss, &other.ss, sizeof(f->other_ss));
    f->other_len = other.len;
    f->pol = (struct policy){
        .max_message_bytes = 65535,
        .max_headers = 64,
        .min_expires_s = 60,
        .max_expires_s = 3600,
        .default_expires_s = 600,
        .max_bindings = 4,
        .max_contacts_per_aor = 3,
        .nonce_ttl_s = 30,
        .digest_challenges = challenges, /* 3, sha256-md5: both algorithms are exercised */
    };
    struct registrar_opts opts = {
        .self = &f->self,
        .users_file = with_auth ? TEST_DATA_DIR "/users.txt" : NULL,
        .realm = REALM,
        .policy = &f->pol,
        .trusted = &f->edge,
        .n_trusted = 1,
        .peers = &f->peer,
        .n_peers = 1,
        .nonce_count_slots = nc_slots,
    };
    char err[256] = "";
    int rc = registrar_new_tx(&f->r, &opts, f, err, sizeof(err));
    if (rc != 0)
        fail_msg("registrar_new: %d %s", rc, err);
    *state = f;
    return 0;
}

static int fx_setup(void **state, bool with_auth)
{
    return fx_setup_opts(state, with_auth, 0, 3);
}

static int setup_auth_small_nc(void **state)
{
    return fx_setup_opts(state, true, 16, 3);
}

static int setup_auth_sha256_only(void **state)
{
    return fx_setup_opts(state, true, 0, 1);
}

static int setup_auth(void **state)
{
    return fx_setup(state, true);
}

static int setup_open(void **state)
{
    return fx_setup(state, false);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    registrar_free(f->r);
    free(f);
    return 0;
}

/* Sends text (LF line ends turned into CRLF) from src; returns datagrams emitted. */
static size_t fx_send_from(struct fx *f, const struct sockaddr_storage *src, socklen_t src_len,
                           uint64_t now_ms, const char *fmt, ...)
{
    char text[8192], wire[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    size_t n = 0;
    for (const char *p = text; *p && n + 2 < sizeof(wire); p++) {
        if (*p == '\n')
            wire[n++] = '\r';
        wire[n++] = *p;
    }
    f->n_sent = 0;
    registrar_handle(f->r, wire, n, (const struct sockaddr *)src, src_len, now_ms);
    return f->n_sent;
}

/* Parses datagram i of the last call into f->msg. */
static const struct sip_msg *fx_out(struct fx *f, size_t i)
{
    assert_true(i < f->n_sent);
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 64};
    struct sip_err err;
    int rc = sip_msg_parse(&f->msg, f->sent[i].buf, f->sent[i].len, f->hdrs, &lim, &err);
    if (rc != 0)
        fail_msg("output does not parse (%s):\n%s", err.reason, f->sent[i].buf);
    return &f->msg;
}

static int fx_status(struct fx *f)
{
    if (f->n_sent != 1)
        fail_msg("expected one datagram, got %zu", f->n_sent);
    const struct sip_msg *m = fx_out(f, 0);
    assert_false(m->is_request);
    return m->status;
}

static uint16_t sent_port(const struct sent *s)
{
    return ntohs(((const struct sockaddr_in *)&s->dst)->sin_port);
}

static size_t hdr_count(const struct sip_msg *m, enum sip_hdr_id id)
{
    size_t n = 0;
    for (const struct sip_hdr *h = sip_msg_hdr(m, id); h; h = sip_msg_hdr_next(m, h))
        n++;
    return n;
}

static bool has_text(const struct fx *f, size_t i, const char *needle)
{
    return strstr(f->sent[i].buf, needle) != NULL;
}

/* ---- REGISTER text ---------------------------------------------------------------- */

#define REG_FMT                                                                                    \
    "REGISTER sip:example.com SIP/2.0\n"                                                           \
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKedge%u\n"                                       \
    "Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;rport=5060;branch=z9hG4bKc%u\n"          \
    "Max-Forwards: 69\n"                                                                           \
    "From: <sip:%s@example.com>;tag=f%u\n"                                                         \
    "To: <sip:%s@example.com>\n"                                                                   \
    "Call-ID: %s\n"                                                                                \
    "CSeq: %u REGISTER\n"                                                                          \
    "Supported: path, outbound\n"                                                                  \
    "Path: <sip:tok1@127.0.0.1:5070;lr>\n"                                                         \
    "%s"                                                                                           \
    "Content-Length: 0\n\n"

/* REGISTER for user from the edge; extra holds CRLF-less "Name: value\n" lines. */
static size_t reg(struct fx *f, uint64_t now, const char *user, const char *call_id, unsigned cseq,
                  const char *extra)
{
    return fx_send_from(f, &f->edge_ss, f->edge_len, now, REG_FMT, cseq, cseq, user, cseq, user,
                        call_id, cseq, extra);
}

static void hash_hex(const char *alg, const char *data, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, strlen(data), md, &n, EVP_get_digestbyname(alg), NULL), 1);
    for (unsigned i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* Finds the challenge for alg ("MD5" / "SHA-256") in the last 401 and copies its nonce. */
static bool challenge_nonce(struct fx *f, const char *alg, char *nonce, size_t cap, bool *stale)
{
    const struct sip_msg *m = fx_out(f, 0);
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_WWW_AUTHENTICATE); h;
         h = sip_msg_hdr_next(m, h)) {
        struct slice a, n, qop, s;
        if (!sip_auth_param(h->value, "algorithm", &a) || !slice_case_eq_str(a, alg))
            continue;
        assert_true(sip_auth_param(h->value, "nonce", &n));
        assert_true(sip_auth_param(h->value, "qop", &qop));
        assert_true(slice_eq(qop, SLICE_LIT("auth")));
        assert_true(sip_auth_param(h->value, "realm", &a));
        assert_true(slice_eq(a, SLICE_LIT(REALM)));
        slice_copy_cstr(nonce, cap, n);
        if (stale)
            *stale = sip_auth_param(h->value, "stale", &s) && slice_case_eq_str(s, "true");
        return true;
    }
    return false;
}

/* hdr ("Authorization" / "Proxy-Authorization") line for user/pw over a nonce, with
 * nonce count nc, for method and digest uri. */
static void auth_line_any(char *out, size_t cap, const char *hdr, const char *method,
                          const char *uri, const char *alg, const char *user, const char *pw,
                          const char *nonce, unsigned nc)
{
    const char *md = strcmp(alg, "MD5") == 0 ? "MD5" : "SHA256";
    char a1[256], a2[256], ha1[65], ha2[65], kd[512], resp[65];
    snprintf(a1, sizeof(a1), "%s:%s:%s", user, REALM, pw);
    hash_hex(md, a1, ha1);
    snprintf(a2, sizeof(a2), "%s:%s", method, uri);
    hash_hex(md, a2, ha2);
    snprintf(kd, sizeof(kd), "%s:%s:%08x:c0ffee:auth:%s", ha1, nonce, nc, ha2);
    hash_hex(md, kd, resp);
    snprintf(out, cap,
             "%s: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", "
             "uri=\"%s\", response=\"%s\", algorithm=%s, qop=auth, nc=%08x, "
             "cnonce=\"c0ffee\"\n",
             hdr, user, REALM, nonce, uri, resp, alg, nc);
}

/* Authorization header line for user/pw over a nonce, with nonce count nc. */
static void auth_line_nc(char *out, size_t cap, const char *alg, const char *user, const char *pw,
                         const char *nonce, unsigned nc)
{
    auth_line_any(out, cap, "Authorization", "REGISTER", "sip:example.com", alg, user, pw, nonce,
                  nc);
}

static void auth_line(char *out, size_t cap, const char *alg, const char *user, const char *pw,
                      const char *nonce)
{
    auth_line_nc(out, cap, alg, user, pw, nonce, 1);
}

/* Challenge + authenticated REGISTER; returns the final status. */
static int reg_auth(struct fx *f, uint64_t now, const char *alg, const char *user,
                    const char *auth_user, const char *pw, unsigned cseq, const char *extra)
{
    reg(f, now, user, "auth-call", cseq, extra);
    assert_int_equal(fx_status(f), 401);
    char nonce[128], line[1024], all[2048];
    assert_true(challenge_nonce(f, alg, nonce, sizeof(nonce), NULL));
    auth_line(line, sizeof(line), alg, auth_user, pw, nonce);
    snprintf(all, sizeof(all), "%s%s", extra, line);
    reg(f, now, user, "auth-call", cseq + 1, all);
    return fx_status(f);
}

/* ---- authentication --------------------------------------------------------------- */

static void test_registrar_default_policy_challenges_with_md5_only(void **state)
{
    struct fx *f = *state;
    registrar_free(f->r);
    f->pol.digest_challenges = 0; /* the policy default */
    struct registrar_opts opts = {.self = &f->self,
                                  .users_file = TEST_DATA_DIR "/users.txt",
                                  .realm = REALM,
                                  .policy = &f->pol,
                                  .trusted = &f->edge,
                                  .n_trusted = 1};
    char err[256];
    assert_int_equal(registrar_new_tx(&f->r, &opts, f, err, sizeof(err)), 0);
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:alice@192.0.2.10:5060>\n");
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(hdr_count(&f->msg, SIP_HDR_WWW_AUTHENTICATE), 1);
    char nonce[128];
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), NULL));
    assert_false(challenge_nonce(f, "SHA-256", nonce, sizeof(nonce), NULL));
}

static void test_registrar_first_register_challenged_with_both_algorithms(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:alice@192.0.2.10:5060>\n");
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(hdr_count(&f->msg, SIP_HDR_WWW_AUTHENTICATE), 2);
    char nonce[128];
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), NULL));
    assert_true(challenge_nonce(f, "SHA-256", nonce, sizeof(nonce), NULL));
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.challenges, 1);
}

static void check_ok_with_contact_and_path(struct fx *f)
{
    const struct sip_msg *m = fx_out(f, 0);
    assert_int_equal(m->status, 200);
    const struct sip_hdr *c = sip_msg_hdr(m, SIP_HDR_CONTACT);
    assert_non_null(c);
    struct sip_nameaddr na;
    struct slice rest, v;
    assert_int_equal(sip_nameaddr_parse(c->value, &na, &rest), 0);
    assert_true(slice_eq(na.uri, SLICE_LIT("sip:alice@192.0.2.10:5060")));
    assert_true(sip_params_get(na.params, "expires", &v));
    assert_true(slice_eq(v, SLICE_LIT("600")));
    const struct sip_hdr *p = sip_msg_hdr(m, SIP_HDR_PATH);
    assert_non_null(p);
    assert_true(slice_eq(p->value, SLICE_LIT("<sip:tok1@127.0.0.1:5070;lr>")));
    /* Sent back to where the REGISTER came from, top Via still ours to pop. */
    assert_int_equal(sent_port(&f->sent[0]), 5070);
    assert_int_equal(hdr_count(m, SIP_HDR_VIA), 2);
}

static void test_registrar_md5_register_ok_echoes_contact_and_path(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "alicepw", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     200);
    check_ok_with_contact_and_path(f);
    assert_int_equal(registrar_n_bindings(f->r), 1);
}

static void test_registrar_sha256_register_ok(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_auth(f, T0, "SHA-256", "alice", "alice", "alicepw", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     200);
    check_ok_with_contact_and_path(f);
    /* Generated users from the test file work too. */
    assert_int_equal(reg_auth(f, T0, "SHA-256", "1999", "1999", "pw1999", 5,
                              "Contact: <sip:1999@192.0.2.11:5060>\n"),
                     200);
}

/*
 * RFC 7616 §5.5: captured credentials cannot be replayed. The digest covers neither the
 * Contact nor the Expires, so a replay could move or remove a binding; the nonce count
 * stops it. A retransmission (the same request) still gets its 200, and an honest client
 * reusing the nonce with a higher nc is accepted.
 */
static void test_registrar_replayed_credentials_rechallenged(void **state)
{
    struct fx *f = *state;
    const char *mine = "Contact: <sip:alice@192.0.2.10:5060>\n";
    char nonce[128], line[1024], all[2048];
    reg(f, T0, "alice", "c1", 1, mine);
    assert_int_equal(fx_status(f), 401);
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), NULL));
    auth_line(line, sizeof(line), "MD5", "alice", "alicepw", nonce);
    snprintf(all, sizeof(all), "%s%s", mine, line);
    reg(f, T0, "alice", "c1", 2, all);
    assert_int_equal(fx_status(f), 200);
    /* The 200 was lost: the client retransmits the same request. */
    reg(f, T0 + 500, "alice", "c1", 2, all);
    assert_int_equal(fx_status(f), 200);
    /* The same credentials in a request for another Contact: a fresh challenge. */
    snprintf(all, sizeof(all), "Contact: <sip:alice@203.0.113.66:5060>\n%s", line);
    reg(f, T0 + 1000, "alice", "evil-call", 7, all);
    assert_int_equal(fx_status(f), 401);
    bool stale = false;
    assert_true(challenge_nonce(f, "MD5", nonce + 64, sizeof(nonce) - 64, &stale));
    assert_true(stale);
    /* ...and in one that would remove the binding. */
    snprintf(all, sizeof(all), "Contact: <sip:alice@192.0.2.10:5060>;expires=0\n%s", line);
    reg(f, T0 + 1000, "alice", "c1", 3, all);
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    /* The honest client counts on: nc 2 over the same nonce. */
    auth_line_nc(line, sizeof(line), "MD5", "alice", "alicepw", nonce, 2);
    snprintf(all, sizeof(all), "Contact: <sip:alice@192.0.2.10:5060>;expires=0\n%s", line);
    reg(f, T0 + 2000, "alice", "c1", 4, all);
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.replays, 2);
    assert_int_equal(st.nc_table_full, 0);
}

static void test_registrar_wrong_password_rechallenged(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "wrong", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     401);
    char nonce[128];
    bool stale = true;
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), &stale));
    assert_false(stale);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.auth_fail, 1);
}

/* A full nonce-count table fails closed: 503 with Retry-After, never an unchecked
 * acceptance (which would let a captured Authorization be replayed). */
static void test_registrar_full_nonce_table_answers_503(void **state)
{
    struct fx *f = *state;
    for (unsigned i = 0; i < 16; i++)
        assert_int_equal(reg_auth(f, T0 + 10 * i, "MD5", "alice", "alice", "alicepw", 2 * i + 1,
                                  "Contact: <sip:alice@192.0.2.1>\n"),
                         200);
    assert_int_equal(reg_auth(f, T0 + 500, "MD5", "alice", "alice", "alicepw", 101,
                              "Contact: <sip:alice@192.0.2.9>\n"),
                     503);
    assert_true(has_text(f, 0, "Retry-After: "));
    assert_int_equal(registrar_n_bindings(f->r), 1);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.nc_table_full, 1);
}

/* RFC 7616 §3.4.6: the digest uri must be the Request-URI; credentials computed for
 * another URI (captured from another request) are challenged again. */
static void test_registrar_digest_uri_must_be_request_uri(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "u1", 1, "Contact: <sip:alice@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 401);
    char nonce[128], line[1024], all[2048];
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), NULL));
    auth_line_any(line, sizeof(line), "Authorization", "REGISTER", "sip:other.example.com", "MD5",
                  "alice", "alicepw", nonce, 1);
    snprintf(all, sizeof(all), "Contact: <sip:alice@192.0.2.1>\n%s", line);
    reg(f, T0, "alice", "u1", 2, all);
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.digest_uri_mismatch, 1);
}

/* With digest: sha256 only SHA-256 is offered: an MD5 answer (a downgrade) is refused. */
static void test_registrar_md5_refused_when_only_sha256_offered(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "a1", 1, "Contact: <sip:alice@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 401);
    char nonce[128];
    assert_false(challenge_nonce(f, "MD5", nonce, sizeof(nonce), NULL));
    assert_true(challenge_nonce(f, "SHA-256", nonce, sizeof(nonce), NULL));
    char line[1024], all[2048];
    auth_line(line, sizeof(line), "MD5", "alice", "alicepw", nonce);
    snprintf(all, sizeof(all), "Contact: <sip:alice@192.0.2.1>\n%s", line);
    reg(f, T0, "alice", "a1", 2, all);
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.digest_alg_refused, 1);
    /* SHA-256 over the same nonce is fine. */
    auth_line(line, sizeof(line), "SHA-256", "alice", "alicepw", nonce);
    snprintf(all, sizeof(all), "Contact: <sip:alice@192.0.2.1>\n%s", line);
    reg(f, T0, "alice", "a1", 3, all);
    assert_int_equal(fx_status(f), 200);
}

static void test_registrar_expired_nonce_answers_stale(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:alice@192.0.2.10:5060>\n");
    char nonce[128], line[1024], extra[2048];
    assert_true(challenge_nonce(f, "SHA-256", nonce, sizeof(nonce), NULL));
    auth_line(line, sizeof(line), "SHA-256", "alice", "alicepw", nonce);
    snprintf(extra, sizeof(extra), "Contact: <sip:alice@192.0.2.10:5060>\n%s", line);
    reg(f, T0 + 31000, "alice", "c1", 2, extra); /* nonce_ttl_s = 30 */
    assert_int_equal(fx_status(f), 401);
    bool stale = false;
    assert_true(challenge_nonce(f, "MD5", nonce, sizeof(nonce), &stale));
    assert_true(stale);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    /* The same credentials within the lifetime succeed. */
    reg(f, T0 + 29000, "alice", "c1", 3, extra);
    assert_int_equal(fx_status(f), 200);
}

static void test_registrar_unknown_user_or_other_aor_forbidden(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        reg_auth(f, T0, "MD5", "mallory", "mallory", "x", 1, "Contact: <sip:m@192.0.2.66>\n"), 403);
    /* bob's valid credentials cannot register alice's AOR. */
    assert_int_equal(
        reg_auth(f, T0, "MD5", "alice", "bob", "bobpw", 1, "Contact: <sip:m@192.0.2.66>\n"), 403);
    assert_int_equal(registrar_n_bindings(f->r), 0);
}

static void test_registrar_trusted_pai_dereg_accepted(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "alicepw", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     200);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    /* From an untrusted address the assertion is ignored: challenged. */
    fx_send_from(f, &f->other_ss, f->other_len, T0, REG_FMT, 7, 7, "alice", 7, "alice", "x", 7,
                 "P-Asserted-Identity: <sip:alice@example.com>\n"
                 "Contact: <sip:alice@192.0.2.10:5060>;expires=0\n");
    assert_int_equal(fx_status(f), 401);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    /* A trusted peer asserting another AOR is challenged as well. */
    reg(f, T0, "alice", "x", 8,
        "P-Asserted-Identity: <sip:bob@example.com>\n"
        "Contact: <sip:alice@192.0.2.10:5060>;expires=0\n");
    assert_int_equal(fx_status(f), 401);
    /* Trusted, not a pure removal: challenged. */
    reg(f, T0, "alice", "x", 8,
        "P-Asserted-Identity: <sip:alice@example.com>\n"
        "Contact: <sip:alice@192.0.2.10:5060>;expires=60\n");
    assert_int_equal(fx_status(f), 401);
    /* The edge (trusted) removes it. */
    reg(f, T0, "alice", "x", 9,
        "P-Asserted-Identity: <sip:alice@EXAMPLE.com>\n"
        "Contact: <sip:alice@192.0.2.10:5060>;expires=0\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.trusted_dereg, 1);
}

/* A binding registered with +sip.instance (an outbound client) is removed by a
 * de-REGISTER that names only its Contact URI, as the edge sends for a dead flow; a
 * refresh of the bare URI does not take it over. */
static void test_registrar_instance_binding_removed_by_bare_uri(void **state)
{
    struct fx *f = *state;
    const char *inst = "Contact: <sip:alice@192.0.2.10:5060;transport=tls>"
                       ";+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000000a>\"\n";
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "alicepw", 1, inst), 200);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    reg(f, T0 + 1000, "alice", "x", 9,
        "P-Asserted-Identity: <sip:alice@example.com>\n"
        "Contact: <sip:alice@192.0.2.10:5060;transport=tls>;expires=0\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 0);

    /* A refresh of the bare URI is another binding: the outbound one keeps its instance. */
    assert_int_equal(reg_auth(f, T0 + 2000, "MD5", "alice", "alice", "alicepw", 3, inst), 200);
    assert_int_equal(reg_auth(f, T0 + 3000, "MD5", "alice", "alice", "alicepw", 5,
                              "Contact: <sip:alice@192.0.2.10:5060;transport=tls>\n"),
                     200);
    assert_int_equal(registrar_n_bindings(f->r), 2);
}

/* ---- contact processing (no auth) ------------------------------------------------- */

static void test_registrar_short_expires_gets_423(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:alice@192.0.2.10>;expires=30\n");
    assert_int_equal(fx_status(f), 423);
    const struct sip_hdr *h = sip_msg_hdr(&f->msg, SIP_HDR_MIN_EXPIRES);
    assert_non_null(h);
    assert_true(slice_eq(h->value, SLICE_LIT("60")));
    assert_int_equal(registrar_n_bindings(f->r), 0);
}

static void test_registrar_expires_capped_at_max(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Expires: 99999\nContact: <sip:alice@192.0.2.10>\n");
    assert_int_equal(fx_status(f), 200);
    assert_true(has_text(f, 0, "Contact: <sip:alice@192.0.2.10>;expires=3600\r\n"));
}

static void test_registrar_multiple_contacts_ordered_by_q(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1,
        "Contact: <sip:a@192.0.2.1>;q=0.1, <sip:b@192.0.2.2>;q=0.9\n"
        "Contact: <sip:c@192.0.2.3>;q=0.5;expires=120\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 3);
    const char *out = f->sent[0].buf;
    const char *b = strstr(out, "<sip:b@192.0.2.2>;expires=600;q=0.9");
    const char *c = strstr(out, "<sip:c@192.0.2.3>;expires=120;q=0.5");
    const char *a = strstr(out, "<sip:a@192.0.2.1>;expires=600;q=0.1");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(b < c && c < a);
    /* A refresh of one contact from another Call-ID keeps the others. */
    reg(f, T0 + 1000, "alice", "c2", 1, "Contact: <sip:c@192.0.2.3>;expires=0\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    assert_int_equal(hdr_count(&f->msg, SIP_HDR_CONTACT), 2);
    /* A query (no Contact) lists them and changes nothing. */
    reg(f, T0 + 2000, "alice", "c3", 1, "");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(hdr_count(&f->msg, SIP_HDR_CONTACT), 2);
    assert_true(has_text(f, 0, "<sip:b@192.0.2.2>;expires=598;q=0.9"));
}

static void test_registrar_star_removes_all(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    reg(f, T0, "alice", "c2", 1, "Contact: *\n"); /* no Expires: 0 */
    assert_int_equal(fx_status(f), 400);
    reg(f, T0, "alice", "c2", 1, "Expires: 0\nContact: *\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    assert_null(sip_msg_hdr(&f->msg, SIP_HDR_CONTACT));
}

static void test_registrar_stale_cseq_keeps_binding(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 5, "Contact: <sip:a@192.0.2.1>;expires=600\n");
    assert_int_equal(fx_status(f), 200);
    /* Same Call-ID, lower CSeq: RFC 3261 §10.3 step 7, the update fails. */
    reg(f, T0 + 1000, "alice", "c1", 4, "Contact: <sip:a@192.0.2.1>;expires=0\n");
    assert_int_equal(fx_status(f), 500);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    /* A retransmission (same CSeq) is answered like the original. */
    reg(f, T0 + 1000, "alice", "c1", 5, "Contact: <sip:a@192.0.2.1>;expires=600\n");
    assert_int_equal(fx_status(f), 200);
    /* Higher CSeq updates. */
    reg(f, T0 + 2000, "alice", "c1", 6, "Contact: <sip:a@192.0.2.1>;expires=0\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(registrar_n_bindings(f->r), 0);
}

static void test_registrar_full_table_503_keeps_old_bindings(void **state)
{
    struct fx *f = *state;
    /* Per-AOR bound is 3. */
    reg(f, T0, "alice", "c1", 1,
        "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>, <sip:c@192.0.2.3>\n");
    assert_int_equal(fx_status(f), 200);
    reg(f, T0, "alice", "c1", 2, "Contact: <sip:d@192.0.2.4>\n");
    assert_int_equal(fx_status(f), 503);
    assert_true(has_text(f, 0, "Retry-After: "));
    assert_int_equal(registrar_n_bindings(f->r), 3);
    /* Table bound is 4. */
    reg(f, T0, "bob", "c2", 1, "Contact: <sip:e@192.0.2.5>\n");
    assert_int_equal(fx_status(f), 200);
    reg(f, T0, "carol", "c3", 1, "Contact: <sip:f@192.0.2.6>\n");
    assert_int_equal(fx_status(f), 503);
    assert_int_equal(registrar_n_bindings(f->r), 4);
    /* The old binding still answers. */
    reg(f, T0, "bob", "c4", 1, "");
    assert_int_equal(fx_status(f), 200);
    assert_true(has_text(f, 0, "<sip:e@192.0.2.5>"));
    /* Once bob's binding has expired its slot is reused. */
    reg(f, T0 + 601000, "carol", "c3", 2, "Contact: <sip:f@192.0.2.6>\n");
    assert_int_equal(fx_status(f), 200);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.table_full, 2);
}

static void test_registrar_unsupported_extension_gets_420(void **state)
{
    struct fx *f = *state;
    fx_send_from(f, &f->edge_ss, f->edge_len, T0,
                 "REGISTER sip:example.com SIP/2.0\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1\n"
                 "From: <sip:alice@example.com>;tag=1\n"
                 "To: <sip:alice@example.com>\n"
                 "Call-ID: p1\nCSeq: 1 REGISTER\nMax-Forwards: 70\n"
                 "Path: <sip:tok@127.0.0.1:5070;lr>\n"
                 "Contact: <sip:a@192.0.2.1>\nContent-Length: 0\n\n");
    assert_int_equal(fx_status(f), 420);
    assert_true(has_text(f, 0, "Unsupported: path\r\n"));
    reg(f, T0, "alice", "c1", 1, "Require: path, foo\nContact: <sip:a@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 420);
    assert_true(has_text(f, 0, "Unsupported: foo\r\n"));
    reg(f, T0, "alice", "c1", 2, "Require: path, outbound\nContact: <sip:a@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 200);
}

static void test_registrar_tick_expires_bindings(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:a@192.0.2.1>;expires=60\n");
    assert_int_equal(fx_status(f), 200);
    registrar_tick(f->r, T0 + 59000);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    registrar_tick(f->r, T0 + 60000);
    assert_int_equal(registrar_n_bindings(f->r), 0);
}

/* ---- routing ---------------------------------------------------------------------- */

#define INVITE_FMT                                                                                 \
    "%s sip:%s@example.com SIP/2.0\n"                                                              \
    "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1\n"                                       \
    "%s"                                                                                           \
    "From: <sip:bob@example.com>;tag=b1\n"                                                         \
    "To: <sip:%s@example.com>\n"                                                                   \
    "Call-ID: inv1\n"                                                                              \
    "CSeq: 1 %s\n"                                                                                 \
    "Contact: <sip:bob@10.0.0.9:5060>\n"                                                           \
    "Content-Type: application/sdp\n"                                                              \
    "Content-Length: 5\n\n"                                                                        \
    "v=0\n"

static size_t invite(struct fx *f, uint64_t now, const char *method, const char *user,
                     const char *mf_line)
{
    return fx_send_from(f, &f->other_ss, f->other_len, now, INVITE_FMT, method, user, mf_line, user,
                        method);
}

static void register_two(struct fx *f)
{
    reg(f, T0, "alice", "c1", 1,
        "Contact: <sip:alice@192.0.2.1:5062;transport=udp>;q=0.9, <sip:alice@192.0.2.2>;q=0.2\n");
    assert_int_equal(fx_status(f), 200);
}

static void test_registrar_invite_routed_through_path(void **state)
{
    struct fx *f = *state;
    register_two(f);
    assert_int_equal(invite(f, T0 + 10, "INVITE", "alice", "Max-Forwards: 10\n"), 1);
    const struct sip_msg *m = fx_out(f, 0);
    assert_true(m->is_request);
    assert_true(slice_eq(m->ruri, SLICE_LIT("sip:alice@192.0.2.1:5062;transport=udp")));
    const struct sip_hdr *route = sip_msg_hdr(m, SIP_HDR_ROUTE);
    assert_non_null(route);
    assert_true(slice_eq(route->value, SLICE_LIT("<sip:tok1@127.0.0.1:5070;lr>")));
    struct sip_via via;
    struct slice rest;
    assert_int_equal(sip_via_parse(sip_msg_hdr(m, SIP_HDR_VIA)->value, &via, &rest), 0);
    assert_true(slice_eq(via.host, SLICE_LIT("127.0.0.1")));
    assert_int_equal(via.port, 5080);
    assert_true(slice_case_prefix(via.branch, "z9hG4bK"));
    assert_int_equal(hdr_count(m, SIP_HDR_VIA), 2);
    /* The caller's Via records the real source (RFC 3261 §18.2.1). */
    assert_true(has_text(f, 0,
                         "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1;"
                         "received=127.0.0.1\r\n"));
    assert_true(slice_eq(sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)->value, SLICE_LIT("9")));
    assert_true(slice_eq(m->body, SLICE_LIT("v=0\r\n")));
    /* Sent to the Path address (the edge). */
    assert_int_equal(sent_port(&f->sent[0]), 5070);
    char branch[64];
    slice_copy_cstr(branch, sizeof(branch), via.branch);

    /* A retransmission and the CANCEL get the same branch (RFC 3261 §16.11). */
    invite(f, T0 + 500, "CANCEL", "alice", "Max-Forwards: 10\n");
    m = fx_out(f, 0);
    assert_int_equal(sip_via_parse(sip_msg_hdr(m, SIP_HDR_VIA)->value, &via, &rest), 0);
    assert_true(slice_eq(via.branch, slice_make(branch, strlen(branch))));
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.routed, 2);
}

static void test_registrar_invite_without_path_goes_to_contact(void **state)
{
    struct fx *f = *state;
    fx_send_from(f, &f->edge_ss, f->edge_len, T0,
                 "REGISTER sip:example.com SIP/2.0\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnp\n"
                 "From: <sip:dave@example.com>;tag=1\nTo: <sip:dave@example.com>\n"
                 "Call-ID: np\nCSeq: 1 REGISTER\nMax-Forwards: 70\n"
                 "Contact: <sip:dave@192.0.2.77:5099>\nContent-Length: 0\n\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(invite(f, T0, "MESSAGE", "dave", ""), 1);
    const struct sip_msg *m = fx_out(f, 0);
    assert_null(sip_msg_hdr(m, SIP_HDR_ROUTE));
    assert_true(slice_eq(sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)->value, SLICE_LIT("70")));
    assert_int_equal(sent_port(&f->sent[0]), 5099);
}

static void test_registrar_invite_prefers_most_recent_on_equal_q(void **state)
{
    struct fx *f = *state;
    reg(f, T0, "alice", "c1", 1, "Contact: <sip:old@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 200);
    reg(f, T0 + 5000, "alice", "c2", 1, "Contact: <sip:new@192.0.2.2>\n");
    assert_int_equal(fx_status(f), 200);
    invite(f, T0 + 6000, "INVITE", "alice", "");
    assert_true(slice_eq(fx_out(f, 0)->ruri, SLICE_LIT("sip:new@192.0.2.2")));
    /* Refreshing the old one makes it the most recent. */
    reg(f, T0 + 7000, "alice", "c1", 2, "Contact: <sip:old@192.0.2.1>\n");
    assert_int_equal(fx_status(f), 200);
    invite(f, T0 + 8000, "INVITE", "alice", "");
    assert_true(slice_eq(fx_out(f, 0)->ruri, SLICE_LIT("sip:old@192.0.2.1")));
}

static void test_registrar_invite_unknown_404_unregistered_480(void **state)
{
    struct fx *f = *state;
    invite(f, T0, "INVITE", "nobody", "");
    assert_int_equal(fx_status(f), 404);
    /* bob is a known user without bindings. */
    invite(f, T0, "INVITE", "bob", "");
    assert_int_equal(fx_status(f), 480);
    /* The ACK for our own final response is absorbed. */
    assert_int_equal(invite(f, T0, "ACK", "nobody", ""), 0);
    /* Max-Forwards 0 towards a binding: 483. */
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "alicepw", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     200);
    invite(f, T0, "INVITE", "alice", "Max-Forwards: 0\n");
    assert_int_equal(fx_status(f), 483);
}

/* Finds the 407's Proxy-Authenticate for alg and copies its nonce. */
static bool proxy_challenge_nonce(struct fx *f, const char *alg, char *nonce, size_t cap)
{
    const struct sip_msg *m = fx_out(f, 0);
    for (const struct sip_hdr *h = sip_msg_hdr(m, SIP_HDR_PROXY_AUTHENTICATE); h;
         h = sip_msg_hdr_next(m, h)) {
        struct slice a, n;
        if (!sip_auth_param(h->value, "algorithm", &a) || !slice_case_eq_str(a, alg))
            continue;
        assert_true(sip_auth_param(h->value, "nonce", &n));
        slice_copy_cstr(nonce, cap, n);
        return true;
    }
    return false;
}

/* RFC 3261 §22.3: a request from a local user (the From is in the users file) is routed
 * only with that user's Proxy-Authorization; ACK and CANCEL are never challenged
 * (§22.1), and a caller from outside reaches a registered user without credentials. */
static void test_registrar_request_from_local_user_needs_proxy_auth(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_auth(f, T0, "MD5", "alice", "alice", "alicepw", 1,
                              "Contact: <sip:alice@192.0.2.10:5060>\n"),
                     200);
    /* From bob (a local user), no credentials: 407, not routed. */
    invite(f, T0, "INVITE", "alice", "");
    assert_int_equal(fx_status(f), 407);
    char nonce[128], line[1024];
    assert_true(proxy_challenge_nonce(f, "MD5", nonce, sizeof(nonce)));
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.proxy_challenges, 1);
    assert_int_equal(st.routed, 0);
    /* ACK and CANCEL are not challenged. */
    assert_int_equal(invite(f, T0, "CANCEL", "alice", ""), 1);
    assert_true(fx_out(f, 0)->is_request);
    /* Someone else's credentials: 403. */
    auth_line_any(line, sizeof(line), "Proxy-Authorization", "INVITE", "sip:alice@example.com",
                  "MD5", "alice", "alicepw", nonce, 1);
    invite(f, T0, "INVITE", "alice", line);
    assert_int_equal(fx_status(f), 403);
    /* bob's own: routed. */
    auth_line_any(line, sizeof(line), "Proxy-Authorization", "INVITE", "sip:alice@example.com",
                  "MD5", "bob", "bobpw", nonce, 1);
    assert_int_equal(invite(f, T0, "INVITE", "alice", line), 1);
    assert_true(fx_out(f, 0)->is_request);
    assert_true(slice_eq(fx_out(f, 0)->ruri, SLICE_LIT("sip:alice@192.0.2.10:5060")));
    /* Credentials for another Request-URI are refused. */
    auth_line_any(line, sizeof(line), "Proxy-Authorization", "INVITE", "sip:carol@example.com",
                  "MD5", "bob", "bobpw", nonce, 2);
    invite(f, T0, "INVITE", "alice", line);
    assert_int_equal(fx_status(f), 407);
    /* A caller from outside reaches alice without credentials. */
    assert_int_equal(fx_send_from(f, &f->other_ss, f->other_len, T0,
                                  "MESSAGE sip:alice@example.com SIP/2.0\n"
                                  "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKout1\n"
                                  "Max-Forwards: 70\n"
                                  "From: <sip:carol@example.net>;tag=c1\n"
                                  "To: <sip:alice@example.com>\n"
                                  "Call-ID: out1\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"),
                     1);
    assert_true(fx_out(f, 0)->is_request);
}

static void test_registrar_options_to_self_answered(void **state)
{
    struct fx *f = *state;
    fx_send_from(f, &f->other_ss, f->other_len, T0,
                 "OPTIONS sip:127.0.0.1:5080 SIP/2.0\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKping\n"
                 "From: <sip:ping@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1:5080>\n"
                 "Call-ID: ping1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n");
    assert_int_equal(fx_status(f), 200);
    assert_int_equal(sent_port(&f->sent[0]), 5071);
}

#define RESP_FMT                                                                                   \
    "SIP/2.0 %s\n"                                                                                 \
    "Via: %s\n"                                                                                    \
    "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1;received=10.0.0.99;rport=6000\n"         \
    "From: <sip:bob@example.com>;tag=b1\n"                                                         \
    "To: <sip:alice@example.com>;tag=a9\n"                                                         \
    "Call-ID: inv1\n"                                                                              \
    "CSeq: 1 INVITE\n"                                                                             \
    "Content-Length: 0\n\n"

/* Routes an INVITE and returns (in via) the Via value the registrar put on top. */
static void routed_via(struct fx *f, char *via, size_t cap)
{
    register_two(f);
    invite(f, T0 + 10, "INVITE", "alice", "");
    const struct sip_msg *m = fx_out(f, 0);
    slice_copy_cstr(via, cap, sip_msg_hdr(m, SIP_HDR_VIA)->value);
}

static void test_registrar_response_routed_back_popping_our_via(void **state)
{
    struct fx *f = *state;
    char via[256];
    routed_via(f, via, sizeof(via));
    assert_int_equal(fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "180 Ringing", via),
                     1);
    const struct sip_msg *m = fx_out(f, 0);
    assert_int_equal(m->status, 180);
    assert_int_equal(hdr_count(m, SIP_HDR_VIA), 1);
    assert_true(has_text(f, 0, "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1"));
    /* received + rport of the next Via win over its sent-by. */
    char ip[32];
    inet_ntop(AF_INET, &((struct sockaddr_in *)&f->sent[0].dst)->sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "10.0.0.99");
    assert_int_equal(sent_port(&f->sent[0]), 6000);
    /* 100 Trying is not forwarded; a response with someone else's Via is dropped. */
    assert_int_equal(fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "100 Trying", via), 0);
    assert_int_equal(fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "200 OK",
                                  "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx"),
                     0);
    assert_int_equal(registrar_n_bindings(f->r), 2);
}

static void test_registrar_430_removes_the_binding(void **state)
{
    struct fx *f = *state;
    char via[256];
    routed_via(f, via, sizeof(via));
    assert_non_null(strstr(via, ";sb="));
    /* Only the hop the request went to (the Path address) may fail the flow. */
    fx_send_from(f, &f->other_ss, f->other_len, T0, RESP_FMT, "430 Flow Failed", via);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    assert_int_equal(
        fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "430 Flow Failed", via), 1);
    assert_int_equal(fx_out(f, 0)->status, 430);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    /* The next INVITE goes to the remaining contact. */
    invite(f, T0 + 20, "INVITE", "alice", "");
    assert_true(slice_eq(fx_out(f, 0)->ruri, SLICE_LIT("sip:alice@192.0.2.2")));
    /* A repeated 430 for the same (gone) binding removes nothing else. */
    fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "430 Flow Failed", via);
    assert_int_equal(registrar_n_bindings(f->r), 1);
}

/* Slot and generation are small integers: a 430 that names them without the MAC the
 * registrar wrote (or with another request's branch) must not remove the binding. */
static void test_registrar_forged_430_keeps_the_binding(void **state)
{
    struct fx *f = *state;
    char via[256], forged[256];
    routed_via(f, via, sizeof(via));
    const char *sb = strstr(via, ";sb=");
    assert_non_null(sb);
    unsigned slot = 0, gen = 0;
    assert_int_equal(sscanf(sb, ";sb=%u.%u", &slot, &gen), 2);
    /* The right slot and generation, a guessed branch and no MAC. */
    snprintf(forged, sizeof(forged),
             "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK0123456789abcdef;"
             "sb=%u.%u",
             slot, gen);
    fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "430 Flow Failed", forged);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    /* The genuine sb (MAC included) moved to another branch. */
    const char *br = strstr(via, "branch=");
    assert_non_null(br);
    snprintf(forged, sizeof(forged), "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK0123456789abcdef%s",
             sb);
    fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "430 Flow Failed", forged);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.forged_430, 2);
    assert_int_equal(st.flow_failed, 0);
    /* The genuine one still works. */
    fx_send_from(f, &f->edge_ss, f->edge_len, T0, RESP_FMT, "430 Flow Failed", via);
    assert_int_equal(registrar_n_bindings(f->r), 1);
}

static void test_registrar_loose_routes_in_dialog_request(void **state)
{
    struct fx *f = *state;
    fx_send_from(f, &f->other_ss, f->other_len, T0,
                 "BYE sip:carol@198.51.100.7:5070 SIP/2.0\n"
                 "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKbye1\n"
                 "Route: <sip:127.0.0.1:5080;lr>\n"
                 "Max-Forwards: 5\n"
                 "From: <sip:bob@example.com>;tag=b1\nTo: <sip:carol@example.com>;tag=c1\n"
                 "Call-ID: d1\nCSeq: 2 BYE\nContent-Length: 0\n\n");
    assert_int_equal(f->n_sent, 1);
    const struct sip_msg *m = fx_out(f, 0);
    assert_true(m->is_request);
    assert_null(sip_msg_hdr(m, SIP_HDR_ROUTE));
    assert_int_equal(sent_port(&f->sent[0]), 5070);
    assert_true(slice_eq(sip_msg_hdr(m, SIP_HDR_MAX_FORWARDS)->value, SLICE_LIT("4")));
}

/* No open relay: a Route or an in-dialog Request-URI naming an address that is neither
 * ours nor a configured peer is refused, never sent to. */
static void test_registrar_route_to_unknown_address_refused(void **state)
{
    struct fx *f = *state;
    static const char *const routes[] = {
        "Route: <sip:10.1.2.3:5060;lr>\n", "Route: <sip:127.0.0.1:5080;lr>, <sip:10.1.2.3;lr>\n",
        "Route: <sip:127.0.0.1:5080;lr>\nRoute: <sip:198.51.100.7:5071;lr>\n",
        "Route: <sip:127.0.0.1:5080;lr>\n", /* then the R-URI host */
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        fx_send_from(f, &f->other_ss, f->other_len, T0,
                     "BYE sip:carol@10.1.2.3:5060 SIP/2.0\n"
                     "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKssrf%zu\n"
                     "%s"
                     "Max-Forwards: 5\n"
                     "From: <sip:mallory@example.net>;tag=m1\nTo: <sip:carol@example.com>;tag=c1\n"
                     "Call-ID: ssrf%zu\nCSeq: 2 BYE\nContent-Length: 0\n\n",
                     i, routes[i], i);
        assert_int_equal(fx_status(f), 403);
        assert_int_equal(sent_port(&f->sent[0]), 5071);
    }
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.route_refused, 4);
    assert_int_equal(st.routed, 0);
    /* The configured peer, named by a Route, is reached. */
    fx_send_from(f, &f->other_ss, f->other_len, T0,
                 "BYE sip:carol@10.1.2.3:5060 SIP/2.0\n"
                 "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKpeer\n"
                 "Route: <sip:198.51.100.7:5070;lr>\n"
                 "Max-Forwards: 5\n"
                 "From: <sip:mallory@example.net>;tag=m1\nTo: <sip:carol@example.com>;tag=c1\n"
                 "Call-ID: peer1\nCSeq: 2 BYE\nContent-Length: 0\n\n");
    assert_int_equal(f->n_sent, 1);
    assert_true(fx_out(f, 0)->is_request);
    assert_int_equal(sent_port(&f->sent[0]), 5070);
}

/* A Path is the route to a binding: only the edge (a trusted peer) may set it, or a
 * client sending straight to the registrar would choose where its calls go. */
static void test_registrar_path_from_untrusted_source_ignored(void **state)
{
    struct fx *f = *state;
    fx_send_from(f, &f->other_ss, f->other_len, T0, REG_FMT, 1u, 1u, "alice", 1u, "alice", "up1",
                 1u, "Contact: <sip:alice@192.0.2.1:5062>\n");
    assert_int_equal(fx_status(f), 200);
    assert_false(has_text(f, 0, "Path:"));
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.path_ignored, 1);
    /* Routed to the contact, not to the Path the client named. */
    assert_int_equal(invite(f, T0 + 10, "INVITE", "alice", ""), 1);
    assert_null(sip_msg_hdr(fx_out(f, 0), SIP_HDR_ROUTE));
    assert_int_equal(sent_port(&f->sent[0]), 5062);
    /* From the edge the Path is kept. */
    reg(f, T0 + 20, "alice", "up1", 2, "Contact: <sip:alice@192.0.2.1:5062>\n");
    assert_int_equal(fx_status(f), 200);
    assert_true(has_text(f, 0, "Path: <sip:tok1@127.0.0.1:5070;lr>"));
    invite(f, T0 + 30, "INVITE", "alice", "");
    assert_int_equal(sent_port(&f->sent[0]), 5070);
}

static void test_registrar_bad_input_counted(void **state)
{
    struct fx *f = *state;
    const char junk[] = "hello world\r\n\r\n";
    f->n_sent = 0;
    registrar_handle(f->r, junk, sizeof(junk) - 1, (const struct sockaddr *)&f->other_ss,
                     f->other_len, T0);
    assert_int_equal(f->n_sent, 0);
    struct registrar_stats st;
    registrar_stats(f->r, &st);
    assert_int_equal(st.dropped_bad, 1);
    /* Parseable but invalid (From without a tag): answered 400 and counted. */
    fx_send_from(f, &f->other_ss, f->other_len, T0,
                 "REGISTER sip:example.com SIP/2.0\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKbad\n"
                 "From: <sip:alice@example.com>\nTo: <sip:alice@example.com>\n"
                 "Call-ID: bad1\nCSeq: 1 REGISTER\nMax-Forwards: 70\n"
                 "Contact: <sip:a@192.0.2.1>\nContent-Length: 0\n\n");
    assert_int_equal(fx_status(f), 400);
    registrar_stats(f->r, &st);
    assert_int_equal(st.dropped_bad, 2);
    assert_int_equal(registrar_n_bindings(f->r), 0);
}

static void test_registrar_bad_users_file_reports_line(void **state)
{
    (void)state;
    char path[] = "/tmp/test_registrar_usersXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs("# users\nalice:pw\n\nbroken-line\n", fp);
    fclose(fp);
    struct config_addr self;
    addr_set(&self, "127.0.0.1", 5080);
    struct policy pol = {.min_expires_s = 60,
                         .max_expires_s = 3600,
                         .default_expires_s = 600,
                         .max_bindings = 4,
                         .max_contacts_per_aor = 2,
                         .max_headers = 32};
    struct registrar_opts opts = {
        .self = &self, .users_file = path, .realm = REALM, .policy = &pol};
    struct registrar *r = NULL;
    char err[256] = "";
    assert_int_equal(registrar_new_tx(&r, &opts, NULL, err, sizeof(err)), -EINVAL);
    assert_null(r);
    char want[300];
    snprintf(want, sizeof(want), "%s:4: ", path);
    assert_non_null(strstr(err, want));
    unlink(path);
}

/* ---- failing allocator -------------------------------------------------------------- */

/*
 * The test executable interposes malloc and friends (glibc only, and not under ASan or
 * TSan, whose runtimes own the allocator): once armed, the n-th allocation and every later one fail,
 * and allocations made and freed while armed are counted to catch leaks on error paths.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_HAS_ASAN 1
#endif
#endif
#if defined(__GLIBC__) && !defined(TEST_HAS_ASAN)
#define TEST_FAILMALLOC 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static bool fm_is_armed;
static long fm_fail_at; /* allocation index that fails first */
static long fm_n_allocs;
static long fm_n_live;

static bool fm_fail(void)
{
    return fm_is_armed && fm_n_allocs++ >= fm_fail_at;
}

void *malloc(size_t n)
{
    if (fm_fail())
        return NULL;
    void *p = __libc_malloc(n);
    fm_n_live += fm_is_armed && p;
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (fm_fail())
        return NULL;
    void *p = __libc_calloc(n, size);
    fm_n_live += fm_is_armed && p;
    return p;
}

void *realloc(void *old, size_t n)
{
    if (fm_fail())
        return NULL;
    void *p = __libc_realloc(old, n);
    fm_n_live += fm_is_armed && p && !old;
    return p;
}

void free(void *p)
{
    fm_n_live -= fm_is_armed && p;
    __libc_free(p);
}

static void fm_arm(long fail_at)
{
    fm_fail_at = fail_at;
    fm_n_allocs = 0;
    fm_n_live = 0;
    fm_is_armed = true;
}
#endif

static void test_registrar_new_is_whole_or_fails_cleanly(void **state)
{
    (void)state;
#ifdef TEST_FAILMALLOC
    struct config_addr self, edge;
    addr_set(&self, "127.0.0.1", 5080);
    addr_set(&edge, "127.0.0.1", 5070);
    struct policy pol = {.min_expires_s = 60,
                         .max_expires_s = 3600,
                         .default_expires_s = 600,
                         .max_bindings = 64,
                         .max_contacts_per_aor = 4,
                         .max_headers = 32};
    struct registrar_opts opts = {
        .self = &self, .realm = REALM, .policy = &pol, .trusted = &edge, .n_trusted = 1};
    char err[256];
    long n;
    for (n = 0;; n++) {
        struct registrar *r = NULL;
        fm_arm(n);
        int rc = registrar_new_tx(&r, &opts, NULL, err, sizeof(err));
        if (rc == 0) {
            fm_fail_at = LONG_MAX;
            assert_int_equal(registrar_n_bindings(r), 0);
            registrar_free(r);
            fm_is_armed = false;
            assert_int_equal(fm_n_live, 0);
            break;
        }
        fm_is_armed = false;
        assert_int_equal(rc, -ENOMEM);
        assert_null(r);
        assert_int_equal(fm_n_live, 0);
    }
    assert_true(n > 3);

    /* The users table: built whole or not at all (OpenSSL may keep caches, so no
     * leak count here). */
    const char users[] = "alice:a\nbob:b\ncarol:c\n";
    for (n = 0;; n++) {
        struct digest *d = NULL;
        fm_arm(n);
        int rc = digest_new_string(&d, "users", users, sizeof(users) - 1, REALM, err, sizeof(err));
        fm_is_armed = false;
        if (rc == 0) {
            assert_int_equal(digest_n_users(d), 3);
            digest_free(d);
            break;
        }
        assert_true(rc < 0);
        assert_null(d);
    }
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registrar_default_policy_challenges_with_md5_only,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(
            test_registrar_first_register_challenged_with_both_algorithms, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_md5_register_ok_echoes_contact_and_path,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_sha256_register_ok, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_wrong_password_rechallenged, setup_auth,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_replayed_credentials_rechallenged,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_full_nonce_table_answers_503,
                                        setup_auth_small_nc, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_digest_uri_must_be_request_uri, setup_auth,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_md5_refused_when_only_sha256_offered,
                                        setup_auth_sha256_only, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_expired_nonce_answers_stale, setup_auth,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_unknown_user_or_other_aor_forbidden,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_instance_binding_removed_by_bare_uri,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_trusted_pai_dereg_accepted, setup_auth,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_short_expires_gets_423, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_expires_capped_at_max, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_multiple_contacts_ordered_by_q, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_star_removes_all, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_stale_cseq_keeps_binding, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_full_table_503_keeps_old_bindings,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_unsupported_extension_gets_420, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_tick_expires_bindings, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_invite_routed_through_path, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_invite_without_path_goes_to_contact,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_invite_prefers_most_recent_on_equal_q,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_invite_unknown_404_unregistered_480,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_request_from_local_user_needs_proxy_auth,
                                        setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_options_to_self_answered, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_response_routed_back_popping_our_via,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_430_removes_the_binding, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_forged_430_keeps_the_binding, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_loose_routes_in_dialog_request, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_route_to_unknown_address_refused, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registrar_path_from_untrusted_source_ignored,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_registrar_bad_input_counted, setup_open, teardown),
        cmocka_unit_test(test_registrar_bad_users_file_reports_line),
        cmocka_unit_test(test_registrar_new_is_whole_or_fails_cleanly),
    };
    log_set_level(LOG_LEVEL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
