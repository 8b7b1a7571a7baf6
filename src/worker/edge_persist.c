#include "worker/edge_persist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sipedge/config.h"
#include "sipedge/edge.h"
#include "sipedge/log.h"
#include "sipedge/statefile.h"

/* Snapshot slices: table slots serialised per tick (about 9 ms for 8192 flows). */
#define PERSIST_SLICE_SLOTS 8192
/* A snapshot when the journal outgrew this many times the last snapshot... */
#define PERSIST_JOURNAL_RATIO 4
#define PERSIST_JOURNAL_MIN (1u << 20)
/* ...or this long after the last one, if anything changed. */
#define PERSIST_SNAPSHOT_MAX_MS 300000
#define PERSIST_PATH_MAX (CONFIG_PATH_MAX + 48)

struct edge_persist {
    uv_loop_t *loop;
    struct edge *edge;
    char dir[CONFIG_PATH_MAX];
    char snap_path[PERSIST_PATH_MAX];
    uint32_t gen;           /* journal file changes go to now */
    uint32_t oldest_gen;    /* oldest journal file that may still exist */
    uint64_t journal_bytes; /* written to journals since the current snapshot started */
    /* the journal write in flight */
    uv_work_t jreq;
    bool is_jwriting;
    struct statefile_buf jbuf;
    char jpath[PERSIST_PATH_MAX];
    int jrc;
    /* the snapshot being serialised or written */
    uv_work_t sreq;
    bool is_swriting;
    struct statefile_buf sbuf;
    struct edge_snapshot cur;
    uint32_t sgen;
    int src;
    char serr[256];
    uint64_t last_snap_ms;
    size_t last_snap_len;
    bool want_snap;
    bool is_stopping;
    bool is_final_done;
    bool has_logged_jerr;
};

static void journal_path(const struct edge_persist *p, uint32_t gen, char *out, size_t cap)
{
    snprintf(out, cap, "%s/edge.journal.%u", p->dir, gen);
}

/* Removes journals older than keep (they are in a snapshot that is on disk). */
static void journals_drop_before(struct edge_persist *p, uint32_t keep)
{
    char path[PERSIST_PATH_MAX];
    for (uint32_t g = p->oldest_gen; g < keep; g++) {
        journal_path(p, g, path, sizeof(path));
        unlink(path);
    }
    if (keep > p->oldest_gen)
        p->oldest_gen = keep;
}

/* ---- journal -------------------------------------------------------------------------- */

static void journal_work(uv_work_t *req)
{
    struct edge_persist *p = req->data;
    p->jrc = statefile_append_chunk(p->jpath, p->jbuf.p, p->jbuf.len);
}

static void final_snapshot(struct edge_persist *p, uint64_t now_ms);

static void journal_done(uv_work_t *req, int status)
{
    struct edge_persist *p = req->data;
    p->is_jwriting = false;
    if (status == 0 && p->jrc < 0 && !p->has_logged_jerr) {
        log_error("edge journal %s: %s (flow changes are kept for the next snapshot only)",
                  p->jpath, strerror(-p->jrc));
        p->has_logged_jerr = true;
    } else if (p->jrc == 0) {
        p->has_logged_jerr = false;
    }
    statefile_buf_free(&p->jbuf);
    if (p->is_stopping)
        final_snapshot(p, uv_now(p->loop));
}

static void journal_flush(struct edge_persist *p)
{
    if (p->is_jwriting || p->is_stopping)
        return;
    if (edge_journal_take(p->edge, &p->jbuf) == 0) {
        statefile_buf_free(&p->jbuf);
        return;
    }
    if (p->jbuf.err || p->jbuf.len > UINT32_MAX) {
        log_error("edge journal: out of memory, changes kept for the next snapshot only");
        statefile_buf_free(&p->jbuf);
        p->want_snap = true;
        return;
    }
    journal_path(p, p->gen, p->jpath, sizeof(p->jpath));
    p->journal_bytes += p->jbuf.len;
    p->jreq.data = p;
    if (uv_queue_work(p->loop, &p->jreq, journal_work, journal_done) == 0)
        p->is_jwriting = true;
    else
        statefile_buf_free(&p->jbuf);
}

