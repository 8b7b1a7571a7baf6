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

struct guard;

#define ADMIN_LINE_MAX 512
#define ADMIN_REPLY_MAX (1024 * 1024)

/*
 * Executes one command line (trailing CR/LF ignored) against g, at the latest time the guard
 * has seen (guard_now_ms), writing a JSON reply plus '\n' into out (a `bans` list that does
 * not fit is cut and marked "truncated":true). Returns the reply length (< cap), or -EINVAL
 * when cap < 128 (nothing executed).
 */
int admin_cmd_exec(struct guard *g, const char *line, char *out, size_t cap);

#endif
