/*
 * edge_persist: the edge's UDP flows on disk, in the state directory.
 *
 *   edge.state        a snapshot (statefile kind "flows"): u32 journal generation S, then
 *                     the edge's payload (edge_state_save)
 *   edge.journal.N    the changes made since snapshot generation N started, appended
 *                     every tick as chunks: u32 length | 16 bytes of SHA-256 | records
 *
 * A snapshot of a large table is serialised a slice per tick and written by the thread
 * pool; it is taken when the journal has grown to several times the snapshot's size (or
 * every WORKER_SNAPSHOT_MAX_MS), so its cost follows the REGISTER rate, not the table
 * size per second. Each REGISTER the registrar confirms costs one small record in the
 * journal, which reaches the disk within a tick: a crash loses at most that tick.
 * Start-up reads the snapshot, replays journals S, S+1, ... in order (a torn last chunk
 * ends the replay), and logs what it restored. Everything runs on the loop thread except
 * the file writes.
 */
#ifndef SIPEDGE_WORKER_EDGE_PERSIST_H
#define SIPEDGE_WORKER_EDGE_PERSIST_H

#include <stdint.h>
#include <uv.h>

struct edge;
struct edge_persist;

/* Restores from dir and turns the edge's journal on. Returns 0 or -ENOMEM (a bad file is
 * logged, moved aside, and the edge starts empty: not an error). */
int edge_persist_open(struct edge_persist **out, uv_loop_t *loop, struct edge *edge,
                      const char *dir, uint64_t now_ms);
/* Once per worker tick: journal chunk out, next snapshot slice. */
void edge_persist_tick(struct edge_persist *p, uint64_t now_ms);
/* At stop: the final snapshot (written now, or by the completion of a write in flight). */
void edge_persist_stop(struct edge_persist *p, uint64_t now_ms);
/* After the loop ran to its end. */
void edge_persist_free(struct edge_persist *p);

#endif
