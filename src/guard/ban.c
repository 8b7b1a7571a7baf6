/*
 * ban: the ban engine (ladder, mirror, bound) in front of a backend.
 *
 * One table holds live bans and history (expired bans remembered for escalation). History
 * is what gets reclaimed when the table is full; live bans never are, so an attacker who
 * fills the table cannot free a ban by forcing new ones: the new ban is refused instead.
 * History entries sit on a FIFO (linked through pool indices, in the order they became
 * history), so reclaiming takes its head in O(1) instead of scanning the table.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "guard/ban_backend.h"
#include "guard/guard_internal.h"
#include "sipedge/ban.h"
#include "sipedge/keytab.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"

struct ban_slot {
    struct ban_key key; /* must stay first: the table key */
    bool is_live;
    uint8_t level;
    uint8_t origin;
    uint32_t duration_s;
    uint64_t since_ms;
    uint64_t expires_ms;
    uint64_t last_ban_ms; /* start of the latest ban, for the escalation memory */
    uint32_t hist_prev;   /* history FIFO: pool index + 1 of the neighbours, 0 = none */
    uint32_t hist_next;
};

struct ban {
    struct keytab tab;
    uint32_t ladder_s[POLICY_MAX_BAN_STEPS];
    unsigned n_steps;
    uint64_t memory_ms;
    struct ban_backend *be;
    struct ban_stats stats;
    uint32_t hist_head, hist_tail; /* pool index + 1; head = oldest history entry */
    uint64_t reclaim_steps;
};

static int check_ladder(const uint32_t *ladder_s, unsigned n_steps)
{
    if (ladder_s == NULL || n_steps == 0 || n_steps > POLICY_MAX_BAN_STEPS)
        return -EINVAL;
    for (unsigned i = 0; i < n_steps; i++)
        if (ladder_s[i] == 0)
            return -EINVAL;
    return 0;
}

int ban_new(struct ban **out, uint32_t cap, const uint32_t *ladder_s, unsigned n_steps,
            uint32_t memory_s, struct ban_backend *be)
{
    int rc = -EINVAL;
    struct ban *b = NULL;
    if (out == NULL || check_ladder(ladder_s, n_steps) != 0 || cap == 0)
        goto fail;
    rc = -ENOMEM;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        goto fail;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
        seed = (uint64_t)(uintptr_t)b ^ 0x5bd1e995u;
    rc = keytab_init(&b->tab, sizeof(struct ban_key), sizeof(struct ban_slot), cap, seed);
    if (rc != 0)
        goto fail;
    memcpy(b->ladder_s, ladder_s, n_steps * sizeof(*ladder_s));
    b->n_steps = n_steps;
    b->memory_ms = (uint64_t)memory_s * 1000;
    b->be = be;
    *out = b;
    return 0;
fail:
    free(b);
    return rc;
}

void ban_attach_backend(struct ban *b, struct ban_backend *be)
{
    b->be = be;
}

void ban_backend_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx)
{
    if (be != NULL)
        be->ops->close(be, cb, ctx);
    else if (cb != NULL)
        cb(ctx);
}

struct ban_backend *ban_backend_of(const struct ban *b)
{
    return b->be;
}

void ban_free(struct ban *b)
{
    if (b == NULL)
        return;
    keytab_deinit(&b->tab);
    free(b);
}

int ban_set_limits(struct ban *b, uint32_t cap, const uint32_t *ladder_s, unsigned n_steps,
                   uint32_t memory_s)
{
    if (check_ladder(ladder_s, n_steps) != 0 || cap == 0)
        return -EINVAL;
    int rc = keytab_set_cap(&b->tab, cap);
    if (rc != 0)
        return rc;
    memcpy(b->ladder_s, ladder_s, n_steps * sizeof(*ladder_s));
    b->n_steps = n_steps;
    b->memory_ms = (uint64_t)memory_s * 1000;
    return 0;
}

static bool key_ok(const struct ban_key *k)
{
    return k != NULL && (k->family == AF_INET || k->family == AF_INET6) && k->pad == 0;
}

static void fill_entry(const struct ban_slot *s, struct ban_entry *out)
{
    out->key = s->key;
    out->since_ms = s->since_ms;
    out->expires_ms = s->expires_ms;
    out->duration_s = s->duration_s;
    out->level = s->level;
    out->origin = (enum ban_origin)s->origin;
}

