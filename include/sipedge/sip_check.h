/*
 * sip_check: full syntax validation of a parsed message before the edge forwards it.
 *
 * sip_msg_parse only indexes headers; this module parses every header body a proxy
 * relies on (Via, From, To, Contact, Request-URI, Max-Forwards, Expires, CSeq, Date,
 * Content-Length) so that a malformed message is answered with 400 and never
 * forwarded (RFC 3261 §16.3, RFC 4475 §3.1.2). Pure, allocation-free, no state.
 */
#ifndef SIPEDGE_SIP_CHECK_H
#define SIPEDGE_SIP_CHECK_H

#include "sipedge/sip_msg.h"

/*
 * Validates m (from a successful sip_msg_parse).
 * Requests: the Request-URI parses (no LWS, no '<', no '?' headers on sip/sips);
 * every Via element parses (a missing branch is allowed, RFC 3261 §17.2.3,
 * RFC 4475 §3.1.1.7); From and To are single and parse as
 * name-addr/addr-spec, From carries a tag; Call-ID, CSeq and Max-Forwards are single;
 * every Contact element parses and '*' stands alone; Max-Forwards is 0..255 (0 is
 * accepted here: the relay answers 483 itself); CSeq < 2^31; Expires and Contact
 * expires <= 2^32-1; Date ends in "GMT" (RFC 3261 §20.17); one Content-Length.
 * Responses get the lighter check: Via, From, To and CSeq parse.
 * Returns 0, or -EBADMSG with err->status 400 (0 for responses) and a short reason.
 */
int sip_check_msg(const struct sip_msg *m, struct sip_err *err);

#endif
