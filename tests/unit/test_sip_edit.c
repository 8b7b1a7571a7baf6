/* sip_edit: the view, the edit plan, the client Via, branches and the next hop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sipedge/sip_check.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_msg.h"

#define MAX_HDRS 64

struct parsed {
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_view v;
};

static void parse(struct parsed *p, const char *text)
{
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = MAX_HDRS};
    struct sip_err err;
    assert_int_equal(sip_msg_parse(&p->m, text, strlen(text), p->hdrs, &lim, &err), 0);
    if (p->m.is_request)
        assert_int_equal(sip_check_view(&p->m, &err, &p->v), 0);
    else
        assert_int_equal(sip_view_fill(&p->m, &p->v), 0);
}

static struct sockaddr_in src4(const char *ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

/* Copies p's message through plan after the start line into out; returns its length. */
static size_t copy(const struct parsed *p, const struct sip_edit *plan, char *out, size_t cap)
{
    struct sip_build b;
    size_t len;
    sip_build_init(&b, out, cap);
    sip_build_mem(&b, p->m.buf, p->m.start_line_len);
    sip_edit_copy(&b, &p->m, plan);
    assert_int_equal(sip_build_finish(&b, &len), 0);
    out[len] = '\0';
    return len;
}

static const char REGISTER[] =
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport;received=6.6.6.6;keep\r\n"
    "Max-Forwards: 70\r\n"
    "Route: <sip:198.51.100.1;lr>, <sip:192.0.2.7;lr>\r\n"
    "From: <sip:alice@example.com>;tag=1\r\n"
    "To: <sip:alice@example.com>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 7 REGISTER\r\n"
    "Contact: <sip:alice@10.0.0.5:5060>;expires=30, <sip:alice@10.0.0.6>;expires=0\r\n"
    "Expires: 7200\r\n"
    "Path: <sip:evil@203.0.113.9;lr>\r\n"
    "P-Asserted-Identity: <sip:admin@example.com>\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "body";

static void test_view_keeps_what_the_check_parsed(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, REGISTER);
    assert_true(slice_eq(p.v.via.host, SLICE_LIT("10.0.0.5")));
    assert_true(slice_eq(p.v.via.branch, SLICE_LIT("z9hG4bKabc")));
    assert_true(slice_eq(p.v.to.uri, SLICE_LIT("sip:alice@example.com")));
    assert_true(slice_eq(p.v.call_id, SLICE_LIT("c1")));
    assert_int_equal(p.v.cseq, 7);
    assert_true(slice_eq(p.v.cseq_method, SLICE_LIT("REGISTER")));
    assert_true(p.v.has_max_forwards);
    assert_int_equal(p.v.max_forwards, 70);
    assert_true(p.v.has_expires);
    assert_int_equal(p.v.expires, 7200);
    assert_non_null(p.v.route_hdr);
    assert_true(slice_eq(p.v.route.uri, SLICE_LIT("sip:198.51.100.1;lr")));
    assert_int_equal(p.v.n_contacts, 2);
    assert_true(slice_eq(p.v.contacts[1].na.uri, SLICE_LIT("sip:alice@10.0.0.6")));
    assert_false(p.v.is_star);
}

static bool only_192(void *ctx, struct slice uri)
{
    (void)ctx;
    return slice_case_prefix(uri, "sip:192.");
}

static bool rename_contact(void *ctx, struct sip_build *b, const struct sip_nameaddr *c)
{
    unsigned *n = ctx;
    if (!slice_eq(c->uri, SLICE_LIT("sip:alice@10.0.0.5:5060")))
        return false;
    (*n)++;
    sip_build_str(b, "sip:renamed@192.0.2.1");
    return true;
}

static void test_copy_applies_every_edit_once(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, REGISTER);
    struct sockaddr_in src = src4("203.0.113.5", 40000);
    unsigned n_renamed = 0;
    uint64_t n_route = 0, n_path = 0;
    struct sip_edit plan = {
        .top_via = p.v.via_hdr,
        .via = {.via = &p.v.via,
                .src = (struct sockaddr *)&src,
                .is_received_always = true,
                .keep_s = 25},
        .set_max_forwards = true,
        .max_forwards = 69,
        .strip_identity = true,
        .strip_path = true,
        .expires_floor = 60,
        .expires_cap = 3600,
        .route_ok = only_192,
        .contact_uri = rename_contact,
        .contact_ctx = &n_renamed,
        .n_route_stripped = &n_route,
        .n_path_stripped = &n_path,
    };
    char out[2048];
    copy(&p, &plan, out, sizeof(out));
    assert_non_null(strstr(out, "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;keep=25;"
                                "received=203.0.113.5;rport=40000\r\n"));
    assert_null(strstr(out, "6.6.6.6"));
    assert_non_null(strstr(out, "Max-Forwards: 69\r\n"));
    assert_non_null(strstr(out, "Route: <sip:192.0.2.7;lr>\r\n"));
    assert_null(strstr(out, "198.51.100.1"));
    assert_int_equal(n_route, 1);
    assert_null(strstr(out, "Path:"));
    assert_int_equal(n_path, 1);
    assert_null(strstr(out, "P-Asserted-Identity"));
    /* expires=30 floored to 60; the removal (0) stays; the header capped. */
    assert_non_null(strstr(out, "Contact: <sip:renamed@192.0.2.1>;expires=60, "
                                "<sip:alice@10.0.0.6>;expires=0\r\n"));
    assert_int_equal(n_renamed, 1);
    assert_non_null(strstr(out, "Expires: 3600\r\n"));
    assert_non_null(strstr(out, "\r\n\r\nbody"));

    /* The copy parses and checks again. */
    struct parsed q;
    parse(&q, out);
    assert_int_equal(q.v.max_forwards, 69);
    assert_int_equal(q.v.n_contacts, 2);
}

