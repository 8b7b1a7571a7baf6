/*
 * Fuzz target: sip_msg_parse -> sip_check_msg -> sip_reply_build, plus the
 * parse -> build -> reparse round trip: the message copied through sip_build with one
 * inserted header must reparse with the same method/status and one more header.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_msg.h"
#include "sipedge/sip_reply.h"

#define FUZZ_MAX_HDRS 64
#define FUZZ_MAX_BYTES 65535

static char out[FUZZ_MAX_BYTES + 4096];

static void roundtrip(const struct sip_msg *m)
{
    static const char extra[] = "X-Fuzz-Inserted: 1\r\n";
    struct sip_limits lim = {.max_msg_bytes = sizeof(out), .max_headers = FUZZ_MAX_HDRS + 1};
    struct sip_hdr hdrs[FUZZ_MAX_HDRS + 1];
    struct sip_build b;
    struct sip_msg r;
    struct sip_err err;
    size_t len;

    sip_build_init(&b, out, sizeof(out));
    sip_build_mem(&b, m->buf, m->start_line_len);
    sip_build_str(&b, extra);
    sip_build_mem(&b, m->buf + m->start_line_len, m->len - m->start_line_len);
    if (sip_build_finish(&b, &len) != 0)
        abort();
    if (sip_msg_parse(&r, out, len, hdrs, &lim, &err) != 0)
        abort();
    if (r.is_request != m->is_request || r.n_hdrs != m->n_hdrs + 1 || r.len != len)
        abort();
    if (r.is_request ? !slice_eq(r.method, m->method) || r.method_id != m->method_id
                     : r.status != m->status)
        abort();
    if (r.hdrs[0].id != SIP_HDR_OTHER || r.content_length != m->content_length)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sip_limits lim = {.max_msg_bytes = FUZZ_MAX_BYTES, .max_headers = FUZZ_MAX_HDRS};
    struct sip_hdr hdrs[FUZZ_MAX_HDRS];
    struct sip_msg m;
    struct sip_err err = {0};
    struct sip_reply_opts opts = {.received = "192.0.2.1", .rport = 5060};
    int rc;

    rc = sip_msg_parse(&m, (const char *)data, size, hdrs, &lim, &err);
    if (rc != 0) {
        /* The caller answers 400 from a partial index when it can. */
        if (err.status != 0 && m.is_request) {
            int n = sip_reply_build(&m, err.status, err.reason, &opts, out, sizeof(out));
            if (n == 0 || n > (int)sizeof(out))
                abort();
        }
        return 0;
    }
    if (m.len > size || m.hdr_end > m.len || m.n_hdrs > FUZZ_MAX_HDRS)
        abort();
    rc = sip_check_msg(&m, &err);
    if (m.is_request) {
        int n = sip_reply_build(&m, rc == 0 ? 200 : err.status, rc == 0 ? "OK" : err.reason,
                                &opts, out, sizeof(out));
        if (n > 0) {
            struct sip_hdr rh[FUZZ_MAX_HDRS + 8];
            struct sip_limits rl = {.max_msg_bytes = sizeof(out), .max_headers = FUZZ_MAX_HDRS + 8};
            struct sip_msg r;

            /* A reply built from a checked request must itself parse. */
            if (rc == 0 && sip_msg_parse(&r, out, (size_t)n, rh, &rl, &err) != 0)
                abort();
        }
    }
    roundtrip(&m);
    return 0;
}
