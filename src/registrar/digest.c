/*
 * digest: RFC 7616 digest authentication for the embedded registrar.
 *
 * Nonce layout (48 hex characters, no server state):
 *
 *   +------------------+-------------------------------------------+
 *   | created, ms, BE  | HMAC-SHA256(key, created || realm)[0..16) |
 *   |     8 bytes      |                 16 bytes                  |
 *   +------------------+-------------------------------------------+
 *
 * The key is random per process, so nonces die with a restart (clients then get a
 * fresh challenge). A nonce may be reused until it expires, each time with a higher nc
 * (RFC 7616 §3.4, §5.5): the nonce-count table below remembers, for every nonce that
 * carried valid credentials, the highest nc seen, so a captured Authorization cannot be
 * replayed (the digest does not cover the Contact, so a replay could move a binding).
 * Entries live as long as their nonce; the table is bounded, and when it is full the
 * use is refused (-ENOSPC, counted): the registrar answers 503 rather than accept
 * credentials it could not check for a replay.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "registrar/registrar_internal.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/siphash.h"

#define DIGEST_NIL UINT32_MAX
#define DIGEST_NONCE_MAC 16
#define DIGEST_DEFAULT_TTL_S 300
#define DIGEST_SKEW_MS 5000

struct digest_user {
    char name[DIGEST_USER_MAX];
    char ha1_md5[33];
    char ha1_sha256[65];
    uint32_t hnext;
};

/* One (nonce, user, cnonce) that carried valid credentials: the highest nc it was used
 * with. Nonces are made per millisecond, so two clients challenged in the same one share a
 * nonce; the user and cnonce keep them apart. A replay repeats all three (the response
 * covers them) and is caught. */
struct digest_nc {
    uint64_t key;        /* keyed hash of the nonce's MAC, user and cnonce; 0 = empty slot */
    uint64_t req;        /* the request that used nc (digest_nc_note's req_hash) */
    uint32_t expires_s;  /* when the nonce expires (s since the digest's epoch) */
    uint32_t nc;
};

#define DIGEST_NC_SLOTS (1u << 18) /* 6 MiB; power of two */
#define DIGEST_NC_PROBE 16

struct digest {
    char realm[128];
    uint8_t key[32];
    uint64_t hk0, hk1; /* SipHash key of the user index and the nonce-count table */
    struct digest_user *users;
    uint32_t n_users;
    uint32_t cap_users;
    uint32_t *buckets;
    uint32_t bucket_mask;
    struct digest_nc *ncs; /* nc_slots entries, allocated on first use */
    uint32_t nc_slots;     /* power of two >= DIGEST_NC_PROBE */
    uint64_t nc_full;      /* uses refused: no free slot within DIGEST_NC_PROBE */
};

/* User names and cnonces come from the network: both tables hash with the digest's own
 * random SipHash key, so nobody outside can aim names at one chain or forge a collision
 * with another client's nonce-count entry. */
static uint32_t name_hash(const struct digest *d, const char *p, size_t len)
{
    return (uint32_t)siphash13(d->hk0, d->hk1, p, len);
}

/* A field with its length first, so that "ab"+"c" and "a"+"bc" differ. */
static void hash_field(struct siphash *s, struct slice f)
{
    uint64_t len = f.len;
    siphash_add(s, &len, sizeof(len));
    siphash_add(s, f.p, f.len);
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int digest_hash_hex(enum digest_alg alg, const void *data, size_t len, char *out)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    const EVP_MD *type = alg == DIGEST_ALG_SHA256 ? EVP_sha256() : EVP_md5();
    if (EVP_Digest(data, len, md, &md_len, type, NULL) != 1) {
        out[0] = '\0'; /* an empty hash never matches a response */
        return -ENOMEM;
    }
    hex_encode(md, md_len, out);
    return 0;
}

static const struct digest_user *user_lookup(const struct digest *d, struct slice name)
{
    if (!d->buckets)
        return NULL;
    for (uint32_t i = d->buckets[name_hash(d, name.p, name.len) & d->bucket_mask]; i != DIGEST_NIL;
         i = d->users[i].hnext) {
        const struct digest_user *u = &d->users[i];
        if (strlen(u->name) == name.len && memcmp(u->name, name.p, name.len) == 0)
            return u;
    }
    return NULL;
}

