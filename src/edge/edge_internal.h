/*
 * edge_internal: helpers shared inside src/edge, pure and allocation-free.
 *
 * b64url: unpadded base64url (RFC 4648 §5), the alphabet of flow tokens and contact
 * aliases. Decoding is strict: only the canonical spelling of a byte string is
 * accepted, so one value has exactly one encoding.
 *
 * contact_alias: the Contact aliases written for registrars that ignore Path (RFC 3327).
 * A client's Contact URI is replaced by a URI at sipedge's core address whose user part
 * carries the flow token and the original URI:
 *
 *     sip:<flow token>.<base64url(original URI)>@<core host:port>
 *
 * The alias holds everything needed to reach the client again, so the relay keeps no
 * state for it: a request the registrar sends to the alias is delivered over the flow
 * the token names, with the original URI restored as its Request-URI, and the alias
 * is restored in the Contacts of the registrar's responses. Both write straight into a
 * sip_build buffer. Single-threaded use only.
 */
#ifndef SIPEDGE_EDGE_INTERNAL_H
#define SIPEDGE_EDGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sipedge/sip_build.h"
#include "sipedge/slice.h"

/* ---- b64url ------------------------------------------------------------------------- */

/* Characters needed to encode n bytes (no padding). */
static inline size_t b64url_encoded_len(size_t n) { return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0); }

/* Writes the encoding of in[0..len) to out (b64url_encoded_len(len) bytes, no NUL). */
void b64url_encode(const uint8_t *in, size_t len, char *out);

/*
 * Decodes in[0..len) into out. Returns 0 and sets *out_len, -EBADMSG for a character
 * outside the alphabet, an impossible length or a non-canonical last character, or
 * -ENOSPC when the result would not fit in cap bytes (out is then untouched).
 */
int b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/* ---- contact_alias ------------------------------------------------------------------ */

/*
 * Appends the alias of uri to b: "sip:" token "." base64url(uri) "@" core_hostport.
 * Errors are b's (sticky -ENOSPC).
 */
void contact_alias_build(struct sip_build *b, struct slice token, struct slice uri,
                         const char *core_hostport);

/*
 * Splits the user part of a URI at our core address into the flow token and the
 * encoded original URI (the text before and after the first '.'). Returns 0, or
 * -ENOENT when the user part holds no '.' and so is not an alias. Neither half is
 * checked here: the token by flow_token_decode, the rest by contact_alias_decode.
 */
int contact_alias_split(struct slice user, struct slice *token, struct slice *enc);

/*
 * Decodes the encoded original URI enc and appends it to b. Strict: enc must be
 * canonical base64url and decode to a non-empty URI that sip_uri_parse accepts (no
 * whitespace, controls, quotes or angle brackets). Returns 0, -EBADMSG when enc is
 * malformed (b is then unchanged), or b's sticky error when the result does not fit.
 */
int contact_alias_decode(struct sip_build *b, struct slice enc);

#endif
