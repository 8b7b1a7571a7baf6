/*
 * reg_store: the registrar's bindings in an SQLite database (WAL mode), so that a
 * restart does not make every phone unreachable until it registers again.
 *
 * One row per binding, keyed by the binding's slot in this process's location table;
 * times are wall-clock unix milliseconds because the registrar's own clock (now_ms) is
 * monotonic and means nothing to the next process. Writing is batched by the caller:
 * reg_store_begin, any number of reg_store_put / reg_store_del, reg_store_commit, all
 * through prepared statements kept for the life of the store. synchronous=NORMAL: a
 * power loss may lose the last transactions, a process crash loses nothing committed.
 *
 * The file is marked with an application id and a schema version; a file that is not
 * an SQLite database, or one written by something else, is refused, never changed.
 * Single-threaded; every call blocks on the disk.
 */
#ifndef SIPEDGE_REG_STORE_H
#define SIPEDGE_REG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "registrar/registrar_internal.h"

struct reg_store;

/*
 * Opens path, creating the file and its table when it does not exist or is empty.
 * Returns 0; -EIO when the file cannot be opened or is not an SQLite database,
 * -EPROTO when it holds another schema or version (err says which, with the path);
 * -ENOMEM.
 */
int reg_store_open(struct reg_store **out, const char *path, char *err, size_t errcap);
void reg_store_close(struct reg_store *s);
const char *reg_store_path(const struct reg_store *s);

/*
 * Calls fn for every stored row. b is a scratch binding with every field but slot, gen,
 * expires_at_ms and updated_ms filled; the times come as unix ms. fn returns 0 to go on.
 * Returns 0, fn's non-zero value, or -EIO (err filled).
 */
typedef int (*reg_store_row_fn)(void *ctx, const struct location_binding *b,
                                int64_t expires_unix_ms, int64_t updated_unix_ms);
int reg_store_load(struct reg_store *s, reg_store_row_fn fn, void *ctx, char *err, size_t errcap);

/* One write transaction. Each returns 0 or -EIO; after a failure call reg_store_rollback. */
int reg_store_begin(struct reg_store *s);
/* Writes b (slot is the key) with its times moved to unix ms by adding offset_ms. */
int reg_store_put(struct reg_store *s, const struct location_binding *b, int64_t offset_ms);
int reg_store_del(struct reg_store *s, uint32_t slot);
/* Removes every row (before the rows of a load are written back under new slots). */
int reg_store_clear(struct reg_store *s);
int reg_store_commit(struct reg_store *s);
void reg_store_rollback(struct reg_store *s);

/* The last SQLite error message of the store. */
const char *reg_store_errmsg(const struct reg_store *s);

#endif