static int index_build(struct digest *d)
{
    uint32_t n_buckets = 16;
    while (n_buckets < 2 * d->n_users)
        n_buckets <<= 1;
    uint32_t *buckets = malloc(n_buckets * sizeof(*buckets));
    if (!buckets)
        return -ENOMEM;
    free(d->buckets);
    d->buckets = buckets;
    for (uint32_t i = 0; i < n_buckets; i++)
        d->buckets[i] = DIGEST_NIL;
    d->bucket_mask = n_buckets - 1;
    for (uint32_t i = 0; i < d->n_users; i++) {
        struct digest_user *u = &d->users[i];
        uint32_t *head = &d->buckets[name_hash(d, u->name, strlen(u->name)) & d->bucket_mask];
        u->hnext = *head;
        *head = i;
    }
    return 0;
}

static int user_add(struct digest *d, const char *name, size_t name_len, const char *pw,
                    size_t pw_len)
{
    if (d->n_users == d->cap_users) {
        uint32_t cap = d->cap_users ? d->cap_users * 2 : 64;
        struct digest_user *u = realloc(d->users, cap * sizeof(*u));
        if (!u)
            return -ENOMEM;
        d->users = u;
        d->cap_users = cap;
    }
    struct digest_user *u = &d->users[d->n_users];
    memcpy(u->name, name, name_len);
    u->name[name_len] = '\0';
    char a1[DIGEST_USER_MAX + 128 + 512 + 3];
    int n = snprintf(a1, sizeof(a1), "%s:%s:%.*s", u->name, d->realm, (int)pw_len, pw);
    if (n < 0 || (size_t)n >= sizeof(a1))
        return -EINVAL;
    int rc = digest_hash_hex(DIGEST_ALG_MD5, a1, (size_t)n, u->ha1_md5);
    if (rc == 0)
        rc = digest_hash_hex(DIGEST_ALG_SHA256, a1, (size_t)n, u->ha1_sha256);
    OPENSSL_cleanse(a1, sizeof(a1));
    if (rc != 0)
        return rc;
    d->n_users++;
    if (!d->buckets || d->n_users * 2 > d->bucket_mask + 1)
        return index_build(d);
    uint32_t *head = &d->buckets[name_hash(d, u->name, name_len) & d->bucket_mask];
    u->hnext = *head;
    *head = d->n_users - 1;
    return 0;
}

static int parse_users(struct digest *d, const char *name, const char *text, size_t len, char *err,
                       size_t errcap)
{
    unsigned line_no = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        line_no++;
        struct slice line = slice_trim(slice_make(text + pos, end - pos));
        pos = end + 1;
        if (line.len == 0 || line.p[0] == '#')
            continue;
        long colon = slice_find(line, ':');
        const char *reason = NULL;
        if (colon < 0)
            reason = "expected user:password";
        else if (colon == 0)
            reason = "empty user name";
        else if ((size_t)colon >= DIGEST_USER_MAX)
            reason = "user name too long";
        else if (line.len - (size_t)colon - 1 > 512)
            reason = "password too long";
        else if (memchr(line.p, '"', (size_t)colon) || memchr(line.p, ' ', (size_t)colon))
            reason = "user name contains a quote or a space";
        else if (user_lookup(d, slice_make(line.p, (size_t)colon)))
            reason = "duplicate user";
        if (reason) {
            snprintf(err, errcap, "%s:%u: %s", name, line_no, reason);
            return -EINVAL;
        }
        int rc =
            user_add(d, line.p, (size_t)colon, line.p + colon + 1, line.len - (size_t)colon - 1);
        if (rc != 0) {
            snprintf(err, errcap, "%s:%u: %s", name, line_no,
                     rc == -ENOMEM ? "out of memory" : "line too long");
            return rc;
        }
    }
    return 0;
}

