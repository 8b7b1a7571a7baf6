/*
 * registrar: REGISTER processing (RFC 3261 §10.3), digest challenges (RFC 7616), and
 * stateless routing to registered contacts through their Path (RFC 3261 §16.11,
 * RFC 3327 §5.3). See include/sipedge/registrar.h for the contract.
 *
 * Everything works on one received datagram at a time; the only per-message memory is
 * the registrar's preallocated header array and output buffers.
 *
 * This file holds the interface (registrar_new, registrar_free, registrar_handle,
 * registrar_tick, registrar_set_policy, the stats), the persistence of the bindings
 * in the SQLite store, and the few helpers both halves of the work use (AOR text,
 * binding preference, sending and stateless replies). REGISTER handling is in
 * reg_register.c, the routing of every other request and of responses in
 * reg_route.c; what they share is declared in registrar_priv.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "registrar/reg_store.h"
#include "registrar/registrar_priv.h"
#include "sipedge/flow_token.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/registrar.h"
#include "sipedge/sip_check.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"
#include "sipedge/sip_reply.h"
#include "sipedge/siphash.h"
#include "sipedge/statefile.h"

/* ---- small helpers ----------------------------------------------------------------- */

/* "user@host" with the host lower-cased (RFC 3261 §19.1.4: hosts compare without case). */
int reg_aor_make(struct slice user, struct slice host, char *out, size_t cap)
{
    if (user.len == 0 || host.len == 0 || user.len + host.len + 2 > cap)
        return -EINVAL;
    memcpy(out, user.p, user.len);
    out[user.len] = '@';
    char *h = out + user.len + 1;
    for (size_t i = 0; i < host.len; i++) {
        char c = host.p[i];
        h[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    h[host.len] = '\0';
    return 0;
}

/* Bindings without q rank as 1.0 (the highest preference). */
static unsigned q_rank(const struct location_binding *b)
{
    return b->q == LOCATION_Q_NONE ? 1000 : b->q;
}

/* True when a should be tried before b: higher q, then the more recent registration. */
bool reg_binding_before(const struct location_binding *a, const struct location_binding *b)
{
    if (q_rank(a) != q_rank(b))
        return q_rank(a) > q_rank(b);
    return a->updated_ms > b->updated_ms;
}

/* ---- sending ----------------------------------------------------------------------- */

bool reg_begin(struct registrar *r, struct tx_dest *d, const struct sockaddr *dst,
               struct sip_build *b)
{
    size_t cap;
    *d = tx_dest_udp(r->sock, dst);
    char *buf = r->out.reserve(r->out.ctx, d, &cap);
    if (!buf) {
        r->stats.send_errors++;
        return false;
    }
    sip_build_init(b, buf, cap);
    return true;
}

bool reg_send(struct registrar *r, const struct tx_dest *d, struct sip_build *b)
{
    size_t len;
    bool ok = sip_build_finish(b, &len) == 0;
    if (!ok) {
        r->stats.send_errors++;
        len = 0;
    }
    if (r->out.commit(r->out.ctx, d, len) < 0)
        r->stats.send_errors++;
    return ok;
}

/*
 * Stateless response to the request's source (RFC 3581 semantics: the edge, or any
 * peer, gets the answer where the request came from). received/rport are added to the
 * top Via when the request asked for rport.
 */
void reg_reply(struct req *q, int status, const char *reason, const char *extra)
{
    struct registrar *r = q->r;
    if (q->m->method_id == SIP_METHOD_ACK)
        return; /* ACK never gets a response (RFC 3261 §17.1.1.3) */
    struct sip_reply_opts opts = {.extra = extra};
    char ip[INET6_ADDRSTRLEN];
    unsigned port = 0;
    const struct sip_hdr *vh = sip_msg_hdr(q->m, SIP_HDR_VIA);
    struct sip_via via;
    struct slice rest;
    if (vh && sip_via_parse(vh->value, &via, &rest) == 0 && via.has_rport && via.rport.len == 0 &&
        netaddr_ip(q->src, ip, sizeof(ip), &port)) {
        opts.received = ip;
        opts.rport = port;
    }
    struct tx_dest d;
    struct sip_build b;
    if (!reg_begin(r, &d, q->src, &b))
        return;
    int n = sip_reply_build(q->m, status, reason, &opts, b.buf, b.cap);
    if (n <= 0)
        r->stats.send_errors++;
    if (r->out.commit(r->out.ctx, &d, n > 0 ? (size_t)n : 0) < 0)
        r->stats.send_errors++;
}

/* ---- interface --------------------------------------------------------------------- */

/* Keys r->sb_keys with key (REGISTRAR_BRANCH_KEY_LEN bytes) or, when NULL, a random one.
 * Returns 0 or -ENOMEM. */
static int sb_mac_new(struct registrar *r, const uint8_t *key)
{
    uint8_t k[REGISTRAR_BRANCH_KEY_LEN];
    if (key)
        memcpy(k, key, sizeof(k));
    else if (RAND_bytes(k, sizeof(k)) != 1)
        return -ENOMEM;
    int rc = flow_token_keys_new(&r->sb_keys, k, NULL);
    /* The branch key comes from the same secret, so branches survive a restart with it. */
    uint64_t a, b;
    memcpy(&a, k, sizeof(a));
    memcpy(&b, k + sizeof(a), sizeof(b));
    r->branch_k0 = siphash13(a, b, "branch.0", 8);
    r->branch_k1 = siphash13(a, b, "branch.1", 8);
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

/* ---- persistence ------------------------------------------------------------------- */

/* Unix time in ms: SQLite rows store expiry against it, so a restart keeps the time left. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct restore {
    struct registrar *r;
    int64_t wall_ms;
    size_t n_restored, n_expired, n_refused;
};

/* One stored row back into the table, its times still unix ms (rebase_times converts
 * them once now_ms is known). Expired rows and rows the table has no room for are left
 * out, and so deleted by the rewrite that follows. */
static int restore_row(void *ctx, const struct location_binding *src, int64_t expires_unix_ms,
                       int64_t updated_unix_ms)
{
    struct restore *rs = ctx;
    struct registrar *r = rs->r;
    if (expires_unix_ms <= rs->wall_ms) {
        rs->n_expired++;
        return 0;
    }
    struct location_binding *b;
    if (location_add(r->loc, src->aor, &b) != 0) {
        rs->n_refused++; /* a smaller table than the one that wrote the file */
        return 0;
    }
    memcpy(b->contact, src->contact, sizeof(b->contact));
    b->q = src->q;
    /* A clock set back must not make a binding outlive the longest expires we grant. */
    int64_t max_left = (int64_t)r->policy.max_expires_s * 1000;
    if (expires_unix_ms - rs->wall_ms > max_left)
        expires_unix_ms = rs->wall_ms + max_left;
    b->expires_at_ms = (uint64_t)expires_unix_ms;
    b->updated_ms = updated_unix_ms > 0 ? (uint64_t)updated_unix_ms : 0;
    memcpy(b->call_id, src->call_id, sizeof(b->call_id));
    b->cseq = src->cseq;
    memcpy(b->path, src->path, sizeof(b->path));
    b->received = src->received;
    b->received_len = src->received_len;
    memcpy(b->instance, src->instance, sizeof(b->instance));
    b->reg_id = src->reg_id;
    b->has_reg_id = src->has_reg_id;
    memcpy(b->user_agent, src->user_agent, sizeof(b->user_agent));
    rs->n_restored++;
    return 0;
}

/*
 * Rows are keyed by slot, and the restored bindings got new slots: the table is
 * rewritten under them in the transaction that read it, so a crash during start-up
 * leaves the old rows or the new ones. Returns 0 or a negative errno (err filled).
 */
static int store_restore(struct registrar *r, char *err, size_t errcap)
{
    struct restore rs = {.r = r, .wall_ms = wall_ms()};
    int rc = reg_store_begin(r->store);
    if (rc == 0)
        rc = reg_store_load(r->store, restore_row, &rs, err, errcap);
    if (rc == 0)
        rc = reg_store_clear(r->store);
    for (uint32_t i = 0; rc == 0 && i < location_n_slots(r->loc); i++) {
        const struct location_binding *b = location_slot(r->loc, i);
        if (b->is_used)
            rc = reg_store_put(r->store, b, 0);
    }
    if (rc == 0)
        rc = reg_store_commit(r->store);
    if (rc != 0) {
        if (!err[0])
            snprintf(err, errcap, "registrar store %s: cannot rewrite the bindings: %s",
                     reg_store_path(r->store), reg_store_errmsg(r->store));
        reg_store_rollback(r->store);
        return -EIO;
    }
    location_changes_clear(r->loc); /* what the table holds is what the file holds */
    r->is_rebase_pending = rs.n_restored > 0;
    log_info("registrar: %s: %zu bindings restored, %zu expired dropped, %zu did not fit",
             reg_store_path(r->store), rs.n_restored, rs.n_expired, rs.n_refused);
    return 0;
}

/* Opens the store and loads it. Fresh generations first: a (slot, gen) that a request
 * routed by the previous process carries in sb= must not name a restored binding. */
static int store_start(struct registrar *r, const char *path, char *err, size_t errcap)
{
    uint32_t gen;
    if (RAND_bytes((unsigned char *)&gen, sizeof(gen)) != 1)
        return -ENOMEM;
    location_seed_gen(r->loc, gen);
    int rc = location_track(r->loc);
    if (rc != 0)
        return rc;
    rc = reg_store_open(&r->store, path, err, errcap);
    if (rc == 0)
        rc = store_restore(r, err, errcap);
    return rc;
}

/* Restored times are unix ms until the first now_ms: moved onto that clock here. */
static void rebase_times(struct registrar *r, uint64_t now_ms)
{
    r->now_ms = now_ms;
    if (!r->is_rebase_pending)
        return;
    r->is_rebase_pending = false;
    int64_t offset = wall_ms() - (int64_t)now_ms;
    for (uint32_t i = 0; i < location_n_slots(r->loc); i++) {
        struct location_binding *b = location_slot(r->loc, i);
        if (!b->is_used)
            continue;
        int64_t e = (int64_t)b->expires_at_ms - offset, u = (int64_t)b->updated_ms - offset;
        b->expires_at_ms = e > 0 ? (uint64_t)e : 0;
        b->updated_ms = u > 0 ? (uint64_t)u : 0;
    }
}

int registrar_flush(struct registrar *r)
{
    if (!r->store)
        return 0;
    size_t n;
    const uint32_t *changed = location_changes(r->loc, &n);
    if (n == 0)
        return 0;
    /* Every change was made at most one flush interval before r->now_ms was taken, so
     * this maps its monotonic times to the wall clock within that interval. */
    int64_t offset = wall_ms() - (int64_t)r->now_ms;
    int rc = reg_store_begin(r->store);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct location_binding *b = location_slot(r->loc, changed[i]);
        rc = b->is_used ? reg_store_put(r->store, b, offset) : reg_store_del(r->store, b->slot);
    }
    if (rc == 0)
        rc = reg_store_commit(r->store);
    if (rc != 0) {
        /* The changes stay queued: the next flush writes them. */
        if (!r->is_store_failing)
            log_error("registrar store %s: cannot write %zu changes: %s", reg_store_path(r->store),
                      n, reg_store_errmsg(r->store));
        r->is_store_failing = true;
        reg_store_rollback(r->store);
        return rc;
    }
    if (r->is_store_failing)
        log_info("registrar store %s: writing again", reg_store_path(r->store));
    r->is_store_failing = false;
    location_changes_clear(r->loc);
    return 0;
}

/* ---- interface --------------------------------------------------------------------- */

int registrar_new(struct registrar **out, const struct registrar_opts *opts, char *err,
                  size_t errcap)
{
    if (!out || !opts || !opts->self || !opts->policy || !opts->out.reserve || !opts->out.commit ||
        (opts->n_trusted && !opts->trusted) || (opts->n_peers && !opts->peers)) {
        snprintf(err, errcap, "registrar: bad options");
        return -EINVAL;
    }
    const struct policy *pol = opts->policy;
    const char *realm = opts->realm ? opts->realm : opts->self->host;
    if (strlen(realm) >= sizeof(((struct registrar *)0)->realm) || pol->max_bindings == 0 ||
        pol->max_contacts_per_aor == 0 || pol->min_expires_s > pol->max_expires_s) {
        snprintf(err, errcap, "registrar: bad realm or policy bounds");
        return -EINVAL;
    }
    struct registrar *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = 0;
    r->self = *opts->self;
    snprintf(r->realm, sizeof(r->realm), "%s", realm);
    r->policy = *pol;
    r->out = opts->out;
    r->sock = opts->sock;
    r->max_hdrs = pol->max_headers ? pol->max_headers : REGISTRAR_DEFAULT_HEADERS;
    r->found_cap = pol->max_contacts_per_aor;
    r->hdrs = calloc(r->max_hdrs, sizeof(*r->hdrs));
    r->found = calloc(r->found_cap, sizeof(*r->found));
    if (opts->n_trusted) {
        r->trusted = calloc(opts->n_trusted, sizeof(*r->trusted));
        if (r->trusted) {
            memcpy(r->trusted, opts->trusted, opts->n_trusted * sizeof(*r->trusted));
            r->n_trusted = opts->n_trusted;
        }
    }
    if (opts->n_peers) {
        r->peers = calloc(opts->n_peers, sizeof(*r->peers));
        if (r->peers) {
            memcpy(r->peers, opts->peers, opts->n_peers * sizeof(*r->peers));
            r->n_peers = opts->n_peers;
        }
    }
    if (!r->hdrs || !r->found || (opts->n_trusted && !r->trusted) || (opts->n_peers && !r->peers)) {
        rc = -ENOMEM;
        goto out;
    }
    rc = sb_mac_new(r, opts->branch_key);
    if (rc != 0)
        goto out;
    rc = location_new(&r->loc, pol->max_bindings, pol->max_contacts_per_aor);
    if (rc != 0)
        goto out;
    if (opts->users_file)
        rc = digest_new(&r->dig, opts->users_file, r->realm, err, errcap);
    if (rc == 0 && r->dig)
        digest_nc_size(r->dig, opts->nonce_count_slots);
    if (rc == 0 && opts->db_path)
        rc = store_start(r, opts->db_path, err, errcap);
out:
    if (rc != 0) {
        if (rc == -ENOMEM)
            snprintf(err, errcap, "registrar: out of memory");
        registrar_free(r);
        return rc == -ENOMEM || rc == -EIO || rc == -EPROTO ? rc : -EINVAL;
    }
    *out = r;
    return 0;
}

void registrar_free(struct registrar *r)
{
    if (!r)
        return;
    reg_store_close(r->store);
    digest_free(r->dig);
    flow_token_keys_free(r->sb_keys);
    location_free(r->loc);
    free(r->trusted);
    free(r->peers);
    free(r->found);
    free(r->hdrs);
    free(r);
}

void registrar_handle(struct registrar *r, const char *buf, size_t len, const struct sockaddr *src,
                      socklen_t src_len, uint64_t now_ms)
{
    rebase_times(r, now_ms);
    struct sip_msg m;
    struct sip_err err = {0};
    struct sip_limits limits = {
        .max_msg_bytes = r->policy.max_message_bytes ? r->policy.max_message_bytes : 65535,
        .max_headers = r->max_hdrs,
    };
    if (sip_msg_parse(&m, buf, len, r->hdrs, &limits, &err) != 0) {
        /* The parser gives no message to answer from on failure; the edge in front has
         * already answered 400 to clients, so dropping here costs nothing. */
        r->stats.dropped_bad++;
        log_debug("registrar: unparsable message dropped: %s", err.reason ? err.reason : "?");
        return;
    }
    if (sip_check_view(&m, &err, &r->view) != 0) {
        r->stats.dropped_bad++;
        if (m.is_request && m.method_id != SIP_METHOD_ACK && err.status >= 400) {
            struct req bad = {.r = r, .m = &m, .src = src, .src_len = src_len, .now_ms = now_ms};
            reg_reply(&bad, err.status, err.reason ? err.reason : "Bad Request", NULL);
        }
        return;
    }
    if (!m.is_request) {
        reg_handle_response(r, &m, &r->view, src);
        return;
    }
    struct req q = {
        .r = r, .m = &m, .v = &r->view, .src = src, .src_len = src_len, .now_ms = now_ms};
    if (m.method_id == SIP_METHOD_REGISTER)
        reg_handle_register(&q);
    else
        reg_handle_request(&q);
}

void registrar_tick(struct registrar *r, uint64_t now_ms)
{
    rebase_times(r, now_ms);
    size_t n = location_expire(r->loc, now_ms);
    if (n) {
        r->stats.expired += n;
        log_debug("registrar: %zu bindings expired", n);
    }
}

void registrar_set_policy(struct registrar *r, const struct policy *pol)
{
    if (pol->min_expires_s > pol->max_expires_s) {
        log_warn("registrar: policy with min_expires above max_expires ignored");
        return;
    }
    /* The location pool, per-AOR scratch and header array were sized by registrar_new
     * and are not reallocated under live bindings: those bounds keep their values. */
    struct policy keep = r->policy;
    r->policy = *pol;
    r->policy.max_bindings = keep.max_bindings;
    r->policy.max_contacts_per_aor = keep.max_contacts_per_aor;
    r->policy.max_headers = keep.max_headers;
}

size_t registrar_n_bindings(const struct registrar *r)
{
    return location_count(r->loc);
}

void registrar_stats(const struct registrar *r, struct registrar_stats *out)
{
    *out = r->stats;
    if (r->dig)
        out->nc_table_full = digest_nc_full(r->dig);
}
