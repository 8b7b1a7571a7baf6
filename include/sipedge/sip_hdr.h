/*
 * sip_hdr: on-demand parsers for header bodies (RFC 3261 §25.1).
 *
 * Each parser takes a slice from sip_msg (a header value, which may carry several
 * comma-separated elements) and fills a small struct of slices that borrow the same
 * bytes. List headers are walked element by element: the parser consumes one element
 * and returns the remainder through *rest (empty when done). Nothing allocates.
 * All return 0 or -EBADMSG.
 */
#ifndef SIPEDGE_SIP_HDR_H
#define SIPEDGE_SIP_HDR_H

#include <stdbool.h>
#include <stdint.h>

#include "sipedge/slice.h"

/* Generic ;name=value parameters: the raw parameter span and lookups into it. */
struct sip_params {
    struct slice raw; /* from the first ';' (inclusive) to the end of the element */
};

/*
 * Looks up parameter name (case-insensitive) in params.
 * Returns true when present; *value is the value (empty for a flag parameter).
 */
bool sip_params_get(struct sip_params params, const char *name, struct slice *value);

/* SIP/SIPS URI (RFC 3261 §19.1.1). */
struct sip_uri {
    struct slice scheme;  /* "sip", "sips", or another scheme (then only scheme is set) */
    struct slice user;    /* may be empty */
    struct slice host;    /* IPv6 references keep their brackets */
    uint16_t port;        /* 0 when absent */
    struct sip_params params;
    struct slice headers; /* after '?', may be empty */
};

/*
 * Parses a URI. Rejects embedded whitespace. Non-sip schemes succeed with only
 * scheme set (is_sip false).
 */
int sip_uri_parse(struct slice s, struct sip_uri *out, bool *is_sip);

/* Via element (RFC 3261 §20.42). */
struct sip_via {
    struct slice transport; /* "UDP", "WS", ... */
    struct slice host;
    uint16_t port;          /* 0 when absent */
    struct sip_params params;
    struct slice branch;    /* empty when absent */
    bool has_rport;
    struct slice rport;     /* value, empty for the flag form */
    struct slice received;
    struct slice raw;       /* the whole element, trimmed */
};

int sip_via_parse(struct slice s, struct sip_via *out, struct slice *rest);

/*
 * name-addr / addr-spec with header params, as in From, To, Contact, Route, Path,
 * P-Asserted-Identity. A bare addr-spec ends at the first ';' (params belong to the
 * header, RFC 3261 §20.10) and may not contain ',' or '?'.
 */
struct sip_nameaddr {
    struct slice display;   /* may be empty; quotes kept */
    struct slice uri;       /* inside <> or the addr-spec */
    struct sip_params params;
    bool is_star;           /* Contact: * */
    struct slice raw;       /* the whole element, trimmed */
};

int sip_nameaddr_parse(struct slice s, struct sip_nameaddr *out, struct slice *rest);

/* CSeq: number (< 2^31) and method. */
int sip_cseq_parse(struct slice s, uint32_t *seq, struct slice *method);

/* Contact expires param / Expires value: 0..2^32-1 seconds, rejects larger. */
int sip_expires_parse(struct slice s, uint32_t *out);

/* Comma-separated option-tag list (Supported/Require): true when tag is in it. */
bool sip_tag_list_has(struct slice list, const char *tag);

/*
 * Digest credentials / challenge parameters (RFC 7616 §3.4): finds auth-param name in
 * a "Digest k=v, k="v"" value; quotes are stripped, no unescaping.
 */
bool sip_auth_param(struct slice value, const char *name, struct slice *out);

#endif
