/*
 * edge_state: the edge's flows across restarts.
 *
 * A snapshot (edge_state_save, edge_state_save_step) holds the live UDP flows with a
 * confirmed registration and their records; a journal (edge_journal_*) appends each
 * change to them between snapshots. Restoring checks the whole payload before creating
 * anything, so a malformed file is never half-loaded.
 */
#include "sipedge/edge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/guard.h"
#include "sipedge/statefile.h"

/* ---- persistence -------------------------------------------------------------------- */

/*
 * Snapshot payload, version 1 (statefile integers, big-endian):
 *   u32 flow count | flows
 *   flow: u8 sock | u8 is_nat | u8 family (4/6) | 16 address bytes | u16 port |
 *         u64 last received | u64 registration expiry | u16 record count | records
 *   record: u64 expiry | u32 cseq | u8 is_authed | u8 is_aliased |
 *           str aor | str call_id | str contacts | str user_agent
 * Times are wall-clock milliseconds (CLOCK_REALTIME), so the monotonic clock of the next
 * run does not matter and the time sipedge was down is taken off. Only live UDP flows
 * with a confirmed registration are kept: a WebSocket flow ends with its connection, and
 * an unregistered flow is re-created by the client's next packet anyway.
 */
/* Monotonic time t as wall-clock time, given both clocks now. */
static uint64_t to_wall(uint64_t t, uint64_t now_ms, uint64_t wall)
{
    return t >= now_ms ? wall + (t - now_ms) : wall > now_ms - t ? wall - (now_ms - t) : 0;
}

static void put_flow_key(const struct flow *f, struct statefile_buf *b);

static void save_flow(const struct flow *f, uint64_t now_ms, uint64_t wall, struct statefile_buf *b)
{
    statefile_put_u8(b, f->is_nat);
    put_flow_key(f, b);
    statefile_put_u64(b, to_wall(f->last_rx_ms, now_ms, wall));
    statefile_put_u64(b, to_wall(f->reg_until_ms, now_ms, wall));
    uint16_t nr = 0;
    for (const struct flow_reg *r = f->regs; r; r = r->next)
        nr += r->until_ms > now_ms;
    statefile_put_u16(b, nr);
    for (const struct flow_reg *r = f->regs; r; r = r->next) {
        if (r->until_ms <= now_ms)
            continue;
        statefile_put_u64(b, to_wall(r->until_ms, now_ms, wall));
        statefile_put_u32(b, r->cseq);
        statefile_put_u8(b, r->is_authed);
        statefile_put_u8(b, r->is_aliased);
        statefile_put_str(b, r->aor);
        statefile_put_str(b, r->call_id);
        char contacts[URI_LIST_TEXT_MAX];
        uri_list_format(&r->contacts, contacts, sizeof(contacts));
        statefile_put_str(b, contacts);
        statefile_put_str(b, r->user_agent);
    }
}

/* Journal records: a flow's whole persisted state, or its end. */
#define JOURNAL_FLOW 1
#define JOURNAL_DROP 2

static void put_flow_key(const struct flow *f, struct statefile_buf *b)
{
    statefile_put_u8(b, f->sock);
    uint8_t a[16] = {0};
    if (f->remote.sa.sa_family == AF_INET) {
        memcpy(a, &f->remote.in.sin_addr, 4);
        statefile_put_u8(b, 4);
        statefile_put_bytes(b, a, 16);
        statefile_put_u16(b, ntohs(f->remote.in.sin_port));
    } else {
        statefile_put_u8(b, 6);
        statefile_put_bytes(b, &f->remote.in6.sin6_addr, 16);
        statefile_put_u16(b, ntohs(f->remote.in6.sin6_port));
    }
}

/* A UDP flow's confirmed registrations changed: its whole state goes to the journal. */
void edge_journal_flow(struct edge *e, const struct flow *f, uint64_t now_ms)
{
    if (!e->is_journaling || f->transport != FLOW_UDP || f->state != FLOW_LIVE)
        return;
    statefile_put_u8(&e->journal, JOURNAL_FLOW);
    save_flow(f, now_ms, statefile_wall_ms(), &e->journal);
}

void edge_journal_drop(struct edge *e, const struct flow *f)
{
    if (!e->is_journaling || f->transport != FLOW_UDP)
        return;
    statefile_put_u8(&e->journal, JOURNAL_DROP);
    put_flow_key(f, &e->journal);
}

void edge_journal_enable(struct edge *e, bool on)
{
    e->is_journaling = on;
}

size_t edge_journal_take(struct edge *e, struct statefile_buf *out)
{
    *out = e->journal;
    statefile_buf_init(&e->journal);
    return out->len;
}