int digest_new_string(struct digest **out, const char *name, const char *text, size_t len,
                      const char *realm, char *err, size_t errcap)
{
    if (!out || !realm || strlen(realm) >= sizeof(((struct digest *)0)->realm)) {
        snprintf(err, errcap, "%s: bad realm", name);
        return -EINVAL;
    }
    struct digest *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    snprintf(d->realm, sizeof(d->realm), "%s", realm);
    d->nc_slots = DIGEST_NC_SLOTS;
    uint64_t hk[2] = {0, 0};
    int rc = RAND_bytes(d->key, sizeof(d->key)) == 1 &&
                     RAND_bytes((unsigned char *)hk, sizeof(hk)) == 1
                 ? 0
                 : -EIO;
    d->hk0 = hk[0];
    d->hk1 = hk[1];
    if (rc != 0)
        snprintf(err, errcap, "%s: no randomness for the nonce key", name);
    if (rc == 0)
        rc = parse_users(d, name, text, len, err, errcap);
    if (rc == 0 && !d->buckets)
        rc = index_build(d);
    if (rc != 0) {
        digest_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int digest_new(struct digest **out, const char *users_file, const char *realm, char *err,
               size_t errcap)
{
    FILE *f = fopen(users_file, "rb");
    if (!f) {
        int rc = -errno;
        snprintf(err, errcap, "%s:0: %s", users_file, strerror(errno));
        return rc;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            char *t = realloc(text, cap);
            if (!t) {
                rc = -ENOMEM;
                goto out;
            }
            text = t;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        rc = -EIO;
        snprintf(err, errcap, "%s:0: read error", users_file);
        goto out;
    }
    rc = digest_new_string(out, users_file, text, len, realm, err, errcap);
out:
    if (text) {
        OPENSSL_cleanse(text, cap);
        free(text);
    }
    fclose(f);
    return rc;
}

void digest_free(struct digest *d)
{
    if (!d)
        return;
    if (d->users)
        OPENSSL_cleanse(d->users, d->cap_users * sizeof(*d->users));
    free(d->users);
    free(d->buckets);
    free(d->ncs);
    OPENSSL_cleanse(d->key, sizeof(d->key));
    free(d);
}

size_t digest_n_users(const struct digest *d)
{
    return d->n_users;
}

bool digest_has_user(const struct digest *d, struct slice user)
{
    return user_lookup(d, user) != NULL;
}

const char *digest_realm(const struct digest *d)
{
    return d->realm;
}

static void nonce_mac(const struct digest *d, const uint8_t ts[8], uint8_t mac[32])
{
    uint8_t msg[8 + sizeof(d->realm)];
    size_t realm_len = strlen(d->realm);
    memcpy(msg, ts, 8);
    memcpy(msg + 8, d->realm, realm_len);
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), d->key, sizeof(d->key), msg, 8 + realm_len, mac, &mac_len))
        memset(mac, 0, 32);
}

void digest_nonce_make(const struct digest *d, uint64_t now_ms, char *out, size_t cap)
{
    uint8_t raw[8 + DIGEST_NONCE_MAC];
    uint8_t mac[32];
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)(now_ms >> (56 - 8 * i));
    nonce_mac(d, raw, mac);
    memcpy(raw + 8, mac, DIGEST_NONCE_MAC);
    if (cap > DIGEST_NONCE_LEN)
        hex_encode(raw, sizeof(raw), out);
    else if (cap > 0)
        out[0] = '\0';
}

