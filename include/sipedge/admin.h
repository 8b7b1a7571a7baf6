/*
 * admin: the operator command language of the guard.
 *
 * admin_cmd_exec is a plain dispatcher (no I/O) so the UNIX control socket (ctl_sock.h), the
 * HTTP API or a test can drive it. Commands, one per line:
 *   bans                    list live bans
 *   ban ADDR [DURATION]     ADDR = ip, ip:port or [ipv6]:port; DURATION = seconds or
 *                           Ns/Nm/Nh/Nd; without it the next ladder step
 *   unban ADDR
 *   stats                   guard and ban counters
 * Every reply is one JSON object on one line: {"ok":true,...} or {"ok":false,"error":"..."}.
 */
#ifndef SIPEDGE_ADMIN_H
#define SIPEDGE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct ban_key;
struct edge;
struct guard;

/*
 * What the admin surfaces act on: every worker's guard and edge. Sources are steered to
 * workers by address, so each ban lives in the guard of the worker that owns its source
 * (owner); reading or changing another thread's guard happens only between isolate and
 * release, while every worker waits (control.c).
 */
struct admin_scope {
    struct guard *const *guards; /* one per worker */
    struct edge *const *edges;   /* one per worker, or NULL */
    unsigned n;
    unsigned (*owner)(void *ctx, const struct ban_key *k); /* NULL: worker 0 */
    void (*isolate)(void *ctx);                            /* NULL: one thread, nothing to do */
    void (*release)(void *ctx);
    void *ctx;
};

#define ADMIN_LINE_MAX 512
#define ADMIN_REPLY_MAX (1024 * 1024)

/*
 * Executes one command line (trailing CR/LF ignored) against g, at the latest time the guard
 * has seen (guard_now_ms), writing a JSON reply plus '\n' into out (a `bans` list that does
 * not fit is cut and marked "truncated":true). Returns the reply length (< cap), or -EINVAL
 * when cap < 128 (nothing executed).
 */
int admin_cmd_exec(struct guard *g, const char *line, char *out, size_t cap);
/* The same over every guard of s, isolated: bans lists every worker's, stats sums them,
 * ban goes to the source's owner, unban to whichever holds it. */
int admin_cmd_exec_scope(const struct admin_scope *s, const char *line, char *out, size_t cap);
void admin_scope_isolate(const struct admin_scope *s);
void admin_scope_release(const struct admin_scope *s);

#endif