static struct ban_slot *live_slot(const struct ban *b, const struct ban_key *key, uint64_t now)
{
    struct ban_slot *s = keytab_find(&b->tab, key);
    if (s == NULL || !s->is_live || s->expires_ms <= now)
        return NULL;
    return s;
}

static uint32_t slot_ref(const struct ban *b, const struct ban_slot *s)
{
    return (uint32_t)(((const unsigned char *)s - b->tab.pool) / b->tab.entry_size) + 1;
}

static struct ban_slot *slot_of(const struct ban *b, uint32_t ref)
{
    return ref == 0 ? NULL : keytab_at(&b->tab, ref - 1);
}

/* A live ban becomes history: appended to the FIFO and counted. */
static void hist_push(struct ban *b, struct ban_slot *s)
{
    uint32_t r = slot_ref(b, s);
    s->is_live = false;
    s->hist_next = 0;
    s->hist_prev = b->hist_tail;
    if (b->hist_tail != 0)
        slot_of(b, b->hist_tail)->hist_next = r;
    else
        b->hist_head = r;
    b->hist_tail = r;
    b->stats.n_history++;
}

/* A history entry leaves the FIFO (banned again or about to be removed). */
static void hist_unlink(struct ban *b, struct ban_slot *s)
{
    if (s->hist_prev != 0)
        slot_of(b, s->hist_prev)->hist_next = s->hist_next;
    else
        b->hist_head = s->hist_next;
    if (s->hist_next != 0)
        slot_of(b, s->hist_next)->hist_prev = s->hist_prev;
    else
        b->hist_tail = s->hist_prev;
    s->hist_prev = s->hist_next = 0;
    b->stats.n_history--;
}

/* Frees the entry that became history first; false when every entry is a live ban. O(1). */
static bool reclaim_history(struct ban *b)
{
    struct ban_slot *oldest = slot_of(b, b->hist_head);
    if (oldest == NULL)
        return false;
    b->reclaim_steps++;
    hist_unlink(b, oldest);
    keytab_remove(&b->tab, oldest);
    return true;
}

uint64_t ban_reclaim_steps(const struct ban *b)
{
    return b->reclaim_steps;
}

static struct ban_slot *slot_get(struct ban *b, const struct ban_key *key, bool *is_new)
{
    struct ban_slot *s = keytab_find(&b->tab, key);
    *is_new = s == NULL;
    if (s != NULL)
        return s;
    s = keytab_insert(&b->tab, key);
    if (s == NULL && reclaim_history(b))
        s = keytab_insert(&b->tab, key);
    return s;
}

int ban_impose(struct ban *b, const struct ban_key *key, uint32_t duration_s,
               enum ban_origin origin, uint64_t now_ms, struct ban_entry *out)
{
    if (b == NULL || !key_ok(key))
        return -EINVAL;
    bool is_new;
    struct ban_slot *s = slot_get(b, key, &is_new);
    if (s == NULL) {
        b->stats.n_refused_full++;
        return -ENOSPC;
    }
    bool was_live = !is_new && s->is_live;
    uint8_t level = 0;
    if (!is_new && now_ms - s->last_ban_ms <= b->memory_ms) {
        level = s->level;
        if (duration_s == 0 && level + 1u < b->n_steps)
            level++;
    }
    if (!is_new && !s->is_live)
        hist_unlink(b, s);
    if (duration_s == 0)
        duration_s = b->ladder_s[level < b->n_steps ? level : b->n_steps - 1];
    s->is_live = true;
    s->level = level;
    s->origin = (uint8_t)origin;
    s->duration_s = duration_s;
    s->since_ms = now_ms;
    s->last_ban_ms = now_ms;
    s->expires_ms = now_ms + (uint64_t)duration_s * 1000;
    if (!was_live)
        b->stats.n_active++;
    b->stats.n_imposed++;
    if (level > 0)
        b->stats.n_escalated++;
    if (b->be != NULL) {
        int rc = b->be->ops->add(b->be, key, duration_s, was_live);
        if (rc != 0) {
            char a[BAN_ADDR_MAX];
            b->stats.n_backend_errors++;
            log_error("ban: %s backend refused %s port %u: %s", b->be->ops->name,
                      ban_key_format_addr(key, a, sizeof(a)), key->port, strerror(-rc));
        }
    }
    if (out != NULL)
        fill_entry(s, out);
    return 0;
}

