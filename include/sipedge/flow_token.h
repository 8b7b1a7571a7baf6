/*
 * flow_token: RFC 5626 flow tokens, HMAC-protected, carried in the user part of our
 * Path URI and in a parameter of our Via.
 *
 * A token names one flow (worker, slot, generation, epoch of the run that made it) and
 * carries the flow's transport and remote address, so a verified token is enough to
 * check that a slot still belongs to the same peer: the caller compares them. It is authenticated with HMAC-SHA256 truncated to 80 bits under a
 * 32-byte key; one previous key is accepted for rotation. Decoding checks the MAC
 * before it trusts any field. Keys objects are single-threaded (one per worker).
 */
#ifndef SIPEDGE_FLOW_TOKEN_H
#define SIPEDGE_FLOW_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "sipedge/slice.h"

#define FLOW_TOKEN_KEY_LEN 32
/* base64url of the longest (IPv6) token, plus NUL. */
#define FLOW_TOKEN_MAX 64
/* Encoded lengths: 32 bytes for an IPv4 flow, 44 for IPv6. */
#define FLOW_TOKEN_LEN_V4 43
#define FLOW_TOKEN_LEN_V6 59
/* Hex characters of a tag (64 bits). */
#define FLOW_TOKEN_TAG_LEN 16

/* Whether n is the length of some flow token (a cheap test before any decoding). */
static inline bool flow_token_len_ok(size_t n)
{
    return n == FLOW_TOKEN_LEN_V4 || n == FLOW_TOKEN_LEN_V6;
}

union flow_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct flow_token_fields {
    uint8_t worker;
    uint8_t transport; /* enum flow_transport */
    uint8_t sock;      /* local socket / listener index, 0..15 */
    uint32_t slot;
    uint32_t gen;
    uint32_t epoch; /* the run that made the flow */
    union flow_addr remote;
};

struct flow_token_keys;

/* Creates a key set. prev may be NULL. Returns 0 or -ENOMEM. */
int flow_token_keys_new(struct flow_token_keys **out, const uint8_t key[FLOW_TOKEN_KEY_LEN],
                        const uint8_t *prev);
void flow_token_keys_free(struct flow_token_keys *k);

/*
 * Writes the base64url token for f into out (cap >= FLOW_TOKEN_MAX), NUL-terminated.
 * Returns its length, or -EINVAL (unsupported address family).
 */
int flow_token_encode(struct flow_token_keys *k, const struct flow_token_fields *f, char *out,
                      size_t cap);

/*
 * Verifies and decodes a token. Returns 0 and fills *out, -EBADMSG when it is not a
 * token of ours (wrong length, alphabet or version), -EPERM when the MAC fails
 * under both keys (tampered or forged).
 */
int flow_token_decode(struct flow_token_keys *k, struct slice tok, struct flow_token_fields *out);

/* Labels of flow_token_tag, one per use. */
enum flow_token_label {
    FLOW_TOKEN_TAG_INBOUND_BRANCH = 1, /* our Via branch on a request delivered to a client */
    FLOW_TOKEN_TAG_REGISTRAR_SB = 2,   /* the embedded registrar's sb= binding reference */
};

/*
 * A MAC under the current key over label and the n parts (each length-prefixed, so
 * the split between parts is covered), as FLOW_TOKEN_TAG_LEN hex characters and a NUL.
 * Returns 0 or -EIO. flow_token_tag_verify accepts a tag under the current or the
 * previous key: 0, or -EPERM (constant-time compare).
 */
int flow_token_tag(struct flow_token_keys *k, uint8_t label, const struct slice *parts, size_t n,
                   char out[FLOW_TOKEN_TAG_LEN + 1]);
int flow_token_tag_verify(struct flow_token_keys *k, uint8_t label, const struct slice *parts,
                          size_t n, struct slice tag);

#endif
