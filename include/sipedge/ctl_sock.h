/*
 * ctl_sock: the UNIX control socket that sipedgectl talks to.
 *
 * The server lives on the worker's loop, listens on PATH with mode 0660, serves at most
 * CTL_SOCK_MAX_CLIENTS clients with lines of at most ADMIN_LINE_MAX bytes, and answers each
 * line with admin_cmd_exec (admin.h).
 */
#ifndef SIPEDGE_CTL_SOCK_H
#define SIPEDGE_CTL_SOCK_H

struct admin_scope;
struct uv_loop_s;

#define CTL_SOCK_MAX_CLIENTS 8

struct ctl_sock;

/*
 * Listens on the UNIX socket path (a stale socket file there is replaced; any other file is
 * an error) with mode 0660 on loop; commands act on scope (borrowed; must outlive the socket).
 * Returns 0, -EINVAL, -ENOMEM, -EEXIST (path is not a socket) or a negative errno from bind.
 */
int ctl_sock_new(struct ctl_sock **out, struct uv_loop_s *loop, const char *path,
                 const struct admin_scope *scope);

typedef void (*ctl_sock_close_cb)(void *arg);
/* Stops listening, closes every client, unlinks the socket file; cb (may be NULL) runs once
 * every handle has closed and the memory is released. */
void ctl_sock_close(struct ctl_sock *s, ctl_sock_close_cb cb, void *arg);

#endif