/* Hex nonce -> its 24 bytes (8 of time, 16 of MAC); -EBADMSG when not that shape. */
static int nonce_raw(struct slice nonce, uint8_t raw[8 + DIGEST_NONCE_MAC])
{
    if (nonce.len != DIGEST_NONCE_LEN)
        return -EBADMSG;
    for (size_t i = 0; i < 8 + DIGEST_NONCE_MAC; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)nonce.p[2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)nonce.p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EBADMSG;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int digest_nonce_check(const struct digest *d, struct slice nonce, uint64_t now_ms, uint32_t ttl_s)
{
    uint8_t raw[8 + DIGEST_NONCE_MAC];
    uint8_t mac[32];
    if (nonce_raw(nonce, raw) != 0)
        return -EBADMSG;
    nonce_mac(d, raw, mac);
    if (CRYPTO_memcmp(mac, raw + 8, DIGEST_NONCE_MAC) != 0)
        return -EBADMSG;
    uint64_t created = be64(raw);
    if (created > now_ms + DIGEST_SKEW_MS)
        return -EBADMSG;
    uint64_t ttl_ms = (uint64_t)(ttl_s ? ttl_s : DIGEST_DEFAULT_TTL_S) * 1000;
    if (now_ms > created && now_ms - created > ttl_ms)
        return -ETIMEDOUT;
    return 0;
}

int digest_nc_note(struct digest *d, const struct digest_creds *c, uint64_t req_hash,
                   uint64_t now_ms, uint32_t ttl_s)
{
    uint8_t raw[8 + DIGEST_NONCE_MAC];
    if (nonce_raw(c->nonce, raw) != 0 || c->nc.len != 8)
        return -EBADMSG;
    uint32_t nc = 0;
    for (size_t i = 0; i < 8; i++) {
        int v = OPENSSL_hexchar2int((unsigned char)c->nc.p[i]);
        if (v < 0)
            return -EBADMSG;
        nc = nc << 4 | (uint32_t)v;
    }
    if (!d->ncs) {
        d->ncs = calloc(d->nc_slots, sizeof(*d->ncs));
        if (!d->ncs) {
            d->nc_full++;
            return -ENOSPC;
        }
    }
    struct siphash hs;
    siphash_init(&hs, d->hk0, d->hk1);
    siphash_add(&hs, raw + 8, DIGEST_NONCE_MAC);
    hash_field(&hs, c->username);
    hash_field(&hs, c->cnonce);
    uint64_t key = siphash_final(&hs);
    if (key == 0)
        key = 1; /* 0 marks an empty slot */
    uint64_t ttl_ms = (uint64_t)(ttl_s ? ttl_s : DIGEST_DEFAULT_TTL_S) * 1000;
    uint32_t now_s = (uint32_t)(now_ms / 1000);
    uint32_t expires_s = (uint32_t)((be64(raw) + ttl_ms + DIGEST_SKEW_MS) / 1000) + 1;
    struct digest_nc *free_slot = NULL;
    for (uint32_t k = 0; k < DIGEST_NC_PROBE; k++) {
        struct digest_nc *e = &d->ncs[(key + k) & (d->nc_slots - 1)];
        if (e->key == key) {
            if (nc == e->nc && req_hash == e->req)
                return 0; /* a retransmission of the request that used it */
            if (nc <= e->nc)
                return -EALREADY;
            e->nc = nc;
            e->req = req_hash;
            return 0;
        }
        if (!free_slot && (e->key == 0 || e->expires_s < now_s))
            free_slot = e;
    }
    if (!free_slot) {
        d->nc_full++; /* fail closed: an unchecked use could be a replay */
        return -ENOSPC;
    }
    *free_slot = (struct digest_nc){.key = key, .req = req_hash, .expires_s = expires_s, .nc = nc};
    return 0;
}

void digest_nc_size(struct digest *d, uint32_t slots)
{
    if (d->ncs || slots == 0)
        return;
    uint32_t n = DIGEST_NC_PROBE;
    while (n < slots && n < (1u << 30))
        n <<= 1;
    d->nc_slots = n;
}

uint64_t digest_nc_full(const struct digest *d)
{
    return d->nc_full;
}

int digest_creds_parse(struct slice value, struct digest_creds *out)
{
    struct slice v = slice_trim(value);
    if (v.len < 7 || !slice_case_prefix(v, "Digest") || (v.p[6] != ' ' && v.p[6] != '\t'))
        return -EBADMSG;
    struct digest_creds c;
    memset(&c, 0, sizeof(c));
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"username", offsetof(struct digest_creds, username)},
        {"realm", offsetof(struct digest_creds, realm)},
        {"nonce", offsetof(struct digest_creds, nonce)},
        {"uri", offsetof(struct digest_creds, uri)},
        {"response", offsetof(struct digest_creds, response)},
        {"algorithm", offsetof(struct digest_creds, algorithm)},
        {"qop", offsetof(struct digest_creds, qop)},
        {"nc", offsetof(struct digest_creds, nc)},
        {"cnonce", offsetof(struct digest_creds, cnonce)},
        {"opaque", offsetof(struct digest_creds, opaque)},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        struct slice *dst = (struct slice *)((char *)&c + fields[i].off);
        if (!sip_auth_param(v, fields[i].name, dst))
            *dst = SLICE_NULL;
    }
    if (c.username.len == 0 || c.realm.p == NULL || c.nonce.len == 0 || c.uri.len == 0 ||
        c.response.len == 0)
        return -EBADMSG;
    *out = c;
    return 0;
}

/* H(a:b:...) over NUL-separated parts joined with ':'. */
static int hash_join(enum digest_alg alg, char *out, const struct slice *parts, size_t n)
{
    char buf[2048];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (len + parts[i].len + 1 > sizeof(buf))
            return -EBADMSG;
        if (i > 0)
            buf[len++] = ':';
        memcpy(buf + len, parts[i].p, parts[i].len);
        len += parts[i].len;
    }
    return digest_hash_hex(alg, buf, len, out) == 0 ? 0 : -EBADMSG;
}

int digest_response_hex(enum digest_alg alg, const char *ha1, const struct digest_creds *c,
                        struct slice method, char *out)
{
    char ha2[65];
    struct slice a2[] = {method, c->uri};
    if (hash_join(alg, ha2, a2, 2) != 0)
        return -EBADMSG;
    struct slice kd[] = {slice_make(ha1, strlen(ha1)), c->nonce, c->nc, c->cnonce, c->qop,
                         slice_make(ha2, strlen(ha2))};
    return hash_join(alg, out, kd, 6);
}

