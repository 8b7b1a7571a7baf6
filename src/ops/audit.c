/*
 * audit: registration audit lines and the two signal tables (AOR → last source/UA,
 * contact → AOR). Tables are open-addressing hashes with a hard entry bound; a key that
 * does not fit is counted and simply not tracked, so a flood of fresh AORs costs memory
 * only up to the bound and never pushes out what is already known. Keys come from the
 * network, so every table hashes with SipHash-1-3 under its own random key.
 */
#include "sipedge/audit.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sipedge/flow_table.h"
#include "sipedge/jsonl.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/siphash.h"
#include "sipedge/strbuf.h"

#define AUDIT_PATH_MAX 512
#define AUDIT_KEY_MAX 160
#define AUDIT_UA_MAX 96
#define AUDIT_MAX_CONTACTS_PER_REQ 16

struct audit_aor {
    bool is_used;
    uint8_t family;
    uint8_t ip[16];
    uint64_t hash;
    uint64_t last_ok_ms;
    char aor[AUDIT_KEY_MAX];
    char ua[AUDIT_UA_MAX];
};

struct audit_contact {
    bool is_used;
    uint64_t hash;
    uint64_t until_ms; /* binding lifetime as granted; an expired entry no longer counts */
    char uri[AUDIT_KEY_MAX];
    char aor[AUDIT_KEY_MAX];
};

/* Per-source line budget (a token bucket in thousandths of a line). */
struct audit_src {
    bool is_used;
    uint8_t family;
    uint8_t ip[16];
    uint32_t tokens_milli;
    uint64_t refill_ms;
    uint64_t suppressed; /* lines dropped since the last one written */
};

struct audit {
    struct jsonl *w; /* NULL: no file */
    uint32_t max_aors, max_contacts, n_aors, n_contacts;
    size_t aor_mask, contact_mask;
    struct audit_aor *aors;
    struct audit_contact *contacts;
    uint64_t device_window_ms;
    uint64_t aor_key[2], contact_key[2], src_key[2]; /* SipHash key per table */
    struct audit_src srcs[AUDIT_SOURCES_MAX];
    struct audit_stats st;
};

static const char *const audit_signal_names[] = {"device_change", "dup_contact", "ua_change"};

const char *audit_signal_name(unsigned bit)
{
    for (unsigned i = 0; i < 3; i++)
        if (bit == 1u << i)
            return audit_signal_names[i];
    return NULL;
}

static uint64_t audit_hash(const uint64_t key[2], const char *s)
{
    return siphash13(key[0], key[1], s, strlen(s));
}

/* Smallest power of two holding n entries at a load factor of at most 1/2. */
static size_t audit_slots(uint32_t n)
{
    size_t s = 16;
    while (s < (size_t)n * 2)
        s <<= 1;
    return s;
}

int audit_new(struct audit **out, const struct audit_opts *opts)
{
    if (!out || !opts)
        return -EINVAL;
    const char *path = opts->path ? opts->path : "";
    if (strlen(path) >= AUDIT_PATH_MAX)
        return -EINVAL;
    struct audit *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    int rc = 0;
    uint64_t weak = (uint64_t)(uintptr_t)a ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
    siphash_key_random(&a->aor_key[0], &a->aor_key[1], weak);
    siphash_key_random(&a->contact_key[0], &a->contact_key[1], weak ^ 1);
    siphash_key_random(&a->src_key[0], &a->src_key[1], weak ^ 2);
    a->max_aors = opts->max_aors ? opts->max_aors : AUDIT_DEFAULT_MAX_AORS;
    a->max_contacts = opts->max_contacts ? opts->max_contacts : AUDIT_DEFAULT_MAX_CONTACTS;
    a->device_window_ms =
        (uint64_t)(opts->device_window_s ? opts->device_window_s : AUDIT_DEFAULT_DEVICE_WINDOW_S) *
        1000;
    size_t na = audit_slots(a->max_aors), nc = audit_slots(a->max_contacts);
    a->aor_mask = na - 1;
    a->contact_mask = nc - 1;
    a->aors = calloc(na, sizeof(*a->aors));
    a->contacts = calloc(nc, sizeof(*a->contacts));
    if (!a->aors || !a->contacts) {
        rc = -ENOMEM;
        goto out;
    }
    if (path[0]) {
        rc = jsonl_open(&a->w, path, 0);
        if (rc < 0)
            goto out;
    }
    *out = a;
    return 0;
out:
    free(a->aors);
    free(a->contacts);
    free(a);
    return rc;
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    jsonl_close(a->w);
    free(a->aors);
    free(a->contacts);
    free(a);
}