static void test_zero_plan_copies_exactly(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, REGISTER);
    struct sip_edit plan = {0};
    char out[2048];
    size_t len = copy(&p, &plan, out, sizeof(out));
    assert_int_equal(len, strlen(REGISTER));
    assert_memory_equal(out, REGISTER, len);
}

static void test_client_via_when_needed(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "OPTIONS sip:x@192.0.2.1 SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKq\r\n"
              "From: <sip:a@b>;tag=1\r\nTo: <sip:x@192.0.2.1>\r\nCall-ID: q\r\n"
              "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    char out[512];
    struct sip_build b;
    size_t len;
    /* sent-by is the source and no rport: nothing to add (RFC 3261 §18.2.1). */
    struct sockaddr_in same = src4("192.0.2.9", 5070);
    struct sip_via_edit o = {.via = &p.v.via, .src = (struct sockaddr *)&same};
    sip_build_init(&b, out, sizeof(out));
    sip_edit_client_via(&b, &o);
    assert_int_equal(sip_build_finish(&b, &len), 0);
    assert_int_equal(len, p.v.via.raw.len);
    assert_memory_equal(out, p.v.via.raw.p, len);
    /* Another source: received is added. */
    struct sockaddr_in other = src4("198.51.100.3", 5070);
    o.src = (struct sockaddr *)&other;
    sip_build_init(&b, out, sizeof(out));
    sip_edit_client_via(&b, &o);
    assert_int_equal(sip_build_finish(&b, &len), 0);
    out[len] = '\0';
    assert_string_equal(out, "SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKq;received=198.51.100.3");
}

static const char INVITE[] = "INVITE sip:bob@example.com SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKinv1\r\n"
                             "Max-Forwards: 70\r\n"
                             "From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
                             "Call-ID: i1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
static const char CANCEL[] = "CANCEL sip:bob@example.com SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKinv1\r\n"
                             "Max-Forwards: 70\r\n"
                             "From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
                             "Call-ID: i1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";

static void test_branch_is_stable_per_transaction_and_keyed(void **state)
{
    (void)state;
    struct parsed a, c, d;
    parse(&a, INVITE);
    parse(&c, CANCEL);
    struct sockaddr_in src = src4("192.0.2.9", 5060);
    char b1[17], b2[17], b3[17], b4[17], b5[17];
    sip_edit_branch(&a.m, &a.v, (struct sockaddr *)&src, 1, 2, b1);
    sip_edit_branch(&a.m, &a.v, (struct sockaddr *)&src, 1, 2, b2);
    assert_string_equal(b1, b2); /* a retransmission */
    sip_edit_branch(&c.m, &c.v, (struct sockaddr *)&src, 1, 2, b3);
    assert_string_equal(b1, b3); /* CANCEL gets its INVITE's branch (RFC 3261 §9.2) */
    sip_edit_branch(&a.m, &a.v, (struct sockaddr *)&src, 1, 3, b4);
    assert_string_not_equal(b1, b4); /* the key matters */
    char other[sizeof(INVITE)];
    memcpy(other, INVITE, sizeof(INVITE));
    memcpy(strstr(other, "inv1"), "inv2", 4);
    parse(&d, other);
    sip_edit_branch(&d.m, &d.v, (struct sockaddr *)&src, 1, 2, b5);
    assert_string_not_equal(b1, b5); /* another transaction */
    struct sockaddr_in src2 = src4("192.0.2.9", 5061);
    sip_edit_branch(&a.m, &a.v, (struct sockaddr *)&src2, 1, 2, b5);
    assert_string_not_equal(b1, b5); /* another source */
}

static void test_pop_via_and_response_addr(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "SIP/2.0 200 OK\r\n"
              "Via: SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bKsO1, "
              "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKc;received=203.0.113.5;rport=40000\r\n"
              "Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKd\r\n"
              "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r\r\n"
              "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
    struct sip_via next;
    struct sip_edit plan = {0};
    assert_int_equal(sip_edit_pop_via(&p.m, &p.v, &next, &plan), 0);
    assert_true(slice_eq(next.branch, SLICE_LIT("z9hG4bKc")));
    struct sockaddr_storage ss;
    assert_int_equal(sip_via_response_addr(&next, &ss), 0);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), 40000);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "203.0.113.5");
    char out[1024];
    copy(&p, &plan, out, sizeof(out));
    assert_non_null(strstr(out, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;"));
    assert_null(strstr(out, "z9hG4bKsO1"));

    /* The second Via line's element, with the default port for sent-by alone. */
    struct parsed q;
    parse(&q, "SIP/2.0 200 OK\r\n"
              "Via: SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bKsO1\r\n"
              "Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKd\r\n"
              "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r\r\n"
              "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(sip_edit_pop_via(&q.m, &q.v, &next, NULL), 0);
    assert_int_equal(sip_via_response_addr(&next, &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 5060);

    /* Only our Via: nowhere to go. */
    struct parsed r;
    parse(&r, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bKsO1\r\n"
              "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r\r\n"
              "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(sip_edit_pop_via(&r.m, &r.v, &next, NULL), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_keeps_what_the_check_parsed),
        cmocka_unit_test(test_copy_applies_every_edit_once),
        cmocka_unit_test(test_zero_plan_copies_exactly),
        cmocka_unit_test(test_client_via_when_needed),
        cmocka_unit_test(test_branch_is_stable_per_transaction_and_keyed),
        cmocka_unit_test(test_pop_via_and_response_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
