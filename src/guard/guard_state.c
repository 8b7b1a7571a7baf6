/*
 * guard_state: the guard's bans across a restart, in "<state_dir>/bans.state".
 *
 * Payload (statefile kind "bans", version 1), big-endian:
 *
 *   saved wall clock, ms since the epoch u64 | record count u32 | records
 *   record: family u8 | flags u8 (bit 0: live) | port u16 | addr[16] | level u8 |
 *           origin u8 | duration_s u32 | remaining_ms u64 | age_ms u64
 *
 * The payload is built on the guard's thread (a walk over the ban table, no I/O) and written
 * by a job handed to guard_opts.offload. The guard only asks for "run this elsewhere, then
 * tell me": the worker supplies that hook over its loop's thread pool, so the write stays off
 * the loop while this file knows no loop type, and every save rule (one job at a time,
 * sequence numbers, orphaning) stays here next to the payload it protects instead of being
 * split between the guard and a writer in the worker. One job at a time: a periodic save
 * while one is in flight is skipped. The synchronous save at stop may meet a job still
 * running: a mutex keeps the two writes apart, and a sequence number makes the older payload
 * give way to the newer one whichever reaches the mutex first. When the guard is freed with
 * a job in flight, the job frees the state in its done callback.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guard/guard_internal.h"
#include "sipedge/ban.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/statefile.h"

#define STATE_KIND "bans"
#define STATE_VERSION 1
#define STATE_FILE "bans.state"
#define STATE_PERIOD_MS 5000
#define STATE_HDR_LEN 12 /* wall u64, count u32 */
#define STATE_REC_LEN 42
#define STATE_F_LIVE 0x01

struct guard_state {
    char path[4096];
    pthread_mutex_t mu;   /* the write itself, and seq_written */
    uint64_t seq_next;    /* loop thread */
    uint64_t seq_written; /* under mu */
    bool is_in_flight;    /* loop thread */
    bool is_orphaned;     /* guard freed while a job was in flight: the job frees this */
    bool has_sig;
    bool is_reimpose; /* the kernel set held none of our bans at open */
    int last_rc; /* latest write result, to log a failure once per streak */
    uint64_t last_save_ms;
    uint64_t sig[5]; /* ban counters at the latest save: unchanged means nothing to do */
    struct guard_state_stats stats;
};

struct state_job {
    struct guard_state *s;
    struct statefile_buf buf;
    uint64_t seq;
    int rc;
    char err[256];
};

uint64_t (*guard_state_wall_ms)(void) = statefile_wall_ms;

