/*
 * reg_store: SQLite persistence of the registrar's bindings. See reg_store.h.
 */
#include "registrar/reg_store.h"

#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "sipedge/netaddr.h"

/* "SIPR" in PRAGMA application_id: tells our file from any other SQLite database. */
#define REG_STORE_APP_ID 0x53495052
#define REG_STORE_VERSION 1
#define REG_STORE_BUSY_MS 2000

static const char schema_sql[] = "CREATE TABLE bindings ("
                                 " slot INTEGER PRIMARY KEY,"
                                 " aor TEXT NOT NULL,"
                                 " contact TEXT NOT NULL,"
                                 " q INTEGER NOT NULL,"
                                 " expires_unix_ms INTEGER NOT NULL,"
                                 " updated_unix_ms INTEGER NOT NULL,"
                                 " call_id TEXT NOT NULL,"
                                 " cseq INTEGER NOT NULL,"
                                 " path TEXT NOT NULL,"
                                 " received_ip TEXT NOT NULL,"
                                 " received_port INTEGER NOT NULL,"
                                 " instance TEXT NOT NULL,"
                                 " reg_id INTEGER," /* NULL: no reg-id */
                                 " user_agent TEXT NOT NULL);";

#define COLUMNS                                                                                    \
    "slot, aor, contact, q, expires_unix_ms, updated_unix_ms, call_id, cseq, path, "               \
    "received_ip, received_port, instance, reg_id, user_agent"

enum {
    COL_SLOT = 1,
    COL_AOR,
    COL_CONTACT,
    COL_Q,
    COL_EXPIRES,
    COL_UPDATED,
    COL_CALL_ID,
    COL_CSEQ,
    COL_PATH,
    COL_RIP,
    COL_RPORT,
    COL_INSTANCE,
    COL_REG_ID,
    COL_UA
};

struct reg_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *put, *del, *clear, *begin, *commit, *rollback, *select;
};

static int fail(struct reg_store *s, int rc, char *err, size_t errcap, const char *what)
{
    snprintf(err, errcap, "registrar store %s: %s: %s", s->path, what,
             s->db ? sqlite3_errmsg(s->db) : "out of memory");
    return rc;
}

/* One integer a PRAGMA returns, or -1 on error (the database is then unreadable). */
static long long pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Creates the table in an empty file, or checks that the file is ours. */
static int schema_check(struct reg_store *s, char *err, size_t errcap)
{
    long long n_objects = pragma_int(s->db, "SELECT count(*) FROM sqlite_master");
    if (n_objects < 0)
        return fail(s, -EIO, err, errcap, "cannot read");
    long long app_id = pragma_int(s->db, "PRAGMA application_id");
    long long version = pragma_int(s->db, "PRAGMA user_version");
    if (app_id == 0 && n_objects == 0) {
        char sql[sizeof(schema_sql) + 128];
        snprintf(sql, sizeof(sql),
                 "BEGIN; %s PRAGMA application_id=%d; PRAGMA user_version=%d; COMMIT;", schema_sql,
                 REG_STORE_APP_ID, REG_STORE_VERSION);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return fail(s, -EIO, err, errcap, "cannot create the bindings table");
        return 0;
    }
    if (app_id != REG_STORE_APP_ID) {
        snprintf(err, errcap,
                 "registrar store %s: foreign schema (an SQLite database with application_id "
                 "%lld, not a sipedge registrar store); refusing to change it",
                 s->path, app_id);
        return -EPROTO;
    }
    if (version != REG_STORE_VERSION) {
        snprintf(err, errcap,
                 "registrar store %s: schema version %lld, this sipedge reads version %d", s->path,
                 version, REG_STORE_VERSION);
        return -EPROTO;
    }
    return 0;
}

static int prepare(struct reg_store *s, sqlite3_stmt **st, const char *sql, char *err,
                   size_t errcap)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK)
        return 0;
    /* Our version and id with other columns: a damaged or hand-edited file. */
    snprintf(err, errcap, "registrar store %s: foreign schema: %s", s->path, sqlite3_errmsg(s->db));
    return -EPROTO;
}

static int prepare_all(struct reg_store *s, char *err, size_t errcap)
{
    int rc = prepare(s, &s->put,
                     "INSERT OR REPLACE INTO bindings (" COLUMNS
                     ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                     err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->del, "DELETE FROM bindings WHERE slot = ?1", err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->clear, "DELETE FROM bindings", err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->begin, "BEGIN IMMEDIATE", err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->commit, "COMMIT", err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->rollback, "ROLLBACK", err, errcap);
    if (rc == 0)
        rc = prepare(s, &s->select, "SELECT " COLUMNS " FROM bindings", err, errcap);
    return rc;
}