int ban_lift(struct ban *b, const struct ban_key *key, uint64_t now_ms)
{
    if (b == NULL || !key_ok(key))
        return -EINVAL;
    struct ban_slot *s = live_slot(b, key, now_ms);
    if (s == NULL)
        return -ENOENT;
    hist_push(b, s);
    b->stats.n_active--;
    b->stats.n_lifted++;
    if (b->be != NULL) {
        int rc = b->be->ops->del(b->be, key);
        if (rc != 0)
            b->stats.n_backend_errors++;
    }
    return 0;
}

int ban_restore(struct ban *b, const struct ban_key *key, uint64_t remaining_ms,
                uint64_t timeout_ms, uint64_t now_ms)
{
    if (b == NULL || !key_ok(key) || remaining_ms == 0)
        return -EINVAL;
    bool is_new;
    struct ban_slot *s = slot_get(b, key, &is_new);
    if (s == NULL) {
        b->stats.n_refused_full++;
        return -ENOSPC;
    }
    if (!is_new && s->is_live)
        return 0;
    if (!is_new)
        hist_unlink(b, s);
    uint8_t level = 0;
    for (unsigned i = 0; i < b->n_steps; i++)
        if ((uint64_t)b->ladder_s[i] * 1000 == timeout_ms)
            level = (uint8_t)i;
    s->is_live = true;
    s->level = level;
    s->origin = BAN_ORIGIN_RESTORED;
    s->duration_s = (uint32_t)((timeout_ms + 999) / 1000);
    s->expires_ms = now_ms + remaining_ms;
    s->since_ms = timeout_ms > remaining_ms ? now_ms - (timeout_ms - remaining_ms) : now_ms;
    s->last_ban_ms = s->since_ms;
    b->stats.n_active++;
    b->stats.n_restored++;
    return 0;
}

int ban_restore_record(struct ban *b, const struct ban_record *r, uint64_t now_ms)
{
    if (b == NULL || r == NULL || !key_ok(&r->key) || (unsigned)r->origin > BAN_ORIGIN_RESTORED ||
        (r->is_live && r->remaining_ms == 0))
        return -EINVAL;
    uint8_t level = r->level < b->n_steps ? r->level : (uint8_t)(b->n_steps - 1);
    struct ban_slot *s = live_slot(b, &r->key, now_ms);
    if (s != NULL) {
        /* Read back from the kernel: its time left stands, the file knows the rest. */
        if (r->is_live) {
            s->level = level;
            s->origin = (uint8_t)r->origin;
            s->since_ms = now_ms - r->age_ms;
            s->last_ban_ms = s->since_ms;
        }
        return 0;
    }
    if (!r->is_live && r->age_ms > b->memory_ms)
        return -ESTALE;
    bool is_new;
    s = slot_get(b, &r->key, &is_new);
    if (s == NULL) {
        b->stats.n_refused_full++;
        return -ENOSPC;
    }
    if (!is_new && s->is_live) {
        /* A live ban whose time is up and that no tick has turned into history yet. */
        s->is_live = false;
        b->stats.n_active--;
    } else if (!is_new) {
        hist_unlink(b, s);
    }
    s->level = level;
    s->origin = (uint8_t)r->origin;
    s->duration_s = r->duration_s;
    s->since_ms = now_ms - r->age_ms;
    s->last_ban_ms = s->since_ms;
    if (r->is_live) {
        s->is_live = true;
        s->expires_ms = now_ms + r->remaining_ms;
        b->stats.n_active++;
        b->stats.n_restored++;
    } else {
        s->expires_ms = s->since_ms + (uint64_t)r->duration_s * 1000;
        if (s->expires_ms > now_ms)
            s->expires_ms = now_ms;
        hist_push(b, s);
    }
    return 0;
}

bool ban_is_banned(const struct ban *b, const struct ban_key *key, uint64_t now_ms)
{
    return b != NULL && b->stats.n_active != 0 && live_slot(b, key, now_ms) != NULL;
}

int ban_find(const struct ban *b, const struct ban_key *key, uint64_t now_ms,
             struct ban_entry *out)
{
    struct ban_slot *s = b != NULL && key_ok(key) ? live_slot(b, key, now_ms) : NULL;
    if (s == NULL)
        return -ENOENT;
    if (out != NULL)
        fill_entry(s, out);
    return 0;
}

