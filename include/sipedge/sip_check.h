/*
 * sip_check: full syntax validation of a parsed message before the edge forwards it.
 *
 * sip_msg_parse only indexes headers; this module parses every header body a proxy
 * relies on (Via, From, To, Contact, Request-URI, Max-Forwards, Expires, CSeq, Date,
 * Content-Length) so that a malformed message is answered with 400 and never
 * forwarded (RFC 3261 §16.3, RFC 4475 §3.1.2). sip_check_view also keeps what it
 * parsed, so the relay reads each of those bodies once. Pure, allocation-free, no state.
 */
#ifndef SIPEDGE_SIP_CHECK_H
#define SIPEDGE_SIP_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "sipedge/sip_hdr.h"
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

/* Contact elements a view keeps; n_contacts counts them all. */
#define SIP_VIEW_MAX_CONTACTS 32

struct sip_view_contact {
    const struct sip_hdr *hdr; /* the line it stands on */
    struct sip_nameaddr na;
};

/* What a checked message says, parsed once. Slices borrow the message. */
struct sip_view {
    const struct sip_hdr *via_hdr; /* the first Via line */
    struct sip_via via;            /* its first element */
    struct slice via_rest;         /* what follows that element on the line */
    struct sip_nameaddr to, from;
    struct slice call_id;          /* empty when absent (responses) */
    uint32_t cseq;
    struct slice cseq_method;
    /* Requests only: */
    uint32_t max_forwards;         /* 70 when absent (RFC 3261 §16.6 step 3) */
    bool has_max_forwards;
    bool is_max_forwards_bad;        /* sip_view_fill: present but not 0..255 */
    const struct sip_hdr *route_hdr; /* the first Route line; NULL when none */
    struct sip_nameaddr route;       /* its first element */
    struct slice route_rest;         /* what follows it on the line */
    bool has_expires;                /* an Expires header (the first) */
    uint32_t expires;
    uint16_t n_contacts;             /* every Contact element, '*' included */
    bool is_star;                    /* Contact: * */
    struct sip_view_contact contacts[SIP_VIEW_MAX_CONTACTS]; /* the first ones, in order */
};

/*
 * sip_check_msg (see sip_check.h), filling *v with what it parsed. Returns 0, or
 * -EBADMSG with err set; *v is complete only on 0.
 */
int sip_check_view(const struct sip_msg *m, struct sip_err *err, struct sip_view *v);

/*
 * The view of a message that is not checked (responses from clients, messages from the
 * core): the first Via element must parse (else -EBADMSG); every other field is filled
 * when it parses and left empty (0, NULL, empty slice) when it does not.
 * From is filled for requests only (nothing reads it in a response).
 */
int sip_view_fill(const struct sip_msg *m, struct sip_view *v);

/* Number of Contact elements v holds (at most SIP_VIEW_MAX_CONTACTS). */
static inline unsigned sip_view_n_contacts(const struct sip_view *v)
{
    return v->n_contacts < SIP_VIEW_MAX_CONTACTS ? v->n_contacts : SIP_VIEW_MAX_CONTACTS;
}

#endif