struct replay_ctx {
    struct edge *edge;
    uint64_t now_ms;
};

static int replay_chunk(void *ctx, const uint8_t *buf, size_t len)
{
    struct replay_ctx *rc = ctx;
    struct edge_restore_result res = {0};
    return edge_journal_replay(rc->edge, buf, len, rc->now_ms, &res);
}

/* ---- snapshots -------------------------------------------------------------------------- */

static void snapshot_work(uv_work_t *req)
{
    struct edge_persist *p = req->data;
    p->src = statefile_write(p->snap_path, EDGE_STATE_KIND, EDGE_STATE_VERSION, p->sbuf.p,
                             p->sbuf.len, p->serr, sizeof(p->serr));
}

static void snapshot_done(uv_work_t *req, int status)
{
    struct edge_persist *p = req->data;
    p->is_swriting = false;
    if (status == 0 && p->src < 0) {
        log_error("edge state not saved: %s", p->serr);
    } else if (status == 0) {
        p->last_snap_len = p->sbuf.len;
        /* Keep the generation before this one: a journal write to it may be in flight. */
        if (p->sgen > 1)
            journals_drop_before(p, p->sgen - 1);
    }
    statefile_buf_free(&p->sbuf);
    if (p->is_stopping)
        final_snapshot(p, uv_now(p->loop));
}

/* Starts a snapshot: changes from now on go to a new journal generation. */
static void snapshot_begin(struct edge_persist *p, uint64_t now_ms)
{
    p->gen++;
    p->sgen = p->gen;
    p->journal_bytes = 0;
    p->last_snap_ms = now_ms;
    p->want_snap = false;
    statefile_buf_init(&p->sbuf);
    statefile_put_u32(&p->sbuf, p->sgen);
    memset(&p->cur, 0, sizeof(p->cur));
}

static void snapshot_step(struct edge_persist *p, uint64_t now_ms)
{
    if (p->is_swriting)
        return;
    if (!p->cur.is_started) {
        uint64_t limit = (uint64_t)p->last_snap_len * PERSIST_JOURNAL_RATIO;
        if (limit < PERSIST_JOURNAL_MIN)
            limit = PERSIST_JOURNAL_MIN;
        bool due = p->want_snap || p->journal_bytes > limit ||
                   (p->journal_bytes && now_ms - p->last_snap_ms >= PERSIST_SNAPSHOT_MAX_MS);
        if (!due)
            return;
        snapshot_begin(p, now_ms);
    }
    int rc = edge_state_save_step(p->edge, now_ms, &p->sbuf, &p->cur, PERSIST_SLICE_SLOTS);
    if (rc == 0)
        return;
    memset(&p->cur, 0, sizeof(p->cur));
    if (rc < 0) {
        log_error("edge state not saved: %s", strerror(-rc));
        statefile_buf_free(&p->sbuf);
        p->want_snap = true;
        return;
    }
    p->sreq.data = p;
    if (uv_queue_work(p->loop, &p->sreq, snapshot_work, snapshot_done) == 0)
        p->is_swriting = true;
    else
        statefile_buf_free(&p->sbuf);
}

