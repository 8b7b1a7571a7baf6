/*
 * registrar_internal: the location table and the digest engine behind registrar.c.
 *
 * location: a bounded AOR -> bindings table. Every binding lives in a slot of a pool
 * preallocated for policy max_bindings; a slot id plus its generation names a binding
 * without a pointer (the registrar puts it in its Via branch to find the binding again
 * when a 430 comes back). A hash index from the normalized AOR to a chain of slots
 * finds an AOR's bindings. Live bindings are never evicted: a full table refuses.
 *
 * digest: RFC 7616 digest authentication with MD5 and SHA-256 and qop=auth. Users come
 * from a "user:password" file; only H(A1) is kept. Nonces carry their own creation
 * time protected by an HMAC with a per-process random key, so no nonce table exists
 * and expiry needs no timer.
 *
 * Both are pure logic, single-threaded, time passed in as now_ms.
 */
#ifndef SIPEDGE_REGISTRAR_INTERNAL_H
#define SIPEDGE_REGISTRAR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sipedge/slice.h"

/* ---- location ---------------------------------------------------------------------- */

#define LOCATION_AOR_MAX 192 /* "user@host", host lower-cased */
#define LOCATION_CONTACT_MAX 320
#define LOCATION_CALL_ID_MAX 128
#define LOCATION_PATH_MAX 512 /* all Path values of the REGISTER, ", "-joined */
#define LOCATION_INSTANCE_MAX 128
#define LOCATION_UA_MAX 96
#define LOCATION_Q_NONE 0xffff /* no q parameter */

struct location;

struct location_binding {
    uint32_t slot; /* index in the pool; with gen, the binding's id */
    uint32_t gen;  /* bumped every time the slot is freed */
    char aor[LOCATION_AOR_MAX];
    char contact[LOCATION_CONTACT_MAX];
    uint16_t q; /* permille 0..1000, or LOCATION_Q_NONE */
    uint64_t expires_at_ms;
    uint64_t updated_ms; /* last REGISTER that touched it: "most recent" on q ties */
    char call_id[LOCATION_CALL_ID_MAX];
    uint32_t cseq;
    char path[LOCATION_PATH_MAX];
    struct sockaddr_storage received; /* source of the REGISTER */
    socklen_t received_len;
    char instance[LOCATION_INSTANCE_MAX]; /* +sip.instance, quotes kept; may be empty */
    uint32_t reg_id;
    bool has_reg_id;
    char user_agent[LOCATION_UA_MAX];

    /* table links, owned by location.c */
    uint32_t hnext;
    bool is_used;
    bool is_dirty; /* on the changed list (location_track) */
};

/*
 * Builds a table of max_bindings slots (>= 1) allowing max_per_aor bindings per AOR.
 * Returns 0, -EINVAL or -ENOMEM; *out is set only on success.
 */
int location_new(struct location **out, uint32_t max_bindings, uint32_t max_per_aor);
void location_free(struct location *l);

/*
 * Writes up to cap bindings of aor (NUL-terminated, normalized) into out, expired ones
 * included, and returns how many the AOR has. Order: unspecified.
 */
size_t location_find(struct location *l, const char *aor, struct location_binding **out,
                     size_t cap);

/*
 * Takes a free slot for aor and returns it zeroed except slot, gen and aor.
 * Returns 0, -ENOSPC when the table is full or the AOR is at max_per_aor, -EINVAL when
 * aor does not fit. Expired bindings are not reclaimed here: call location_expire.
 */
int location_add(struct location *l, const char *aor, struct location_binding **out);

/* Frees b's slot (its generation changes, so old ids stop resolving). */
void location_remove(struct location *l, struct location_binding *b);

/* The binding named by (slot, gen), or NULL when it is gone. */
struct location_binding *location_get(struct location *l, uint32_t slot, uint32_t gen);

/* Removes every binding with expires_at_ms <= now_ms; returns how many. */
size_t location_expire(struct location *l, uint64_t now_ms);

/*
 * Change tracking for a persistent copy: once location_track succeeded, every slot that
 * location_add, location_remove or location_touch changes is put on a list (once, however
 * often it changes) until location_changes_clear. The list is bounded by the pool, so
 * nothing allocates after location_track. Returns 0 or -ENOMEM.
 */
int location_track(struct location *l);
/* Notes that b's fields were changed in place (a refresh). */
void location_touch(struct location *l, struct location_binding *b);
/* The changed slots: n via *n; a slot whose binding is !is_used was removed. */
const uint32_t *location_changes(const struct location *l, size_t *n);
void location_changes_clear(struct location *l);
/* Slot i of the pool, in use or not (i < location_n_slots). */
struct location_binding *location_slot(struct location *l, uint32_t i);
uint32_t location_n_slots(const struct location *l);
/* Sets the generation of every free slot to gen, so that ids handed out by an earlier
 * process (with the same slots) do not name the bindings of this one. */
void location_seed_gen(struct location *l, uint32_t gen);

/* Slots in use / free slots / per-AOR bound. */
size_t location_count(const struct location *l);
size_t location_n_free(const struct location *l);
uint32_t location_max_per_aor(const struct location *l);

/* ---- digest ------------------------------------------------------------------------ */

#define DIGEST_USER_MAX 64
#define DIGEST_NONCE_LEN 48 /* hex: 8-byte time || 16 bytes of HMAC-SHA256 */

enum digest_alg { DIGEST_ALG_MD5 = 0, DIGEST_ALG_SHA256 };