static void state_free(struct guard_state *s)
{
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- payload ---------------------------------------------------------------------------- */

static uint8_t *be_put(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return p + n;
}

/* One record as a single append: the table may hold many thousands. */
static bool put_record(void *arg, const struct ban_record *r)
{
    struct statefile_buf *b = arg;
    uint8_t rec[STATE_REC_LEN], *p = rec;
    *p++ = r->key.family;
    *p++ = r->is_live ? STATE_F_LIVE : 0;
    p = be_put(p, r->key.port, 2);
    memcpy(p, r->key.addr, sizeof(r->key.addr));
    p += sizeof(r->key.addr);
    *p++ = r->level;
    *p++ = (uint8_t)r->origin;
    p = be_put(p, r->duration_s, 4);
    p = be_put(p, r->remaining_ms, 8);
    be_put(p, r->age_ms, 8);
    statefile_put_bytes(b, rec, sizeof(rec));
    return b->err == 0;
}

static int build(struct guard *g, uint64_t now_ms, struct statefile_buf *b)
{
    statefile_buf_init(b);
    statefile_put_u64(b, guard_state_wall_ms());
    statefile_put_u32(b, 0); /* count, patched below */
    size_t n = ban_foreach_record(guard_ban_engine(g), now_ms, put_record, b);
    if (b->err != 0)
        return b->err;
    if (n > UINT32_MAX)
        return -EOVERFLOW;
    be_put(b->p + 8, n, 4);
    return 0;
}

/* Writes unless a newer payload is already on disk. Any thread. */
static int write_locked(struct guard_state *s, uint64_t seq, const struct statefile_buf *b,
                        char *err, size_t cap)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (seq > s->seq_written) {
        rc = statefile_write(s->path, STATE_KIND, STATE_VERSION, b->p, b->len, err, cap);
        if (rc == 0)
            s->seq_written = seq;
    } else {
        rc = 1; /* superseded */
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void note_result(struct guard_state *s, int rc, const char *err)
{
    if (rc == 1)
        return;
    if (rc == 0) {
        s->stats.n_writes++;
        if (s->last_rc != 0)
            log_info("guard: ban state written to %s again", s->path);
    } else {
        s->stats.n_failed++;
        if (s->last_rc == 0)
            log_error("guard: ban state not saved: %s", err[0] ? err : strerror(-rc));
    }
    s->last_rc = rc;
}

/* Off the guard's thread. */
static void job_work(void *arg)
{
    struct state_job *j = arg;
    j->rc = write_locked(j->s, j->seq, &j->buf, j->err, sizeof(j->err));
}

/* Back on the guard's thread. */
static void job_done(void *arg, bool ran)
{
    struct state_job *j = arg;
    struct guard_state *s = j->s;
    s->is_in_flight = false;
    if (!ran)
        j->rc = 1;
    if (s->is_orphaned)
        state_free(s);
    else
        note_result(s, j->rc, j->err);
    statefile_buf_free(&j->buf);
    free(j);
}

static void ban_sig(const struct guard *g, uint64_t sig[5])
{
    const struct ban_stats *st = ban_stats(guard_bans(g));
    sig[0] = st->n_imposed;
    sig[1] = st->n_lifted;
    sig[2] = st->n_expired;
    sig[3] = st->n_restored;
    sig[4] = st->n_history;
}

void guard_state_save(struct guard *g, uint64_t now_ms, bool sync)
{
    struct guard_state *s = g != NULL ? *guard_state_slot(g) : NULL;
    if (s == NULL)
        return;
    if (!sync && s->is_in_flight) {
        s->stats.n_skipped++;
        return;
    }
    struct state_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    uint64_t t0 = guard_mono_us(g);
    int rc = build(g, now_ms, &j->buf);
    s->stats.last_build_us = guard_mono_us(g) - t0;
    s->stats.last_len = j->buf.len;
    s->stats.n_saves++;
    s->last_save_ms = now_ms;
    if (rc != 0) {
        note_result(s, rc, "");
        statefile_buf_free(&j->buf);
        free(j);
        return;
    }
    ban_sig(g, s->sig);
    s->has_sig = true;
    j->s = s;
    j->seq = ++s->seq_next;
    const struct guard_offload *off = guard_offload_of(g);
    if (!sync && off->queue != NULL) {
        /* Marked first: a hook that runs the job at once calls done before returning. */
        s->is_in_flight = true;
        if (off->queue(off->ctx, job_work, job_done, j) == 0)
            return;
        s->is_in_flight = false;
    }
    rc = write_locked(s, j->seq, &j->buf, j->err, sizeof(j->err));
    note_result(s, rc, j->err);
    statefile_buf_free(&j->buf);
    free(j);
}

void guard_state_tick(struct guard *g, uint64_t now_ms)
{
    struct guard_state *s = *guard_state_slot(g);
    if (s == NULL || now_ms - s->last_save_ms < STATE_PERIOD_MS)
        return;
    uint64_t sig[5];
    ban_sig(g, sig);
    /* Times are saved relative to the wall clock of the save, so an unchanged table needs no
     * new file; a failed write is retried. */
    if (s->has_sig && s->last_rc == 0 && memcmp(sig, s->sig, sizeof(sig)) == 0) {
        s->last_save_ms = now_ms;
        return;
    }
    guard_state_save(g, now_ms, false);
}

void guard_state_close(struct guard *g)
{
    struct guard_state **slot = guard_state_slot(g);
    struct guard_state *s = *slot;
    if (s == NULL)
        return;
    *slot = NULL;
    if (s->is_in_flight)
        s->is_orphaned = true;
    else
        state_free(s);
}

const struct guard_state_stats *guard_state_stats(const struct guard *g)
{
    struct guard_state *s = *guard_state_slot((struct guard *)g);
    return s != NULL ? &s->stats : NULL;
}

/* ---- load ------------------------------------------------------------------------------- */

/* Parses every record before any is applied: a payload that does not parse is refused
 * whole. Returns the count, or -EBADMSG. */
static int parse(const uint8_t *p, size_t len, uint64_t *saved_wall, struct ban_record **out)
{
    struct statefile_rd rd;
    statefile_rd_init(&rd, p, len);
    *saved_wall = statefile_get_u64(&rd);
    uint32_t n = statefile_get_u32(&rd);
    if (rd.err != 0 || (uint64_t)n * STATE_REC_LEN != len - STATE_HDR_LEN)
        return -EBADMSG;
    struct ban_record *v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        struct ban_record *r = &v[i];
        r->key.family = statefile_get_u8(&rd);
        uint8_t flags = statefile_get_u8(&rd);
        r->key.port = statefile_get_u16(&rd);
        statefile_get_bytes(&rd, r->key.addr, sizeof(r->key.addr));
        r->level = statefile_get_u8(&rd);
        uint8_t origin = statefile_get_u8(&rd);
        r->duration_s = statefile_get_u32(&rd);
        r->remaining_ms = statefile_get_u64(&rd);
        r->age_ms = statefile_get_u64(&rd);
        r->is_live = flags & STATE_F_LIVE;
        r->origin = (enum ban_origin)origin;
        if (rd.err != 0 || (flags & ~STATE_F_LIVE) != 0 || origin > BAN_ORIGIN_RESTORED ||
            (r->key.family != AF_INET && r->key.family != AF_INET6) ||
            (r->is_live && r->remaining_ms == 0)) {
            free(v);
            return -EBADMSG;
        }
    }
    if (!statefile_rd_done(&rd)) {
        free(v);
        return -EBADMSG;
    }
    *out = v;
    return (int)n;
}

/* Applies the records of the file at path whose key keep accepts (keep NULL: all); a file
 * that does not parse is moved aside. is_reimpose: the kernel set held none of our bans at
 * the start (guard_state_open_shared). */
static void load_file(struct guard *g, const char *path, bool is_reimpose,
                      bool (*keep)(void *arg, const struct ban_key *k), void *arg,
                      uint64_t now_ms)
{
    uint8_t *p = NULL;
    size_t len = 0;
    int rc = statefile_load(path, STATE_KIND, STATE_VERSION, "bans", &p, &len, NULL);
    if (rc == -ENOENT) {
        log_info("guard: no ban state in %s yet, starting with none", path);
        return;
    }
    if (rc != 0)
        return; /* logged and moved aside by statefile_load */
    uint64_t saved_wall = 0;
    struct ban_record *v = NULL;
    int n = parse(p, len, &saved_wall, &v);
    free(p);
    if (n < 0) {
        char moved[4096] = "";
        if (n == -EBADMSG && statefile_move_aside(path, moved, sizeof(moved)) < 0)
            moved[0] = '\0';
        log_error("bans state refused: %s: malformed records; starting with no bans state%s%s",
                  path, moved[0] ? ", the file was moved to " : "", moved);
        return;
    }
    uint64_t wall = guard_state_wall_ms();
    uint64_t down_ms = wall > saved_wall ? wall - saved_wall : 0;
    struct ban *b = guard_ban_engine(g);
    bool is_nft = guard_is_nft(g);
    unsigned n_live = 0, n_admin = 0, n_hist = 0, n_full = 0, n_reimposed = 0, n_other = 0;
    for (int i = 0; i < n; i++) {
        struct ban_record r = v[i];
        if (keep && !keep(arg, &r.key)) {
            n_other++;
            continue;
        }
        r.age_ms += down_ms;
        if (r.is_live && r.remaining_ms <= down_ms) {
            r.is_live = false;
            r.remaining_ms = 0;
        } else if (r.is_live) {
            r.remaining_ms -= down_ms;
        }
        /* The kernel set decides which nftables bans are live: one gone from it was
         * lifted or ran out, and only its escalation level is kept. */
        if (r.is_live && is_reimpose) {
            uint32_t left_s = (uint32_t)((r.remaining_ms + 999) / 1000);
            if (ban_impose(b, &r.key, left_s, r.origin, now_ms, NULL) == 0)
                n_reimposed++;
        } else if (r.is_live && is_nft && ban_find(b, &r.key, now_ms, NULL) != 0) {
            r.is_live = false;
            r.remaining_ms = 0;
        }
        rc = ban_restore_record(b, &r, now_ms);
        if (rc == -ENOSPC)
            n_full++;
        if (rc != 0)
            continue;
        if (r.is_live) {
            n_live++;
            n_admin += r.origin == BAN_ORIGIN_ADMIN;
        } else {
            n_hist++;
        }
    }
    free(v);
    log_info("guard: restored %u bans (%u operator) and %u history entries from %s "
             "(saved %llus ago%s)%s",
             n_live, n_admin, n_hist, path, (unsigned long long)(down_ms / 1000),
             is_nft ? ", live bans as the kernel set holds them" : "",
             n_other ? ", the others belong to other workers" : "");
    if (n_reimposed > 0)
        log_info("guard: the nftables set held none of them: %u bans put back into it with "
                 "their time left",
                 n_reimposed);
    if (n_full > 0)
        log_warn("guard: %u saved ban entries did not fit the ban table (max_bans)", n_full);
}

int guard_state_open_shared(struct guard *g, const char *state_dir,
                            bool (*keep)(void *arg, const struct ban_key *k), void *arg,
                            uint64_t now_ms)
{
    if (g == NULL || state_dir == NULL)
        return -EINVAL;
    struct guard_state **slot = guard_state_slot(g);
    if (*slot != NULL)
        return -EALREADY;
    struct guard_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    int rc = statefile_path(s->path, sizeof(s->path), state_dir, STATE_FILE);
    if (rc == 0 && pthread_mutex_init(&s->mu, NULL) != 0)
        rc = -ENOMEM;
    if (rc != 0) {
        log_error("guard: no ban persistence in %s: %s", state_dir, strerror(-rc));
        free(s);
        return rc;
    }
    s->last_save_ms = now_ms;
    *slot = s;
    /* An nftables set holding none of our bans was created afresh (a reboot, or the
     * table was flushed): the saved bans go back into it with the time they have left.
     * A set that holds some is authoritative: a ban missing from it was lifted by hand. */
    s->is_reimpose = guard_is_nft(g) && ban_stats(guard_ban_engine(g))->n_active == 0;
    load_file(g, s->path, s->is_reimpose, keep, arg, now_ms);
    return 0;
}

int guard_state_open(struct guard *g, const char *state_dir, uint64_t now_ms)
{
    return guard_state_open_shared(g, state_dir, NULL, NULL, now_ms);
}

int guard_state_import(struct guard *g, const char *state_dir,
                       bool (*keep)(void *arg, const struct ban_key *k), void *arg,
                       uint64_t now_ms)
{
    struct guard_state *s = g ? *guard_state_slot(g) : NULL;
    if (s == NULL || state_dir == NULL)
        return -EINVAL;
    char path[sizeof(s->path)];
    int rc = statefile_path(path, sizeof(path), state_dir, STATE_FILE);
    if (rc != 0)
        return rc;
    if (access(path, F_OK) != 0)
        return -ENOENT;
    load_file(g, path, s->is_reimpose, keep, arg, now_ms);
    return 0;
}
