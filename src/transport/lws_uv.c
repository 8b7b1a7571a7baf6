#include "sipedge/lws_uv.h"

#include <libwebsockets.h>

#include "sipedge/log.h"

static void on_walk_count_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        (*(unsigned *)arg)++;
}

bool lws_uv_teardown_step(struct lws_uv_teardown *td, uv_loop_t *loop, unsigned max_polls,
                          const char *who)
{
    if (!td->ctx)
        return true;
    if (!td->is_started) {
        td->is_started = true;
        td->n_polls = 0;
        lws_context_destroy(td->ctx);
        return false;
    }
    unsigned n_closing = 0;
    uv_walk(loop, on_walk_count_closing, &n_closing);
    if (n_closing && ++td->n_polls < max_polls)
        return false;
    if (n_closing)
        log_warn("%s: lws handles still closing after %u polls; context left behind", who,
                 max_polls);
    else
        lws_context_destroy(td->ctx);
    td->ctx = NULL;
    return true;
}