struct digest;

/* Parsed Authorization credentials (RFC 7616 §3.4); slices borrow the header value. */
struct digest_creds {
    struct slice username, realm, nonce, uri, response, algorithm, qop, nc, cnonce, opaque;
};

/*
 * Loads users_file ("user:password" lines, '#' comments, blank lines) and precomputes
 * H(user:realm:password) for MD5 and SHA-256; the passwords are not kept. The password
 * is everything after the first ':' (it may contain ':'); line-end whitespace is
 * trimmed. User names are unique and hold no space or '"'.
 * Returns 0; -EINVAL with err "file:line: reason" for a bad line; -errno when the file
 * cannot be read (err says which); -ENOMEM.
 */
int digest_new(struct digest **out, const char *users_file, const char *realm, char *err,
               size_t errcap);
/* Same, from memory; name stands for the file name in error messages. */
int digest_new_string(struct digest **out, const char *name, const char *text, size_t len,
                      const char *realm, char *err, size_t errcap);
void digest_free(struct digest *d);

size_t digest_n_users(const struct digest *d);
bool digest_has_user(const struct digest *d, struct slice user);
const char *digest_realm(const struct digest *d);

/* Writes a NUL-terminated nonce of DIGEST_NONCE_LEN chars; cap must exceed that. */
void digest_nonce_make(const struct digest *d, uint64_t now_ms, char *out, size_t cap);

/*
 * Checks a nonce made by digest_nonce_make: 0 when genuine and younger than ttl_s,
 * -ETIMEDOUT when genuine but expired (answer with stale=true, RFC 7616 §3.3),
 * -EBADMSG when not ours.
 */
int digest_nonce_check(const struct digest *d, struct slice nonce, uint64_t now_ms, uint32_t ttl_s);

/*
 * Notes a use of a nonce whose credentials verified (digest_verify returned 0): returns
 * -EALREADY when its nc is not above the highest nc that nonce was used with before by
 * the same user and cnonce (a replay, RFC 7616 §5.5: answer with a fresh challenge),
 * else 0. req_hash names the request (its Call-ID, CSeq and Contacts): the same request
 * again with the same nc is a retransmission and passes; anything else is a replay. When
 * the bounded table has no room (or cannot be allocated) the use is refused with -ENOSPC
 * and counted (digest_nc_full): fail closed, the caller answers 503. -EBADMSG for a
 * malformed nonce or nc.
 */
int digest_nc_note(struct digest *d, const struct digest_creds *c, uint64_t req_hash,
                   uint64_t now_ms, uint32_t ttl_s);
uint64_t digest_nc_full(const struct digest *d);

/* Sizes the nonce-count table to slots entries (rounded up to a power of two, at least
 * the probe length); 0 or a table already in use changes nothing. Default 2^18. */
void digest_nc_size(struct digest *d, uint32_t slots);

/* Parses a "Digest ..." credentials value. Returns 0 or -EBADMSG (not Digest, or a
 * required parameter missing). */
int digest_creds_parse(struct slice value, struct digest_creds *out);

/*
 * Verifies credentials for a request with method (RFC 7616 §3.4.1, qop=auth required).
 * Returns 0 when they match; -ENOENT unknown user; -ETIMEDOUT stale nonce; -EBADMSG
 * bad nonce, realm, algorithm or qop; -EACCES wrong response (wrong password).
 */
int digest_verify(const struct digest *d, const struct digest_creds *c, struct slice method,
                  uint64_t now_ms, uint32_t ttl_s);

/* True when the credentials' uri is the Request-URI (RFC 7616 §3.4.6, RFC 2617
 * §3.2.2.5): credentials for another URI are not valid for this request. */
bool digest_uri_matches(const struct digest_creds *c, struct slice ruri);

/* True when the credentials' algorithm (absent: MD5) is one the policy's challenges
 * value (as given to digest_challenge_build) offers; answering with another would
 * be a downgrade, e.g. MD5 when only SHA-256 is offered. */
bool digest_alg_offered(const struct digest_creds *c, int challenges);

/*
 * Writes two WWW-Authenticate header lines (SHA-256 first, then MD5, RFC 7616 §3.7),
 * each CRLF-terminated, with a fresh nonce and stale=true when is_stale.
 * Returns the length written, or -ENOSPC.
 */
int digest_challenge_build(const struct digest *d, uint64_t now_ms, bool is_stale,
                           int challenges, char *buf, size_t cap);
/* Same with header name hdr: "Proxy-Authenticate" for a 407 (RFC 3261 §22.3). */
int digest_challenge_build_hdr(const struct digest *d, const char *hdr, uint64_t now_ms,
                               bool is_stale, int challenges, char *buf, size_t cap);

/*
 * response = KD(H(A1), nonce:nc:cnonce:qop:H(method:uri)) for qop=auth (RFC 7616 §3.4.1),
 * as lower-case hex into out (65 bytes). ha1 is hex H(user:realm:password).
 * Returns 0 or -EBADMSG (fields too long).
 */
int digest_response_hex(enum digest_alg alg, const char *ha1, const struct digest_creds *c,
                        struct slice method, char *out);

/* Hex H(data) for alg into out (33 or 65 bytes incl. NUL). Returns 0, or -ENOMEM when
 * the hash cannot be computed (out is then empty). */
int digest_hash_hex(enum digest_alg alg, const void *data, size_t len, char *out);

#endif