int audit_reopen(struct audit *a)
{
    if (!a || !a->w || strcmp(jsonl_path(a->w), "-") == 0)
        return 0;
    int rc = jsonl_reopen(a->w);
    if (rc < 0)
        return rc;
    a->st.reopened++;
    return 0;
}

const struct audit_stats *audit_stats(struct audit *a)
{
    if (a->w) {
        struct jsonl_stats js;
        jsonl_stats(a->w, &js);
        a->st.lines_written = js.queued - js.failed;
        a->st.write_failed = js.failed;
        a->st.lines_dropped = js.dropped;
    }
    return &a->st;
}

void audit_flush(struct audit *a)
{
    if (a && a->w)
        jsonl_flush(a->w);
}

/* Finds key; with is_insert, claims a free slot for it when the bound allows. */
static struct audit_aor *audit_aor_get(struct audit *a, const char *key, bool is_insert)
{
    uint64_t h = audit_hash(a->aor_key, key);
    for (size_t i = h & a->aor_mask;; i = (i + 1) & a->aor_mask) {
        struct audit_aor *e = &a->aors[i];
        if (!e->is_used) {
            if (!is_insert)
                return NULL;
            if (a->n_aors >= a->max_aors) {
                a->st.aors_full++;
                return NULL;
            }
            a->n_aors++;
            e->is_used = true;
            e->hash = h;
            snprintf(e->aor, sizeof(e->aor), "%s", key);
            return e;
        }
        if (e->hash == h && strcmp(e->aor, key) == 0)
            return e;
    }
}

static struct audit_contact *audit_contact_get(struct audit *a, const char *key, bool is_insert)
{
    uint64_t h = audit_hash(a->contact_key, key);
    for (size_t i = h & a->contact_mask;; i = (i + 1) & a->contact_mask) {
        struct audit_contact *e = &a->contacts[i];
        if (!e->is_used) {
            if (!is_insert)
                return NULL;
            if (a->n_contacts >= a->max_contacts) {
                a->st.contacts_full++;
                return NULL;
            }
            a->n_contacts++;
            e->is_used = true;
            e->hash = h;
            /* Keys longer than the field are truncated; the hash still tells them apart. */
            size_t n = strnlen(key, sizeof(e->uri) - 1);
            memcpy(e->uri, key, n);
            e->uri[n] = '\0';
            return e;
        }
        if (e->hash == h && strcmp(e->uri, key) == 0)
            return e;
    }
}

/*
 * Splits "<uri>;params, <uri>" (or bare "uri;params, uri") into URIs, each cut to
 * AUDIT_KEY_MAX - 1 bytes. Returns the number found (at most max).
 */
static unsigned audit_split_contacts(const char *s, char out[][AUDIT_KEY_MAX], unsigned max)
{
    unsigned n = 0;
    while (*s && n < max) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        if (!*s)
            break;
        const char *start, *end;
        if (*s == '<') {
            start = s + 1;
            end = strchr(start, '>');
            if (!end)
                end = start + strlen(start);
            s = *end ? end + 1 : end;
            /* Skip parameters up to the next comma. */
            while (*s && *s != ',')
                s++;
        } else {
            start = s;
            end = s;
            while (*end && *end != ',' && *end != ';' && *end != ' ')
                end++;
            s = end;
            while (*s && *s != ',')
                s++;
        }
        size_t len = (size_t)(end - start);
        if (len == 0)
            continue;
        if (len >= AUDIT_KEY_MAX)
            len = AUDIT_KEY_MAX - 1;
        memcpy(out[n], start, len);
        out[n][len] = '\0';
        n++;
    }
    return n;
}

