/*
 * Fuzz target: parse -> view -> edit -> reparse, for the stateless-proxy kit.
 *
 * A request that passes sip_check_view is copied with every edit of a relay (client Via
 * with received/rport, top Route popped or filtered, Max-Forwards decremented, identity
 * and Path dropped, expires floored and capped, Contact URIs replaced); a response gets
 * its top Via popped. The copy must parse again and pass the check, and say what the
 * edits promise: the new Max-Forwards, received= on the client Via, the same Contacts
 * count, no Path or P-Asserted-Identity, the same body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_edit.h"
#include "sipedge/sip_msg.h"

#define FUZZ_MAX_HDRS 64
#define FUZZ_MAX_BYTES 65535

static char out[FUZZ_MAX_BYTES * 2];

static bool keep_every_other(void *ctx, struct slice uri)
{
    unsigned *n = ctx;
    (void)uri;
    return (*n)++ % 2 == 0;
}

static bool replace_contact(void *ctx, struct sip_build *b, const struct sip_nameaddr *c)
{
    (void)ctx;
    if (c->uri.len % 2)
        return false; /* copied as it is */
    sip_build_str(b, "sip:edited@192.0.2.9:5080");
    return true;
}

static void check_request(const struct sip_msg *m, const struct sip_view *v,
                          const struct sockaddr *src)
{
    unsigned n_routes = 0;
    uint64_t n_stripped = 0, n_path = 0;
    struct sip_edit plan = {
        .top_via = v->via_hdr,
        .via = {.via = &v->via, .src = src, .is_received_always = true, .keep_s = 25},
        .set_max_forwards = true,
        .max_forwards = v->max_forwards ? v->max_forwards - 1 : 0,
        .strip_identity = true,
        .strip_path = true,
        .expires_floor = 60,
        .expires_cap = 3600,
        .route_ok = keep_every_other,
        .route_ctx = &n_routes,
        .contact_uri = replace_contact,
        .n_route_stripped = &n_stripped,
        .n_path_stripped = &n_path,
    };
    if (v->route_hdr && v->route.uri.len % 3 == 0) {
        plan.pop_route = v->route_hdr;
        plan.pop_route_rest = v->route_rest;
    }
    struct sip_build b;
    sip_build_init(&b, out, sizeof(out));
    sip_build_mem(&b, m->buf, m->start_line_len);
    if (!v->has_max_forwards)
        sip_build_str(&b, "Max-Forwards: 69\r\n");
    sip_edit_copy(&b, m, &plan);
    size_t len;
    if (sip_build_finish(&b, &len) != 0)
        return; /* larger than the buffer: a relay answers 513 */

    struct sip_limits lim = {.max_msg_bytes = sizeof(out), .max_headers = FUZZ_MAX_HDRS * 2};
    struct sip_hdr hdrs[FUZZ_MAX_HDRS * 2];
    struct sip_msg r;
    struct sip_err err;
    static struct sip_view rv;
    if (sip_msg_parse(&r, out, len, hdrs, &lim, &err) != 0 || sip_check_view(&r, &err, &rv) != 0)
        abort();
    if (!r.is_request || r.method_id != m->method_id || !slice_eq(r.method, m->method))
        abort();
    if (rv.max_forwards != (v->has_max_forwards ? plan.max_forwards : 69))
        abort();
    struct slice got;
    if (!sip_params_get(rv.via.params, "received", &got) || !slice_eq(got, SLICE_LIT("192.0.2.1")))
        abort();
    if (v->via.has_rport &&
        (!sip_params_get(rv.via.params, "rport", &got) || !slice_eq(got, SLICE_LIT("40000"))))
        abort();
    if (rv.n_contacts != v->n_contacts || rv.is_star != v->is_star)
        abort();
    if (r.count[SIP_HDR_PATH] || r.count[SIP_HDR_P_ASSERTED_IDENTITY] ||
        r.count[SIP_HDR_P_PREFERRED_IDENTITY])
        abort();
    if (r.content_length != m->content_length || r.len - r.hdr_end != m->len - m->hdr_end ||
        memcmp(r.buf + r.hdr_end, m->buf + m->hdr_end, m->len - m->hdr_end) != 0)
        abort();
    for (unsigned i = 0; i < sip_view_n_contacts(&rv); i++) {
        struct slice x;
        uint32_t e;
        if (sip_params_get(rv.contacts[i].na.params, "expires", &x) && x.len &&
            sip_expires_parse(x, &e) == 0 && e != 0 && (e < 60 || e > 3600))
            abort();
    }
}

static void check_response(const struct sip_msg *m, const struct sip_view *v)
{
    struct sip_via next;
    struct sip_edit plan = {0};
    if (sip_edit_pop_via(m, v, &next, &plan) != 0)
        return;
    struct sockaddr_storage dst;
    (void)sip_via_response_addr(&next, &dst);
    struct sip_build b;
    sip_build_init(&b, out, sizeof(out));
    sip_build_mem(&b, m->buf, m->start_line_len);
    sip_edit_copy(&b, m, &plan);
    size_t len;
    if (sip_build_finish(&b, &len) != 0)
        abort(); /* a copy with one element less always fits */
    struct sip_limits lim = {.max_msg_bytes = sizeof(out), .max_headers = FUZZ_MAX_HDRS};
    struct sip_hdr hdrs[FUZZ_MAX_HDRS];
    struct sip_msg r;
    struct sip_err err;
    static struct sip_view rv;
    if (sip_msg_parse(&r, out, len, hdrs, &lim, &err) != 0) {
        /* Only the Via was removed: it may have been the only one. */
        if (m->count[SIP_HDR_VIA] == 1 && slice_trim(v->via_rest).len == 0)
            return;
        abort();
    }
    if (r.is_request || r.status != m->status || sip_view_fill(&r, &rv) != 0)
        abort();
    /* The top Via of the copy is the one the response went on to. */
    if (!slice_eq(rv.via.host, next.host) || rv.via.port != next.port ||
        !slice_eq(rv.via.branch, next.branch))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sip_limits lim = {.max_msg_bytes = FUZZ_MAX_BYTES, .max_headers = FUZZ_MAX_HDRS};
    struct sip_hdr hdrs[FUZZ_MAX_HDRS];
    struct sip_msg m;
    struct sip_err err = {0};
    static struct sip_view v;
    if (sip_msg_parse(&m, (const char *)data, size, hdrs, &lim, &err) != 0)
        return 0;
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "192.0.2.1", &src.sin_addr);
    if (m.is_request) {
        if (sip_check_view(&m, &err, &v) == 0)
            check_request(&m, &v, (const struct sockaddr *)&src);
        char branch[17];
        if (sip_view_fill(&m, &v) == 0)
            sip_edit_branch(&m, &v, (const struct sockaddr *)&src, 1, 2, branch);
    } else if (sip_view_fill(&m, &v) == 0) {
        check_response(&m, &v);
    }
    return 0;
}
