/*
 * contact_alias: Contact aliases for registrars without Path support. See edge_internal.h.
 *
 *     sip:AbCd...38 or 54 chars...XyZ.c2lwOmFsaWNlQDE5Mi4wLjIuMTA6NTA2MA@127.0.0.1:5070
 *         |<------- flow token ------->| |<-- base64url(original URI) -->| |<- core ->|
 *
 * Both halves use the base64url alphabet, which has no '.', so the first '.' splits
 * them. The alias is written and read straight in the output buffer: no copy of the
 * URI is kept anywhere else.
 */
#include <errno.h>
#include <string.h>

#include "edge/edge_internal.h"
#include "sipedge/sip_hdr.h"

void contact_alias_build(struct sip_build *b, struct slice token, struct slice uri,
                         const char *core_hostport)
{
    sip_build_str(b, "sip:");
    sip_build_slice(b, token);
    sip_build_str(b, ".");
    size_t n = b64url_encoded_len(uri.len);
    if (b->err == 0 && n > b->cap - b->len)
        b->err = -ENOSPC;
    if (b->err != 0)
        return;
    b64url_encode((const uint8_t *)uri.p, uri.len, b->buf + b->len);
    b->len += n;
    sip_build_str(b, "@");
    sip_build_str(b, core_hostport);
}

int contact_alias_split(struct slice user, struct slice *token, struct slice *enc)
{
    long dot = slice_find(user, '.');
    if (dot < 0)
        return -ENOENT;
    *token = slice_make(user.p, (size_t)dot);
    *enc = slice_make(user.p + dot + 1, user.len - (size_t)dot - 1);
    return 0;
}

int contact_alias_decode(struct sip_build *b, struct slice enc)
{
    if (b->err != 0)
        return b->err;
    if (enc.len == 0)
        return -EBADMSG;
    /* Decoded into the free space after the builder's content; it becomes part of the
     * message only once it has proven to be a URI. */
    char *dst = b->buf + b->len;
    size_t n;
    int rc = b64url_decode(enc.p, enc.len, (uint8_t *)dst, b->cap - b->len, &n);
    if (rc == -ENOSPC) {
        b->err = -ENOSPC;
        return rc;
    }
    if (rc < 0)
        return -EBADMSG;
    struct sip_uri u;
    bool is_sip;
    if (n == 0 || sip_uri_parse(slice_make(dst, n), &u, &is_sip) < 0)
        return -EBADMSG;
    b->len += n;
    return 0;
}
