/*
 * sip_edit: the stateless-proxy kit (RFC 3261 §16.6, §16.7, §16.11, §18.2; RFC 3581).
 * Both SIP elements in sipedge relay this way: the edge and the embedded registrar.
 *
 * The view: sip_check_view (sip_check.h) validates a message and keeps what it parsed,
 * so each header body a proxy acts on is parsed once per message: the top Via, To,
 * From, Call-ID, CSeq, Max-Forwards, the top Route and the Contacts.
 *
 * The edit: a relayed message is written once, while it is copied. The caller writes
 * its own start line and lines (its Via, Path, Route) into a sip_build, then
 * sip_edit_copy copies the received headers with the edits of a plan applied (the
 * client's Via with received/rport, the first Via or Route element popped, Max-Forwards
 * replaced, Path and identity headers dropped, Route elements filtered, Contact expires
 * floored or capped, Contact URIs rewritten by the caller's hook) and the body.
 *
 * The pieces around it: a keyed branch derivation for stateless relays, the next-hop
 * Via of a response and the address it goes to. Pure, no allocation, no clock.
 */
#ifndef SIPEDGE_SIP_EDIT_H
#define SIPEDGE_SIP_EDIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/sip_build.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

/*
 * A branch for a stateless relay (RFC 3261 §16.11), 16 hex digits into out: the same for
 * retransmissions of a request, different for different transactions. Keyed SipHash
 * over the received branch (or, from an RFC 2543 peer without the magic cookie, Call-ID,
 * From, To, CSeq number and Request-URI), the Via sent-by and the packet's source. The
 * method is left out on purpose: a CANCEL and the ACK of a non-2xx get the branch of
 * their INVITE (§9.2, §17.1.1.3).
 */
void sip_edit_branch(const struct sip_msg *m, const struct sip_view *v, const struct sockaddr *src,
                     uint64_t k0, uint64_t k1, char out[17]);

/* How the client's Via is rewritten (RFC 3261 §18.2.1, RFC 3581 §4). */
struct sip_via_edit {
    const struct sip_via *via;  /* the element, as parsed */
    const struct sockaddr *src; /* the packet's source */
    bool is_received_always;    /* received= even when sent-by is the source address */
    uint32_t keep_s;            /* non-zero: value for a bare RFC 6223 keep */
};

/*
 * Writes the Via element with received= (the source address) and a filled rport= when
 * the client asked for rport, dropping any received/rport it put there itself. Unless
 * is_received_always, an element whose sent-by is already the source address and that
 * asks for no rport is copied as it is.
 */
void sip_edit_client_via(struct sip_build *b, const struct sip_via_edit *o);

/* What to do with the headers of a message being copied. Zero means "copy as is". */
struct sip_edit {
    const struct sip_hdr *top_via;   /* rewrite the first element of this Via line ... */
    struct sip_via_edit via;         /* ... so */
    const struct sip_hdr *pop_via;   /* drop the first element of this Via line */
    struct slice pop_via_rest;       /* what follows that element */
    const struct sip_hdr *pop_route; /* drop the first element of this Route line */
    struct slice pop_route_rest;
    bool set_max_forwards; /* replace Max-Forwards' value by max_forwards */
    uint32_t max_forwards;
    bool strip_identity;    /* drop P-Asserted-/P-Preferred-Identity */
    bool strip_path;        /* drop Path (counted in *n_path_stripped) */
    uint32_t expires_floor; /* non-zero: raise non-zero expires to at least this */
    uint32_t expires_cap;   /* non-zero: cut expires to at most this */
    /* Route elements: when set, only those it accepts are kept (the others counted in
     * *n_route_stripped). */
    bool (*route_ok)(void *ctx, struct slice uri);
    void *route_ctx;
    /* Contact URIs: when set, called for each element; it writes a replacement for
     * c->uri into b and returns true, or writes nothing and returns false. */
    bool (*contact_uri)(void *ctx, struct sip_build *b, const struct sip_nameaddr *c);
    void *contact_ctx;
    uint64_t *n_route_stripped, *n_path_stripped; /* may be NULL */
};

/* The expires value the plan gives x (a removal stays a removal). */
uint32_t sip_edit_expires(const struct sip_edit *e, uint32_t x);

/* Copies every header of m with the plan's edits, then the empty line and the body
 * (without any bytes past Content-Length). */
void sip_edit_copy(struct sip_build *b, const struct sip_msg *m, const struct sip_edit *e);

/*
 * The Via a response goes on to once the top one (v->via) is popped (RFC 3261 §16.7
 * step 3): the element after it on its line, or the first of the next Via line. Sets
 * *next and, for sip_edit_copy, e->pop_via/pop_via_rest. Returns 0, or -ENOENT when there
 * is none, -EBADMSG when it does not parse.
 */
int sip_edit_pop_via(const struct sip_msg *m, const struct sip_view *v, struct sip_via *next,
                     struct sip_edit *e);

/* Where a response for Via element via goes (RFC 3261 §18.2.2, RFC 3581 §4): received
 * (or sent-by) and rport (or the sent-by port, or 5060). Returns 0 or -EINVAL. */
int sip_via_response_addr(const struct sip_via *via, struct sockaddr_storage *out);

#endif
