/*
 * ctl_sock: the line-oriented UNIX control socket (sipedgectl talks to it). It lives on the
 * worker's loop and hands each line to the operator dispatcher (admin_cmd_exec), so it is an
 * ops component above the guard, not part of it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "sipedge/admin.h"
#include "sipedge/ctl_sock.h"
#include "sipedge/log.h"

struct ctl_sock_client {
    uv_pipe_t pipe;
    struct ctl_sock *ctl;
    char line[ADMIN_LINE_MAX];
    size_t len;
    bool is_closing;
    bool is_discarding; /* line too long: skip to the next newline */
};

struct ctl_sock {
    uv_pipe_t server;
    const struct admin_scope *scope;
    char path[108];
    unsigned n_clients;
    unsigned n_open_handles;
    bool is_closing;
    ctl_sock_close_cb close_cb;
    void *close_arg;
    struct ctl_sock_client *clients[CTL_SOCK_MAX_CLIENTS];
};

struct ctl_sock_write {
    uv_write_t req;
    char *buf;
};

static void ctl_sock_maybe_done(struct ctl_sock *a)
{
    if (a->is_closing && a->n_open_handles == 0) {
        ctl_sock_close_cb cb = a->close_cb;
        void *arg = a->close_arg;
        free(a);
        if (cb != NULL)
            cb(arg);
    }
}

static void on_client_closed(uv_handle_t *h)
{
    struct ctl_sock_client *c = (struct ctl_sock_client *)h;
    struct ctl_sock *a = c->ctl;
    for (unsigned i = 0; i < CTL_SOCK_MAX_CLIENTS; i++)
        if (a->clients[i] == c)
            a->clients[i] = NULL;
    a->n_clients--;
    a->n_open_handles--;
    free(c);
    ctl_sock_maybe_done(a);
}

static void client_close(struct ctl_sock_client *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

static void on_written(uv_write_t *req, int status)
{
    struct ctl_sock_write *w = (struct ctl_sock_write *)req;
    (void)status;
    free(w->buf);
    free(w);
}

static void client_send(struct ctl_sock_client *c, char *buf, size_t len)
{
    struct ctl_sock_write *w = malloc(sizeof(*w));
    if (w == NULL) {
        free(buf);
        client_close(c);
        return;
    }
    w->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0) {
        free(buf);
        free(w);
        client_close(c);
    }
}

static void client_exec(struct ctl_sock_client *c)
{
    char *out = malloc(ADMIN_REPLY_MAX);
    if (out == NULL) {
        client_close(c);
        return;
    }
    int n = admin_cmd_exec_scope(c->ctl->scope, c->line, out, ADMIN_REPLY_MAX);
    if (n <= 0) {
        free(out);
        client_close(c);
        return;
    }
    client_send(c, out, (size_t)n);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[ADMIN_LINE_MAX];
    (void)h;
    (void)suggested;
    /* Single loop thread: one read at a time, copied into the client's line at once. */
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ctl_sock_client *c = (struct ctl_sock_client *)s;
    if (nread < 0) {
        client_close(c);
        return;
    }
    for (ssize_t i = 0; i < nread && !c->is_closing; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            if (c->is_discarding) {
                c->is_discarding = false;
                static const char msg[] = "{\"ok\":false,\"error\":\"line too long\"}\n";
                char *copy = malloc(sizeof(msg));
                if (copy != NULL) {
                    memcpy(copy, msg, sizeof(msg));
                    client_send(c, copy, sizeof(msg) - 1);
                }
            } else {
                c->line[c->len] = '\0';
                client_exec(c);
            }
            c->len = 0;
        } else if (!c->is_discarding) {
            if (c->len + 1 >= sizeof(c->line))
                c->is_discarding = true;
            else
                c->line[c->len++] = ch;
        }
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct ctl_sock *a = (struct ctl_sock *)server;
    if (status < 0)
        return;
    struct ctl_sock_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->ctl = a;
    uv_pipe_init(server->loop, &c->pipe, 0);
    a->n_clients++;
    a->n_open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        client_close(c);
        return;
    }
    unsigned slot = CTL_SOCK_MAX_CLIENTS;
    for (unsigned i = 0; i < CTL_SOCK_MAX_CLIENTS; i++)
        if (a->clients[i] == NULL) {
            slot = i;
            break;
        }
    if (slot == CTL_SOCK_MAX_CLIENTS) {
        log_warn("admin: too many clients (%d), refusing one", CTL_SOCK_MAX_CLIENTS);
        client_close(c);
        return;
    }
    a->clients[slot] = c;
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void on_server_closed(uv_handle_t *h)
{
    struct ctl_sock *a = (struct ctl_sock *)h;
    a->n_open_handles--;
    ctl_sock_maybe_done(a);
}

int ctl_sock_new(struct ctl_sock **out, uv_loop_t *loop, const char *path,
                 const struct admin_scope *scope)
{
    if (out == NULL || loop == NULL || path == NULL || scope == NULL || path[0] == '\0' ||
        strlen(path) >= sizeof(((struct ctl_sock *)0)->path))
        return -EINVAL;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        unlink(path);
    }
    struct ctl_sock *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->scope = scope;
    snprintf(a->path, sizeof(a->path), "%s", path);
    uv_pipe_init(loop, &a->server, 0);
    a->n_open_handles = 1;
    /* Created owner-only, widened to 0660 once bound, so no one connects in between. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&a->server, path);
    umask(old);
    if (rc == 0 && chmod(path, 0660) != 0)
        rc = -errno;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, CTL_SOCK_MAX_CLIENTS, on_connection);
    if (rc != 0) {
        log_error("admin: cannot listen on %s: %s", path, uv_strerror(rc));
        a->is_closing = true;
        uv_close((uv_handle_t *)&a->server, on_server_closed);
        return rc;
    }
    log_info("admin: listening on %s", path);
    *out = a;
    return 0;
}

void ctl_sock_close(struct ctl_sock *a, ctl_sock_close_cb cb, void *arg)
{
    if (a == NULL || a->is_closing)
        return;
    a->is_closing = true;
    a->close_cb = cb;
    a->close_arg = arg;
    unlink(a->path);
    for (unsigned i = 0; i < CTL_SOCK_MAX_CLIENTS; i++)
        if (a->clients[i] != NULL)
            client_close(a->clients[i]);
    uv_close((uv_handle_t *)&a->server, on_server_closed);
}