int edge_state_save_step(const struct edge *e, uint64_t now_ms, struct statefile_buf *b,
                         struct edge_snapshot *cur, uint32_t max_slots)
{
    if (!cur->is_started) {
        cur->is_started = true;
        cur->next_slot = 0;
        cur->n_flows = 0;
        cur->count_at = b->len;
        statefile_put_u32(b, 0); /* patched when the walk ends */
    }
    uint64_t wall = statefile_wall_ms();
    uint32_t cap = flow_table_capacity(e->flows);
    uint32_t end = max_slots && cap - cur->next_slot > max_slots ? cur->next_slot + max_slots : cap;
    for (uint32_t i = cur->next_slot; i < end; i++) {
        const struct flow *f = flow_table_get_slot(e->flows, i);
        if (!f || f->state != FLOW_LIVE || f->transport != FLOW_UDP || f->reg_until_ms <= now_ms)
            continue;
        save_flow(f, now_ms, wall, b);
        cur->n_flows++;
    }
    cur->next_slot = end;
    if (b->err)
        return b->err;
    if (end < cap)
        return 0;
    uint32_t n = cur->n_flows;
    uint8_t be[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(b->p + cur->count_at, be, 4);
    return 1;
}

int edge_state_save(const struct edge *e, uint64_t now_ms, struct statefile_buf *b)
{
    struct edge_snapshot cur = {0};
    int rc = edge_state_save_step(e, now_ms, b, &cur, 0);
    return rc < 0 ? rc : (int)cur.n_flows;
}

/* Time left until wall-clock time t, at wall; 0 when past. */
static uint64_t wall_left(uint64_t t, uint64_t wall)
{
    return t > wall ? t - wall : 0;
}

/* Reads a flow key (socket and address); -EBADMSG when malformed. */
static int get_flow_key(struct statefile_rd *rd, uint8_t *sock, union flow_addr *addr)
{
    *sock = statefile_get_u8(rd);
    uint8_t fam = statefile_get_u8(rd);
    uint8_t a[16];
    statefile_get_bytes(rd, a, 16);
    uint16_t port = statefile_get_u16(rd);
    if (rd->err || (fam != 4 && fam != 6))
        return -EBADMSG;
    memset(addr, 0, sizeof(*addr));
    if (fam == 4) {
        addr->in.sin_family = AF_INET;
        memcpy(&addr->in.sin_addr, a, 4);
        addr->in.sin_port = htons(port);
    } else {
        addr->in6.sin6_family = AF_INET6;
        memcpy(&addr->in6.sin6_addr, a, 16);
        addr->in6.sin6_port = htons(port);
    }
    return 0;
}

/* Forgets a restored flow that the journal replaces or ends. */
static void restored_flow_release(struct edge *e, struct flow *f)
{
    if (f->state != FLOW_LIVE)
        return;
    if (e->guard)
        guard_flow_remove(e->guard, &f->remote.sa);
    flow_regs_free(f);
    flow_table_release(e->flows, f);
}

/*
 * Reads one flow record, and with apply into a fresh flow; returns 1 restored, 0 skipped,
 * <0 malformed. With replace (journal), a flow already there for that address is
 * replaced by the record; without, it is kept and the record skipped.
 */
static int restore_flow(struct edge *e, struct statefile_rd *rd, bool apply, bool replace,
                        uint64_t wall, uint64_t now_ms, uint32_t *n_regs)
{
    bool is_nat = statefile_get_u8(rd) != 0;
    uint8_t sock;
    union flow_addr addr;
    if (get_flow_key(rd, &sock, &addr) < 0)
        return -EBADMSG;
    uint64_t last_rx = statefile_get_u64(rd);
    uint64_t reg_left = wall_left(statefile_get_u64(rd), wall);
    uint16_t nr = statefile_get_u16(rd);
    if (rd->err || nr > FLOW_REGS_MAX)
        return -EBADMSG;
    struct flow *f = NULL;
    struct flow *old = apply ? flow_table_find(e->flows, FLOW_UDP, sock, &addr.sa) : NULL;
    if (old && replace) {
        restored_flow_release(e, old);
        old = NULL;
    }
    bool keep = apply && sock < e->cfg->n_listen_udp && reg_left > 0 && nr > 0 && !old;
    if (keep && e->guard && guard_flow_add(e->guard, &addr.sa, now_ms) < 0)
        keep = false;
    if (keep && flow_table_add(e->flows, e->keys, FLOW_UDP, sock, &addr.sa, now_ms, &f) < 0) {
        if (e->guard)
            guard_flow_remove(e->guard, &addr.sa);
        keep = false;
    }
    if (f) {
        uint64_t idle = wall > last_rx ? wall - last_rx : 0;
        f->is_nat = is_nat;
        f->last_rx_ms = now_ms > idle ? now_ms - idle : 0;
        f->reg_until_ms = now_ms + reg_left;
    }
    for (uint16_t i = 0; i < nr; i++) {
        struct flow_reg tmp;
        memset(&tmp, 0, sizeof(tmp));
        uint64_t left = wall_left(statefile_get_u64(rd), wall);
        tmp.cseq = statefile_get_u32(rd);
        tmp.is_authed = statefile_get_u8(rd) != 0;
        tmp.is_aliased = statefile_get_u8(rd) != 0;
        statefile_get_str(rd, tmp.aor, sizeof(tmp.aor));
        statefile_get_str(rd, tmp.call_id, sizeof(tmp.call_id));
        char contacts[URI_LIST_TEXT_MAX];
        statefile_get_str(rd, contacts, sizeof(contacts));
        /* The URIs that fit a record; the rest of an oversized list is not kept. */
        (void)uri_list_parse(&tmp.contacts, contacts);
        statefile_get_str(rd, tmp.user_agent, sizeof(tmp.user_agent));
        if (rd->err)
            return -EBADMSG;
        if (!f || left == 0)
            continue;
        struct flow_reg *r = malloc(sizeof(*r));
        if (!r)
            continue;
        *r = tmp;
        r->until_ms = now_ms + left;
        r->cache_epoch = e->regcache_epoch;
        r->next = f->regs;
        f->regs = r;
        (*n_regs)++;
    }
    if (f) {
        e->st.flows_created++;
        edge_flow_event(e, EDGE_FLOW_OPENED, f, "udp-restored");
    }
    return f ? 1 : 0;
}

int edge_state_restore(struct edge *e, const uint8_t *p, size_t len, uint32_t version,
                       uint64_t now_ms, struct edge_restore_result *res, char *err, size_t cap)
{
    memset(res, 0, sizeof(*res));
    if (version != EDGE_STATE_VERSION) {
        snprintf(err, cap, "format version %u is not %u", version, EDGE_STATE_VERSION);
        return -EPROTONOSUPPORT;
    }
    struct statefile_rd rd;
    statefile_rd_init(&rd, p, len);
    uint32_t n = statefile_get_u32(&rd);
    uint64_t wall = statefile_wall_ms();
    size_t body = rd.off;
    /* The whole payload is checked before anything is created: never half-loaded. */
    for (uint32_t i = 0; i < n; i++) {
        if (restore_flow(e, &rd, false, false, wall, now_ms, &res->n_regs) < 0) {
            snprintf(err, cap, "malformed flow record %u of %u", i + 1, n);
            return -EBADMSG;
        }
    }
    if (!statefile_rd_done(&rd)) {
        snprintf(err, cap, "%zu bytes after the last flow record", rd.len - rd.off);
        return -EBADMSG;
    }
    rd.off = body;
    res->n_regs = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (restore_flow(e, &rd, true, false, wall, now_ms, &res->n_regs) > 0)
            res->n_flows++;
        else
            res->n_skipped++;
    }
    return 0;
}