int digest_verify(const struct digest *d, const struct digest_creds *c, struct slice method,
                  uint64_t now_ms, uint32_t ttl_s)
{
    const struct digest_user *u = user_lookup(d, c->username);
    if (!u)
        return -ENOENT;
    if (!slice_eq(c->realm, slice_make(d->realm, strlen(d->realm))))
        return -EBADMSG;
    enum digest_alg alg;
    if (c->algorithm.len == 0 || slice_case_eq_str(c->algorithm, "MD5"))
        alg = DIGEST_ALG_MD5;
    else if (slice_case_eq_str(c->algorithm, "SHA-256"))
        alg = DIGEST_ALG_SHA256;
    else
        return -EBADMSG; /* -sess variants and SHA-512-256 are not offered */
    /* We only offer qop="auth" (RFC 7616 §3.3); nc is 8 hex digits (§3.4). */
    if (!slice_case_eq_str(c->qop, "auth") || c->nc.len != 8 || c->cnonce.len == 0)
        return -EBADMSG;
    int rc = digest_nonce_check(d, c->nonce, now_ms, ttl_s);
    if (rc != 0)
        return rc;

    const char *ha1 = alg == DIGEST_ALG_SHA256 ? u->ha1_sha256 : u->ha1_md5;
    char expect[65];
    if (digest_response_hex(alg, ha1, c, method, expect) != 0)
        return -EBADMSG;
    size_t n = strlen(expect);
    if (c->response.len != n)
        return -EACCES;
    /* Hex digits may come in upper case; the comparison stays constant-time. */
    char got[65];
    for (size_t i = 0; i < n; i++) {
        char ch = c->response.p[i];
        got[i] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
    }
    return CRYPTO_memcmp(got, expect, n) == 0 ? 0 : -EACCES;
}

bool digest_uri_matches(const struct digest_creds *c, struct slice ruri)
{
    /* Byte equality: the client copies the Request-URI it sends (RFC 7616 §3.4.6). */
    return slice_eq(c->uri, ruri);
}

bool digest_alg_offered(const struct digest_creds *c, int challenges)
{
    bool is_sha256 = slice_case_eq_str(c->algorithm, "SHA-256");
    bool is_md5 = c->algorithm.len == 0 || slice_case_eq_str(c->algorithm, "MD5");
    switch (challenges) {
    case 1: /* sha256 */
        return is_sha256;
    case 2: /* md5 then sha256 */
    case 3: /* sha256 then md5 */
        return is_sha256 || is_md5;
    default: /* 0, and unknown values as digest_challenge_build treats them: md5 */
        return is_md5;
    }
}

int digest_challenge_build(const struct digest *d, uint64_t now_ms, bool is_stale, int challenges,
                           char *buf, size_t cap)
{
    return digest_challenge_build_hdr(d, "WWW-Authenticate", now_ms, is_stale, challenges, buf,
                                      cap);
}

int digest_challenge_build_hdr(const struct digest *d, const char *hdr, uint64_t now_ms,
                               bool is_stale, int challenges, char *buf, size_t cap)
{
    char nonce[DIGEST_NONCE_LEN + 1];
    digest_nonce_make(d, now_ms, nonce, sizeof(nonce));
    const char *stale = is_stale ? ", stale=true" : "";
    /*
     * RFC 7616 §3.7 lists challenges by preference, but deployed clients differ: sipp and
     * many phones answer the first one whatever its algorithm, JsSIP and SIP.js the last
     * one and only with MD5. So the policy says which to send, MD5 alone by default.
     */
    static const char *const algs[4][2] = {
        {"MD5", NULL}, {"SHA-256", NULL}, {"MD5", "SHA-256"}, {"SHA-256", "MD5"}};
    if (challenges < 0 || challenges > 3)
        challenges = 0;
    int n = 0;
    for (int i = 0; i < 2 && algs[challenges][i]; i++) {
        if ((size_t)n >= cap)
            return -ENOSPC;
        int k = snprintf(buf + n, cap - (size_t)n,
                         "%s: Digest realm=\"%s\", nonce=\"%s\", qop=\"auth\", "
                         "algorithm=%s%s\r\n",
                         hdr, d->realm, nonce, algs[challenges][i], stale);
        if (k < 0)
            return -ENOSPC;
        n += k;
    }
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}