static bool audit_ip_of(const struct sockaddr *sa, uint8_t *family, uint8_t ip[16])
{
    memset(ip, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        memcpy(ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = AF_INET;
        return true;
    }
    if (sa && sa->sa_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        *family = AF_INET6;
        return true;
    }
    *family = 0;
    return false;
}

/* ---- per-source line budget ---- */

/* Keyed hash of the address: the key is random per process, so a sender cannot pick
 * addresses that collide; a probe run is bounded in any case. */
static uint64_t audit_src_hash(const struct audit *a, uint8_t family, const uint8_t ip[16])
{
    uint8_t k[17];
    k[0] = family;
    memcpy(k + 1, ip, 16);
    return siphash13(a->src_key[0], a->src_key[1], k, sizeof(k));
}

static void audit_src_refill(struct audit_src *e, uint64_t now_ms)
{
    if (now_ms > e->refill_ms) {
        uint64_t v = e->tokens_milli + (now_ms - e->refill_ms) * AUDIT_SOURCE_RATE;
        e->tokens_milli =
            (uint32_t)(v > AUDIT_SOURCE_BURST * 1000u ? AUDIT_SOURCE_BURST * 1000u : v);
    }
    e->refill_ms = now_ms; /* a clock that went back only restarts the refill */
}

bool audit_source_allow(struct audit *a, const struct sockaddr *src, uint64_t mono_ms,
                        uint64_t *suppressed)
{
    uint8_t family, ip[16];
    if (suppressed)
        *suppressed = 0;
    if (!a || !audit_ip_of(src, &family, ip))
        return true;
    size_t mask = AUDIT_SOURCES_MAX - 1;
    size_t i = (size_t)audit_src_hash(a, family, ip) & mask;
    struct audit_src *e = NULL, *idle = NULL;
    for (unsigned n = 0; n < AUDIT_SOURCE_PROBE; n++, i = (i + 1) & mask) {
        struct audit_src *c = &a->srcs[i];
        if (!c->is_used) {
            if (!idle)
                idle = c;
            continue;
        }
        if (c->family == family && !memcmp(c->ip, ip, 16)) {
            e = c;
            break;
        }
        /* An entry back at a full bucket with nothing owed tells nothing: reusable. */
        audit_src_refill(c, mono_ms);
        if (!idle && c->suppressed == 0 && c->tokens_milli >= AUDIT_SOURCE_BURST * 1000u)
            idle = c;
    }
    if (!e) {
        if (!idle) {
            /* Every slot of the run is busy: the line goes out unlimited rather than
             * letting a crowd of sources silence others. */
            a->st.sources_untracked++;
            return true;
        }
        e = idle;
        memset(e, 0, sizeof(*e));
        e->is_used = true;
        e->family = family;
        memcpy(e->ip, ip, 16);
        e->tokens_milli = AUDIT_SOURCE_BURST * 1000u;
        e->refill_ms = mono_ms;
    }
    audit_src_refill(e, mono_ms);
    if (e->tokens_milli < 1000) {
        e->suppressed++;
        a->st.lines_suppressed++;
        return false;
    }
    e->tokens_milli -= 1000;
    if (suppressed)
        *suppressed = e->suppressed;
    e->suppressed = 0;
    return true;
}

static unsigned audit_judge(struct audit *a, const struct edge_reg_event *ev, uint64_t mono_ms)
{
    unsigned sig = 0;
    const char *aor = ev->aor ? ev->aor : "";
    const char *ua = ev->user_agent ? ev->user_agent : "";
    bool is_ok = ev->status >= 200 && ev->status < 300;
    bool is_binding = is_ok && ev->expires_s > 0;
    char key[AUDIT_KEY_MAX];
    snprintf(key, sizeof(key), "%s", aor);
    uint8_t family, ip[16];
    bool has_ip = audit_ip_of(ev->src, &family, ip);

    if (aor[0]) {
        struct audit_aor *e = audit_aor_get(a, key, is_binding);
        if (e && e->last_ok_ms) {
            if (has_ip && (e->family != family || memcmp(e->ip, ip, 16) != 0) &&
                mono_ms - e->last_ok_ms < a->device_window_ms)
                sig |= AUDIT_SIGNAL_DEVICE_CHANGE;
            if (strncmp(e->ua, ua, sizeof(e->ua) - 1) != 0)
                sig |= AUDIT_SIGNAL_UA_CHANGE;
        }
        if (e && is_binding) {
            e->last_ok_ms = mono_ms ? mono_ms : 1;
            e->family = family;
            memcpy(e->ip, ip, 16);
            snprintf(e->ua, sizeof(e->ua), "%s", ua);
        }
    }

    char uris[AUDIT_MAX_CONTACTS_PER_REQ][AUDIT_KEY_MAX];
    unsigned n = audit_split_contacts(ev->contacts ? ev->contacts : "", uris,
                                      AUDIT_MAX_CONTACTS_PER_REQ);
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(uris[i], "*") == 0)
            continue;
        struct audit_contact *c = audit_contact_get(a, uris[i], is_binding);
        if (!c)
            continue;
        if (c->aor[0] && c->until_ms > mono_ms && strcmp(c->aor, key) != 0)
            sig |= AUDIT_SIGNAL_DUP_CONTACT;
        if (is_binding) {
            snprintf(c->aor, sizeof(c->aor), "%s", key);
            c->until_ms = mono_ms + (uint64_t)ev->expires_s * 1000;
        } else if (is_ok && strcmp(c->aor, key) == 0) {
            c->until_ms = 0; /* removed (expires 0) */
        }
    }
    for (unsigned i = 0; i < 3; i++)
        if (sig & (1u << i))
            a->st.signals[i]++;
    return sig;
}