/* Applies (apply) or only checks one journal chunk. */
static int journal_pass(struct edge *e, const uint8_t *p, size_t len, bool apply, uint64_t now_ms,
                        struct edge_restore_result *res)
{
    struct statefile_rd rd;
    statefile_rd_init(&rd, p, len);
    uint64_t wall = statefile_wall_ms();
    while (rd.off < rd.len) {
        uint8_t type = statefile_get_u8(&rd);
        if (type == JOURNAL_FLOW) {
            int rc = restore_flow(e, &rd, apply, true, wall, now_ms, &res->n_regs);
            if (rc < 0)
                return rc;
            res->n_flows += rc > 0;
        } else if (type == JOURNAL_DROP) {
            uint8_t sock;
            union flow_addr addr;
            if (get_flow_key(&rd, &sock, &addr) < 0)
                return -EBADMSG;
            struct flow *f = apply ? flow_table_find(e->flows, FLOW_UDP, sock, &addr.sa) : NULL;
            if (f) {
                restored_flow_release(e, f);
                res->n_skipped++;
            }
        } else {
            return -EBADMSG;
        }
    }
    return statefile_rd_done(&rd) ? 0 : -EBADMSG;
}

int edge_journal_replay(struct edge *e, const uint8_t *p, size_t len, uint64_t now_ms,
                        struct edge_restore_result *res)
{
    struct edge_restore_result dry = {0};
    if (journal_pass(e, p, len, false, now_ms, &dry) < 0)
        return -EBADMSG;
    return journal_pass(e, p, len, true, now_ms, res);
}