/* The stop's snapshot, on the loop, once no write is in flight. */
static void final_snapshot(struct edge_persist *p, uint64_t now_ms)
{
    if (p->is_final_done || p->is_jwriting || p->is_swriting)
        return;
    p->is_final_done = true;
    statefile_buf_free(&p->sbuf); /* a half-serialised one is superseded */
    snapshot_begin(p, now_ms);
    int n = edge_state_save_step(p->edge, now_ms, &p->sbuf, &p->cur, 0);
    char err[256] = "";
    int rc = n < 0 ? n
                   : statefile_write(p->snap_path, EDGE_STATE_KIND, EDGE_STATE_VERSION, p->sbuf.p,
                                     p->sbuf.len, err, sizeof(err));
    if (rc < 0) {
        log_error("edge state not saved: %s", err[0] ? err : strerror(-rc));
    } else {
        log_info("edge state saved: %u UDP flows, %zu bytes, %s", p->cur.n_flows, p->sbuf.len,
                 p->snap_path);
        journals_drop_before(p, p->sgen); /* everything is in the snapshot now */
    }
    statefile_buf_free(&p->sbuf);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void restore(struct edge_persist *p, uint64_t now_ms)
{
    uint8_t *buf;
    size_t len;
    uint32_t ver;
    uint32_t from = 1;
    const char *snap = "no snapshot";
    int rc = statefile_load(p->snap_path, EDGE_STATE_KIND, EDGE_STATE_VERSION, "edge flow", &buf,
                            &len, &ver);
    if (rc == 0) {
        struct edge_restore_result res;
        char err[256] = "";
        struct statefile_rd rd;
        statefile_rd_init(&rd, buf, len);
        from = statefile_get_u32(&rd);
        rc = rd.err || from == 0 ? -EBADMSG
                                 : edge_state_restore(p->edge, buf + 4, len - 4, ver, now_ms, &res,
                                                      err, sizeof(err));
        free(buf);
        if (rc < 0) {
            char moved[PERSIST_PATH_MAX + 32] = "";
            statefile_move_aside(p->snap_path, moved, sizeof(moved));
            log_error("edge flow state refused: %s: %s; starting with no edge flow state%s%s",
                      p->snap_path, err[0] ? err : "malformed",
                      moved[0] ? ", the file was moved to " : "", moved);
            from = 1;
        } else {
            snap = "the snapshot";
        }
    }
    /* The journals since the snapshot's generation, in order. */
    unsigned chunks = 0, files = 0;
    uint32_t g = from;
    for (;; g++) {
        char path[PERSIST_PATH_MAX];
        journal_path(p, g, path, sizeof(path));
        if (access(path, F_OK) != 0)
            break;
        bool is_torn;
        struct replay_ctx rctx = {.edge = p->edge, .now_ms = now_ms};
        int n = statefile_read_chunks(path, replay_chunk, &rctx, &is_torn);
        chunks += n > 0 ? (unsigned)n : 0;
        files++;
        if (is_torn)
            log_warn("edge journal %s: its last write was cut short; the changes in it are lost",
                     path);
    }
    p->oldest_gen = from > 1 ? from - 1 : 1;
    p->gen = g; /* a fresh file for this run */
    if (rc == -ENOENT && files == 0) {
        log_info("edge state: nothing in %s yet, starting empty", p->dir);
        return;
    }
    log_info("edge state restored from %s: %u UDP flows from %s and %u journal writes in %u "
             "files",
             p->dir, edge_n_flows(p->edge), snap, chunks, files);
}

int edge_persist_open(struct edge_persist **out, uv_loop_t *loop, struct edge *edge,
                      const char *dir, uint64_t now_ms)
{
    struct edge_persist *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->edge = edge;
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    statefile_path(p->snap_path, sizeof(p->snap_path), dir, "edge.state");
    restore(p, now_ms);
    edge_journal_enable(edge, true);
    p->last_snap_ms = now_ms;
    p->want_snap = true; /* compacts what was replayed */
    *out = p;
    return 0;
}

void edge_persist_tick(struct edge_persist *p, uint64_t now_ms)
{
    if (!p || p->is_stopping)
        return;
    journal_flush(p);
    snapshot_step(p, now_ms);
}

void edge_persist_stop(struct edge_persist *p, uint64_t now_ms)
{
    if (!p || p->is_stopping)
        return;
    p->is_stopping = true;
    memset(&p->cur, 0, sizeof(p->cur));
    final_snapshot(p, now_ms);
}

void edge_persist_free(struct edge_persist *p)
{
    if (!p)
        return;
    statefile_buf_free(&p->jbuf);
    statefile_buf_free(&p->sbuf);
    free(p);
}
