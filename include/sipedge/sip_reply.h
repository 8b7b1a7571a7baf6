/*
 * sip_reply: stateless responses built from a request (RFC 3261 §8.2.6).
 *
 * Copies Via (all of them, in order, with received/rport added to the top one when
 * asked), From, To (adding a To tag unless present), Call-ID and CSeq from the request.
 * Extra header lines (already formatted, each ending in CRLF) may be appended.
 */
#ifndef SIPEDGE_SIP_REPLY_H
#define SIPEDGE_SIP_REPLY_H

#include <stddef.h>

#include "sipedge/sip_msg.h"

struct sip_reply_opts {
    const char *received; /* source IP to add as received= on the top Via; NULL: none */
    unsigned rport;       /* source port for rport=, when the top Via had bare rport; 0: none */
    const char *to_tag;   /* tag to add when To has none; NULL: a fixed edge tag */
    const char *extra;    /* extra header lines, CRLF-terminated; NULL: none */
};

/*
 * Writes "SIP/2.0 status reason" plus the copied headers and Content-Length: 0 into
 * buf; From, To, Call-ID and CSeq are copied when the request has them. Returns the length
 * (> 0), -ENOSPC, or -EBADMSG (not a request, or no Via to answer along).
 */
int sip_reply_build(const struct sip_msg *req, int status, const char *reason,
                    const struct sip_reply_opts *opts, char *buf, size_t cap);

#endif