void ban_tick(struct ban *b, uint64_t now_ms, ban_expired_cb cb, void *arg)
{
    for (uint32_t i = 0; i < b->tab.n_alloc; i++) {
        struct ban_slot *s = keytab_at(&b->tab, i);
        if (s == NULL)
            continue;
        if (s->is_live && s->expires_ms <= now_ms) {
            hist_push(b, s);
            b->stats.n_active--;
            b->stats.n_expired++;
            if (cb != NULL) {
                struct ban_entry e;
                fill_entry(s, &e);
                cb(arg, &e);
            }
        }
        if (!s->is_live && now_ms - s->last_ban_ms > b->memory_ms) {
            hist_unlink(b, s);
            keytab_remove(&b->tab, s);
        }
    }
}

size_t ban_foreach(const struct ban *b, uint64_t now_ms, ban_visit_cb cb, void *arg)
{
    size_t n = 0;
    for (uint32_t i = 0; i < b->tab.n_alloc; i++) {
        struct ban_slot *s = keytab_at(&b->tab, i);
        if (s == NULL || !s->is_live || s->expires_ms <= now_ms)
            continue;
        struct ban_entry e;
        fill_entry(s, &e);
        n++;
        if (!cb(arg, &e))
            break;
    }
    return n;
}

static void fill_record(const struct ban_slot *s, uint64_t now, struct ban_record *r)
{
    r->key = s->key;
    r->is_live = s->is_live && s->expires_ms > now;
    r->level = s->level;
    r->origin = (enum ban_origin)s->origin;
    r->duration_s = s->duration_s;
    r->remaining_ms = r->is_live ? s->expires_ms - now : 0;
    r->age_ms = now - s->last_ban_ms;
}

size_t ban_foreach_record(const struct ban *b, uint64_t now_ms, ban_record_cb cb, void *arg)
{
    size_t n = 0;
    struct ban_record r;
    for (uint32_t i = 0; i < b->tab.n_alloc; i++) {
        struct ban_slot *s = keytab_at(&b->tab, i);
        if (s == NULL || !s->is_live)
            continue;
        fill_record(s, now_ms, &r);
        n++;
        if (!cb(arg, &r))
            return n;
    }
    for (const struct ban_slot *s = slot_of(b, b->hist_head); s != NULL;
         s = slot_of(b, s->hist_next)) {
        fill_record(s, now_ms, &r);
        n++;
        if (!cb(arg, &r))
            return n;
    }
    return n;
}

const struct ban_stats *ban_stats(const struct ban *b)
{
    return &b->stats;
}

const char *ban_backend_name(const struct ban *b)
{
    return b->be != NULL ? b->be->ops->name : "userspace";
}

int ban_key_from_sockaddr(const struct sockaddr *sa, bool with_port, struct ban_key *out)
{
    struct ban_key k = {0};
    if (sa == NULL)
        return -EAFNOSUPPORT;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        k.family = AF_INET;
        memcpy(k.addr, &in->sin_addr, 4);
        k.port = with_port ? ntohs(in->sin_port) : 0;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        k.port = with_port ? ntohs(in6->sin6_port) : 0;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            k.family = AF_INET;
            memcpy(k.addr, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            k.family = AF_INET6;
            memcpy(k.addr, &in6->sin6_addr, 16);
        }
    } else {
        return -EAFNOSUPPORT;
    }
    *out = k;
    return 0;
}

int ban_key_parse(const char *text, struct ban_key *out)
{
    char host[64];
    const char *port = NULL;
    struct ban_key k = {0};
    if (text == NULL)
        return -EINVAL;
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof(host))
        return -EINVAL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || (size_t)(close - text - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -EINVAL;
    } else {
        memcpy(host, text, len + 1);
        char *colon = strchr(host, ':');
        /* One colon: IPv4 with port; more: a bare IPv6 address. */
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            *colon = '\0';
            port = text + (colon - host) + 1;
        }
    }
    struct sockaddr_storage ss;
    if (netaddr_from_host(slice_make(host, strlen(host)), 0, 0, &ss) != 0 ||
        ban_key_from_sockaddr((const struct sockaddr *)&ss, false, &k) != 0)
        return -EINVAL;
    if (port != NULL) {
        char *end = NULL;
        if (*port < '0' || *port > '9')
            return -EINVAL;
        unsigned long p = strtoul(port, &end, 10);
        if (*end != '\0' || p == 0 || p > 65535)
            return -EINVAL;
        k.port = (uint16_t)p;
    }
    *out = k;
    return 0;
}

const char *ban_key_format_addr(const struct ban_key *k, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    if (k->family != AF_INET && k->family != AF_INET6)
        snprintf(buf, cap, "?");
    else if (inet_ntop(k->family, k->addr, buf, (socklen_t)cap) == NULL)
        snprintf(buf, cap, "?");
    return buf;
}
