/*
 * sip_msg: zero-copy SIP message parser (RFC 3261 §7, §25).
 *
 * Input is one complete message (a UDP datagram or a WebSocket message). The parser
 * reads the start line and indexes every header once into a caller-sized array of
 * slices that borrow the input bytes; it allocates nothing, copies nothing and keeps
 * no state. Header bodies (Via, Contact, name-addr, ...) are parsed on demand by
 * sip_hdr.h. Compact header forms map to the same id. Folded header values (a line
 * starting with SP/HT continues the previous one) stay in one value slice; sub-parsers
 * treat the embedded CRLF as whitespace.
 */
#ifndef SIPEDGE_SIP_MSG_H
#define SIPEDGE_SIP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/slice.h"

enum sip_hdr_id {
    SIP_HDR_OTHER = 0,
    SIP_HDR_VIA,                 /* v */
    SIP_HDR_FROM,                /* f */
    SIP_HDR_TO,                  /* t */
    SIP_HDR_CALL_ID,             /* i */
    SIP_HDR_CSEQ,
    SIP_HDR_CONTACT,             /* m */
    SIP_HDR_EXPIRES,
    SIP_HDR_MIN_EXPIRES,
    SIP_HDR_ROUTE,
    SIP_HDR_RECORD_ROUTE,
    SIP_HDR_PATH,
    SIP_HDR_SUPPORTED,           /* k */
    SIP_HDR_REQUIRE,
    SIP_HDR_PROXY_REQUIRE,
    SIP_HDR_MAX_FORWARDS,
    SIP_HDR_CONTENT_LENGTH,      /* l */
    SIP_HDR_CONTENT_TYPE,        /* c */
    SIP_HDR_USER_AGENT,
    SIP_HDR_AUTHORIZATION,
    SIP_HDR_PROXY_AUTHORIZATION,
    SIP_HDR_WWW_AUTHENTICATE,
    SIP_HDR_PROXY_AUTHENTICATE,
    SIP_HDR_P_ASSERTED_IDENTITY,
    SIP_HDR_P_PREFERRED_IDENTITY,
    SIP_HDR_FLOW_TIMER,
    SIP_HDR_DATE,
    SIP_HDR__COUNT
};

enum sip_method {
    SIP_METHOD_OTHER = 0,
    SIP_METHOD_REGISTER,
    SIP_METHOD_INVITE,
    SIP_METHOD_ACK,
    SIP_METHOD_BYE,
    SIP_METHOD_CANCEL,
    SIP_METHOD_OPTIONS,
    SIP_METHOD_MESSAGE,
    SIP_METHOD_SUBSCRIBE,
    SIP_METHOD_NOTIFY,
    SIP_METHOD_INFO,
    SIP_METHOD_UPDATE,
    SIP_METHOD_PRACK,
    SIP_METHOD_REFER,
    SIP_METHOD_PUBLISH,
};

/* One header line (possibly folded). */
struct sip_hdr {
    enum sip_hdr_id id;
    struct slice name;  /* as received, e.g. "v" or "Via" */
    struct slice value; /* body after ':' with surrounding LWS trimmed */
    uint32_t off;       /* offset of the first byte of the line in the message */
    uint32_t line_len;  /* length of the whole line including its CRLF (and folds) */
};

struct sip_limits {
    uint32_t max_msg_bytes; /* larger input: -EMSGSIZE */
    uint16_t max_headers;   /* more header lines: -E2BIG (<= caller's array size) */
};

/* Why a parse failed, for a 400 reason phrase and a counter. */
struct sip_err {
    int status;         /* 400, 413, 483, 505, ... ; 0 when no response should be sent */
    const char *reason; /* static string */
};

struct sip_msg {
    const char *buf;
    uint32_t len; /* bytes of this message (headers + Content-Length body) */

    bool is_request;
    enum sip_method method_id; /* requests */
    struct slice method;       /* requests */
    struct slice ruri;         /* requests */
    uint16_t status;           /* responses */
    struct slice reason;       /* responses */
    uint32_t start_line_len;   /* incl. CRLF */

    struct sip_hdr *hdrs;
    uint16_t n_hdrs;
    int16_t first[SIP_HDR__COUNT]; /* index of the first header with that id, or -1 */
    uint16_t count[SIP_HDR__COUNT];

    uint32_t hdr_end;    /* offset of the empty line ending the headers */
    struct slice body;
    uint32_t content_length;
    bool has_content_length;
};

/*
 * Parses buf[0..len). hdrs is a caller array of limits->max_headers entries.
 * Checks: start line syntax (one SP between elements, SIP/2.0, 3-digit status),
 * header line syntax, Content-Length (single numeric value, not beyond the datagram;
 * trailing bytes after the body are ignored per RFC 3261 §18.3), the mandatory headers
 * To, From, Call-ID, CSeq, Via (RFC 3261 §8.1.1) and that the CSeq method matches the
 * request method.
 * Returns 0 and fills *m, or a negative errno and fills *err:
 *   -EMSGSIZE too large, -E2BIG too many headers, -EBADMSG malformed.
 * err->status is 0 when no response can be formed (e.g. not SIP at all, responses).
 * When err->status is not 0, *m still holds the start line and the headers indexed so
 * far, so the caller can try sip_reply_build (which fails when a needed header is
 * missing). A missing empty line at the very end of the input is tolerated.
 */
int sip_msg_parse(struct sip_msg *m, const char *buf, size_t len, struct sip_hdr *hdrs,
                  const struct sip_limits *limits, struct sip_err *err);

/* First header with id, or NULL. */
const struct sip_hdr *sip_msg_hdr(const struct sip_msg *m, enum sip_hdr_id id);
/* Next header with the same id after h, or NULL. */
const struct sip_hdr *sip_msg_hdr_next(const struct sip_msg *m, const struct sip_hdr *h);
/* Maps a header name (full or compact, any case) to its id. */
enum sip_hdr_id sip_hdr_id_lookup(struct slice name);
/* Maps a method token to its id (case-sensitive, RFC 3261 §7.1). */
enum sip_method sip_method_lookup(struct slice method);

#endif