/* ,"name":"escaped value" with the value cut to at most max_out bytes once escaped. */
static void audit_put_str(struct strbuf *b, const char *name, const char *s, size_t max_out)
{
    char esc[1024];
    if (max_out > sizeof(esc))
        max_out = sizeof(esc);
    if (!s)
        s = "";
    jsonl_escape(esc, max_out, s, strlen(s));
    strbuf_fmt(b, ",\"%s\":\"%s\"", name, esc);
}

static void audit_put_head(struct strbuf *b, uint64_t wall_ms, const char *event)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strbuf_fmt(b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"event\":\"%s\"",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
               (unsigned)(wall_ms % 1000), event);
}

size_t audit_format_register(struct audit *a, char *buf, size_t cap,
                             const struct edge_reg_event *ev, uint64_t wall_ms,
                             uint64_t mono_ms, unsigned *signals)
{
    if (!a || !buf || !ev || cap < AUDIT_LINE_MAX)
        return 0;
    unsigned sig = audit_judge(a, ev, mono_ms);
    /* Field bounds sum well below AUDIT_LINE_MAX, so the line always closes. */
    struct strbuf b;
    strbuf_init(&b, buf, cap);
    char src[LOG_ADDR_MAX] = "";
    if (ev->src)
        log_fmt_addr(ev->src, src, sizeof(src));
    audit_put_head(&b, wall_ms, "register");
    audit_put_str(&b, "aor", ev->aor, 512);
    audit_put_str(&b, "source", src, 128);
    strbuf_fmt(&b, ",\"transport\":\"%s\"", flow_transport_name(ev->transport));
    audit_put_str(&b, "contacts", ev->contacts, 1024);
    strbuf_fmt(&b, ",\"expires\":%u", (unsigned)ev->expires_s);
    audit_put_str(&b, "user_agent", ev->user_agent, 512);
    strbuf_fmt(&b, ",\"status\":%u,\"from_cache\":%s,\"flow\":\"0x%016llx\"", (unsigned)ev->status,
               ev->is_from_cache ? "true" : "false", (unsigned long long)ev->flow_ref);
    if (sig) {
        strbuf_str(&b, ",\"signals\":[");
        bool is_first = true;
        for (unsigned i = 0; i < 3; i++) {
            if (!(sig & (1u << i)))
                continue;
            strbuf_fmt(&b, "%s\"%s\"", is_first ? "" : ",", audit_signal_names[i]);
            is_first = false;
        }
        strbuf_str(&b, "]");
    }
    strbuf_str(&b, "}\n");
    if (signals)
        *signals = sig;
    return strbuf_len(&b);
}

