/*
 * admin_http_internal: what the HTTP admin listener's two halves share, private to
 * src/ops. admin_http.c is the server (lws context, listener, access control, request
 * collection, reply streaming, teardown); admin_http_routes.c answers one complete
 * request (routing, JSON rendering into a reply buffer, the API's handlers).
 */
#ifndef SIPEDGE_ADMIN_HTTP_INTERNAL_H
#define SIPEDGE_ADMIN_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <libwebsockets.h>
#include <uv.h>

#include "sipedge/admin_http.h"
#include "sipedge/lws_uv.h"

#define HTTP_REPLY_MAX (16u * 1024 * 1024)
#define HTTP_PATH_MAX 256

enum http_method { HTTP_GET = 1, HTTP_POST, HTTP_DELETE, HTTP_OTHER };

/* A growing reply buffer, bounded by HTTP_REPLY_MAX. */
struct abuf {
    char *p;
    size_t len, cap;
    bool is_full;
};

/* Makes room for need more bytes (and the NUL); false, and is_full set, past the bound. */
bool abuf_grow(struct abuf *b, size_t need);
void abuf_put(struct abuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "name":"escaped" (with a leading comma unless is_first). */
void abuf_str(struct abuf *b, bool is_first, const char *name, const char *s);

/* Per connection; lws zero-fills it. One request at a time (HTTP/1.1 keep-alive). */
struct http_pss {
    enum http_method method;
    bool is_body_expected, is_too_large, is_closing;
    char path[HTTP_PATH_MAX];
    size_t body_len;
    char body[ADMIN_HTTP_BODY_MAX + 1];
    char *reply; /* rendered answer; copied behind LWS_PRE chunk by chunk when writable */
    size_t reply_len, reply_off;
};

struct admin_http {
    struct admin_http_opts o;
    char token[ADMIN_HTTP_TOKEN_MAX];
    char listen_text[64];
    void *foreign_loops[1];
    struct lws_context *lws;
    struct lws_vhost *vh;
    int fd;
    uv_poll_t poll;
    uv_timer_t stop_timer;
    unsigned n_handles_open;
    struct lws_uv_teardown teardown;
    bool is_closing, is_lws_destroyed, is_polling;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

/* Answers one complete request: fills b and returns the status; *ctype is the type. */
unsigned http_route(struct admin_http *h, struct lws *wsi, struct http_pss *pss, struct abuf *b,
                    const char **ctype);

#endif
