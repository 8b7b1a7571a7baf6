/*
 * admin: the operator control channel of the guard.
 *
 * admin_cmd_exec is a plain dispatcher (no I/O) so a UNIX socket, an HTTP API or a test can
 * drive it. Commands, one per line:
 *   bans                    list live bans
 *   ban ADDR [DURATION]     ADDR = ip, ip:port or [ipv6]:port; DURATION = seconds or
 *                           Ns/Nm/Nh/Nd; without it the next ladder step
 *   unban ADDR
 *   stats                   guard and ban counters
 * Every reply is one JSON object on one line: {"ok":true,...} or {"ok":false,"error":"..."}.
 *
 * The UNIX socket server (admin_new) lives on the guard's loop, listens on PATH with mode
 * 0660, serves at most ADMIN_MAX_CLIENTS clients with lines of at most ADMIN_LINE_MAX bytes.
 */
#ifndef SIPEDGE_ADMIN_H
#define SIPEDGE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct guard;
struct uv_loop_s;

#define ADMIN_LINE_MAX 512
#define ADMIN_MAX_CLIENTS 8
#define ADMIN_REPLY_MAX (1024 * 1024)

/*
 * Executes one command line (trailing CR/LF ignored) against g, at the latest time the guard
 * has seen (guard_now_ms), writing a JSON reply plus '\n' into out (a `bans` list that does
 * not fit is cut and marked "truncated":true). Returns the reply length (< cap), or -EINVAL
 * when cap < 128 (nothing executed).
 */
int admin_cmd_exec(struct guard *g, const char *line, char *out, size_t cap);

struct admin;

/*
 * Listens on the UNIX socket path (a stale socket file there is replaced; any other file is
 * an error) with mode 0660 on loop; commands act on g (borrowed; must outlive the admin).
 * Returns 0, -EINVAL, -ENOMEM, -EEXIST (path is not a socket) or a negative errno from bind.
 */
int admin_new(struct admin **out, struct uv_loop_s *loop, const char *path, struct guard *g);

typedef void (*admin_close_cb)(void *arg);
/* Stops listening, closes every client, unlinks the socket file; cb (may be NULL) runs once
 * every handle has closed and the memory is released. */
void admin_close(struct admin *a, admin_close_cb cb, void *arg);

#endif