size_t audit_format_flow(char *buf, size_t cap, enum edge_flow_event kind, uint64_t flow_ref,
                         uint8_t transport, const struct sockaddr *remote, const char *reason,
                         uint64_t wall_ms)
{
    if (!buf || cap < 512)
        return 0;
    struct strbuf b;
    strbuf_init(&b, buf, cap);
    char src[LOG_ADDR_MAX] = "";
    if (remote)
        log_fmt_addr(remote, src, sizeof(src));
    audit_put_head(&b, wall_ms, kind == EDGE_FLOW_OPENED ? "flow_open" : "flow_close");
    strbuf_fmt(&b, ",\"flow\":\"0x%016llx\",\"transport\":\"%s\"", (unsigned long long)flow_ref,
               flow_transport_name(transport));
    audit_put_str(&b, "source", src, 128);
    if (reason)
        audit_put_str(&b, "reason", reason, 128);
    strbuf_str(&b, "}\n");
    return strbuf_len(&b);
}

size_t audit_format_suppressed(char *buf, size_t cap, const struct sockaddr *src, uint64_t n,
                               uint64_t wall_ms)
{
    if (!buf || cap < 512)
        return 0;
    struct strbuf b;
    strbuf_init(&b, buf, cap);
    char addr[LOG_ADDR_MAX] = "";
    unsigned port;
    if (src)
        netaddr_ip(src, addr, sizeof(addr), &port);
    audit_put_head(&b, wall_ms, "suppressed");
    audit_put_str(&b, "source", addr, 128);
    strbuf_fmt(&b, ",\"lines\":%llu,\"message\":\"suppressed %llu lines\"}\n",
               (unsigned long long)n, (unsigned long long)n);
    return strbuf_len(&b);
}

static uint64_t audit_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t audit_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Queues the line for the writer thread; a full queue drops it (counted there). */
static void audit_write(struct audit *a, const char *line, size_t len)
{
    if (a->w && len > 0)
        jsonl_put(a->w, line, len);
}

/* One line within its source's budget; the first line allowed after suppressed ones is
 * preceded by a summary of how many were dropped. */
static void audit_write_limited(struct audit *a, const struct sockaddr *src, uint64_t mono_ms,
                                uint64_t wall_ms, const char *line, size_t len)
{
    uint64_t dropped = 0;
    if (len == 0 || !audit_source_allow(a, src, mono_ms, &dropped))
        return;
    if (dropped) {
        char sum[512];
        audit_write(a, sum, audit_format_suppressed(sum, sizeof(sum), src, dropped, wall_ms));
    }
    audit_write(a, line, len);
}

void audit_register(struct audit *a, const struct edge_reg_event *ev, uint64_t mono_ms)
{
    if (!a)
        return;
    char line[AUDIT_LINE_MAX];
    uint64_t wall = audit_wall_ms();
    /* Judged either way: the signal tables must see every registration. */
    size_t n = audit_format_register(a, line, sizeof(line), ev, wall, mono_ms, NULL);
    audit_write_limited(a, ev->src, mono_ms, wall, line, n);
}

void audit_flow(struct audit *a, enum edge_flow_event kind, uint64_t flow_ref, uint8_t transport,
                const struct sockaddr *remote, const char *reason)
{
    if (!a)
        return;
    char line[1024];
    uint64_t wall = audit_wall_ms();
    size_t n =
        audit_format_flow(line, sizeof(line), kind, flow_ref, transport, remote, reason, wall);
    audit_write_limited(a, remote, audit_mono_ms(), wall, line, n);
}