int reg_store_open(struct reg_store **out, const char *path, char *err, size_t errcap)
{
    struct reg_store *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, errcap, "registrar store %s: out of memory", path);
        return -ENOMEM;
    }
    int rc = 0;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = fail(s, -EIO, err, errcap, "cannot open");
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, REG_STORE_BUSY_MS);
    rc = schema_check(s, err, errcap);
    if (rc != 0)
        goto out;
    /* WAL: a flush appends to the log instead of rewriting pages in place, and
     * synchronous=NORMAL syncs only at checkpoints; a process crash still loses no
     * committed transaction. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK) {
        rc = fail(s, -EIO, err, errcap, "cannot set WAL mode");
        goto out;
    }
    const unsigned char *mode = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    bool is_wal = mode && strcmp((const char *)mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!is_wal) {
        rc = fail(s, -EIO, err, errcap, "the file system does not allow WAL mode");
        goto out;
    }
    if (sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        rc = fail(s, -EIO, err, errcap, "cannot set synchronous=NORMAL");
        goto out;
    }
    rc = prepare_all(s, err, errcap);
out:
    if (rc != 0) {
        reg_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void reg_store_close(struct reg_store *s)
{
    if (!s)
        return;
    sqlite3_stmt *all[] = {s->put, s->del, s->clear, s->begin, s->commit, s->rollback, s->select};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

const char *reg_store_path(const struct reg_store *s)
{
    return s->path;
}

const char *reg_store_errmsg(const struct reg_store *s)
{
    return sqlite3_errmsg(s->db);
}

/* Runs a statement without a result and makes it reusable. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static void addr_text(const struct location_binding *b, char *ip, size_t cap, int *port)
{
    const struct sockaddr *sa = (const struct sockaddr *)&b->received;
    unsigned p = 0;
    ip[0] = '\0';
    if (b->received_len >= netaddr_len(sa) && netaddr_ip(sa, ip, cap, &p))
        *port = (int)p;
    else
        *port = 0;
}

static void addr_parse(struct location_binding *b, const char *ip, int port)
{
    if (netaddr_from_host(slice_make(ip, strlen(ip)), (uint16_t)port, 0, &b->received) == 0) {
        b->received_len = netaddr_len((const struct sockaddr *)&b->received);
    } else {
        memset(&b->received, 0, sizeof(b->received));
        b->received_len = 0;
    }
}

int reg_store_put(struct reg_store *s, const struct location_binding *b, int64_t offset_ms)
{
    sqlite3_stmt *st = s->put;
    char ip[INET6_ADDRSTRLEN];
    int port;
    addr_text(b, ip, sizeof(ip), &port);
    sqlite3_bind_int64(st, COL_SLOT, b->slot);
    sqlite3_bind_text(st, COL_AOR, b->aor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, COL_CONTACT, b->contact, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, COL_Q, b->q);
    sqlite3_bind_int64(st, COL_EXPIRES, (int64_t)b->expires_at_ms + offset_ms);
    sqlite3_bind_int64(st, COL_UPDATED, (int64_t)b->updated_ms + offset_ms);
    sqlite3_bind_text(st, COL_CALL_ID, b->call_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, COL_CSEQ, b->cseq);
    sqlite3_bind_text(st, COL_PATH, b->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, COL_RIP, ip, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, COL_RPORT, port);
    sqlite3_bind_text(st, COL_INSTANCE, b->instance, -1, SQLITE_STATIC);
    if (b->has_reg_id)
        sqlite3_bind_int64(st, COL_REG_ID, b->reg_id);
    else
        sqlite3_bind_null(st, COL_REG_ID);
    sqlite3_bind_text(st, COL_UA, b->user_agent, -1, SQLITE_STATIC);
    return run(st);
}

int reg_store_del(struct reg_store *s, uint32_t slot)
{
    sqlite3_bind_int64(s->del, 1, slot);
    return run(s->del);
}

int reg_store_clear(struct reg_store *s)
{
    return run(s->clear);
}

int reg_store_begin(struct reg_store *s)
{
    return run(s->begin);
}

int reg_store_commit(struct reg_store *s)
{
    return run(s->commit);
}

void reg_store_rollback(struct reg_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        (void)run(s->rollback);
}

/* Copies a text column into dst; false when it does not fit (a row we did not write). */
static bool col_text(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= cap)
        return false;
    if (n)
        memcpy(dst, t, n);
    dst[n] = '\0';
    return true;
}

/* Fills b from the current row; false for a row that cannot be a binding of ours. */
static bool row_read(sqlite3_stmt *st, struct location_binding *b)
{
    memset(b, 0, sizeof(*b));
    char ip[INET6_ADDRSTRLEN];
    /* Result columns count from 0, parameters from 1. */
    if (!col_text(st, COL_AOR - 1, b->aor, sizeof(b->aor)) || !b->aor[0] ||
        !col_text(st, COL_CONTACT - 1, b->contact, sizeof(b->contact)) ||
        !col_text(st, COL_CALL_ID - 1, b->call_id, sizeof(b->call_id)) ||
        !col_text(st, COL_PATH - 1, b->path, sizeof(b->path)) ||
        !col_text(st, COL_RIP - 1, ip, sizeof(ip)) ||
        !col_text(st, COL_INSTANCE - 1, b->instance, sizeof(b->instance)) ||
        !col_text(st, COL_UA - 1, b->user_agent, sizeof(b->user_agent)))
        return false;
    int64_t q = sqlite3_column_int64(st, COL_Q - 1);
    b->q = q >= 0 && q <= 1000 ? (uint16_t)q : LOCATION_Q_NONE;
    b->cseq = (uint32_t)sqlite3_column_int64(st, COL_CSEQ - 1);
    b->has_reg_id = sqlite3_column_type(st, COL_REG_ID - 1) != SQLITE_NULL;
    b->reg_id = b->has_reg_id ? (uint32_t)sqlite3_column_int64(st, COL_REG_ID - 1) : 0;
    addr_parse(b, ip, sqlite3_column_int(st, COL_RPORT - 1));
    return true;
}

int reg_store_load(struct reg_store *s, reg_store_row_fn fn, void *ctx, char *err, size_t errcap)
{
    struct location_binding b;
    int rc = 0, step;
    while ((step = sqlite3_step(s->select)) == SQLITE_ROW) {
        if (!row_read(s->select, &b))
            continue; /* not a binding this build can hold: dropped by the rewrite */
        rc = fn(ctx, &b, sqlite3_column_int64(s->select, COL_EXPIRES - 1),
                sqlite3_column_int64(s->select, COL_UPDATED - 1));
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = fail(s, -EIO, err, errcap, "cannot read the bindings");
    sqlite3_reset(s->select);
    return rc;
}
