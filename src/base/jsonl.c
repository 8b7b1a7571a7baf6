/*
 * jsonl: JSON string escaping and the JSON-lines writer thread behind the event and audit
 * logs. Both logs used to write(2) every line on the event loop's thread; here the loop
 * only copies a line into a bounded queue, and one thread per log writes what has
 * gathered with one write(2) per batch, in order, keeping a lagging disk off the loop.
 *
 * The queue is two buffers of queue_bytes each: callers append to the front one, the
 * writer swaps it for the empty back one and writes that outside the lock. A reopen is a
 * mark in the front buffer: the bytes before it go to the old file, the rest to the new.
 */
#include "sipedge/jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- escaping ---- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when the bytes there are not one. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t min, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t jsonl_escape(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char tmp[8];
        size_t tn = 0, adv = 1;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            tmp[tn++] = '\\';
            tmp[tn++] = (char)c;
        } else if (c == '\n') {
            tmp[tn++] = '\\', tmp[tn++] = 'n';
        } else if (c == '\r') {
            tmp[tn++] = '\\', tmp[tn++] = 'r';
        } else if (c == '\t') {
            tmp[tn++] = '\\', tmp[tn++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(tmp, "\\u00", 4);
            tn = 4;
            tmp[tn++] = hex[c >> 4];
            tmp[tn++] = hex[c & 15];
        } else if (c < 0x80) {
            tmp[tn++] = (char)c;
        } else {
            size_t n = utf8_len(p + i, len - i);
            if (n == 0) {
                memcpy(tmp, "\\ufffd", 6);
                tn = 6;
            } else {
                memcpy(tmp, p + i, n);
                tn = n;
                adv = n;
            }
        }
        if (o + tn + 1 > cap)
            break;
        memcpy(dst + o, tmp, tn);
        o += tn;
        i += adv;
    }
    dst[o] = '\0';
    return o;
}

/* ---- writer ---- */

struct jsonl {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the writer waits for lines, a reopen or the stop */
    pthread_cond_t done; /* jsonl_flush waits for batches to finish */
    pthread_t thread;
    size_t cap;
    char *front; /* lines not yet taken by the writer */
    size_t front_len;
    uint64_t front_lines;
    char *back; /* the batch being written (writer thread only) */
    /* A reopen not yet taken: new_fd gets the bytes from reopen_at on. */
    bool has_reopen;
    int new_fd;
    size_t reopen_at;
    uint64_t reopen_lines; /* lines before reopen_at */
    bool is_stopping;
    int fd; /* the writer's descriptor (writer thread only while it runs) */
    bool is_owned;
    uint64_t n_done; /* lines written or failed */
    struct jsonl_stats st;
    char path[512];
    struct jsonl *next; /* every open writer, for jsonl_flush_all */
};

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static struct jsonl *open_head;

static int open_append(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    return fd < 0 ? -errno : fd;
}

/* Lines (newlines) in n bytes. */
static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t k = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        k++;
    return k;
}

/* Writes n bytes holding lines lines (each ending in '\n'); returns how many of them
 * failed: every line not written whole. */
static uint64_t write_all(int fd, const char *p, size_t n, uint64_t lines)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            uint64_t lost = count_lines(p + off, n - off) + (p[n - 1] != '\n');
            return lost < lines ? lost : lines;
        }
        off += (size_t)w;
    }
    return 0;
}

static void *writer_main(void *arg)
{
    struct jsonl *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->front_len == 0 && !w->has_reopen && !w->is_stopping)
            pthread_cond_wait(&w->wake, &w->mu);
        if (w->front_len == 0 && !w->has_reopen)
            break; /* stopping, nothing left */
        char *batch = w->front;
        w->front = w->back;
        w->back = batch;
        size_t n = w->front_len;
        uint64_t lines = w->front_lines;
        w->front_len = 0;
        w->front_lines = 0;
        bool has_reopen = w->has_reopen;
        int new_fd = w->new_fd;
        size_t at = has_reopen ? w->reopen_at : n;
        uint64_t lines_at = has_reopen ? w->reopen_lines : lines;
        w->has_reopen = false;
        pthread_mutex_unlock(&w->mu);

        uint64_t failed = write_all(w->fd, batch, at, lines_at);
        if (has_reopen) {
            if (w->is_owned)
                close(w->fd);
            w->fd = new_fd;
            failed += write_all(w->fd, batch + at, n - at, lines - lines_at);
        }

        pthread_mutex_lock(&w->mu);
        w->st.failed += failed;
        w->st.written += lines - failed;
        w->n_done += lines;
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int jsonl_open(struct jsonl **out, const char *path, size_t queue_bytes)
{
    if (out == NULL || path == NULL || path[0] == '\0')
        return -EINVAL;
    if (strlen(path) >= sizeof(((struct jsonl *)0)->path))
        return -ENAMETOOLONG;
    struct jsonl *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    snprintf(w->path, sizeof(w->path), "%s", path);
    w->cap = queue_bytes ? queue_bytes : JSONL_QUEUE_DEFAULT;
    w->front = malloc(w->cap);
    w->back = malloc(w->cap);
    int rc = -ENOMEM;
    if (w->front == NULL || w->back == NULL)
        goto fail;
    if (strcmp(path, "-") == 0) {
        w->fd = STDOUT_FILENO;
    } else {
        rc = open_append(path);
        if (rc < 0)
            goto fail;
        w->fd = rc;
        w->is_owned = true;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->done, NULL);
    /* The writer takes no signals: they stay with the loop thread's handlers. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        pthread_mutex_lock(&open_mu);
        w->next = open_head;
        open_head = w;
        pthread_mutex_unlock(&open_mu);
    } else {
        pthread_cond_destroy(&w->done);
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->mu);
        if (w->is_owned)
            close(w->fd);
        goto fail;
    }
    *out = w;
    return 0;
fail:
    free(w->front);
    free(w->back);
    free(w);
    return rc;
}

void jsonl_close(struct jsonl *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&open_mu);
    struct jsonl **link = &open_head;
    while (*link != w)
        link = &(*link)->next;
    *link = w->next;
    pthread_mutex_unlock(&open_mu);
    pthread_mutex_lock(&w->mu);
    w->is_stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    if (w->is_owned)
        close(w->fd);
    pthread_cond_destroy(&w->done);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w->front);
    free(w->back);
    free(w);
}

const char *jsonl_path(const struct jsonl *w)
{
    return w->path;
}

int jsonl_reopen(struct jsonl *w)
{
    if (!w->is_owned)
        return 0;
    int fd = open_append(w->path);
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&w->mu);
    if (w->has_reopen) {
        /* A reopen the writer has not taken yet: the newer file replaces it, and the
         * lines since the first reopen go there as well. */
        close(w->new_fd);
    } else {
        w->reopen_at = w->front_len;
        w->reopen_lines = w->front_lines;
        w->has_reopen = true;
        pthread_cond_signal(&w->wake);
    }
    w->new_fd = fd;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int jsonl_put(struct jsonl *w, const char *line, size_t len)
{
    if (len == 0)
        return 0;
    pthread_mutex_lock(&w->mu);
    if (len > w->cap - w->front_len) {
        w->st.dropped++;
        pthread_mutex_unlock(&w->mu);
        return -ENOBUFS;
    }
    /* The writer only waits with an empty queue: wake it on the first line. */
    if (w->front_len == 0 && !w->has_reopen)
        pthread_cond_signal(&w->wake);
    memcpy(w->front + w->front_len, line, len);
    w->front_len += len;
    w->front_lines++;
    w->st.queued++;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void jsonl_flush(struct jsonl *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t target = w->st.queued;
    while (w->n_done < target)
        pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

void jsonl_flush_all(void)
{
    pthread_mutex_lock(&open_mu);
    for (struct jsonl *w = open_head; w != NULL; w = w->next)
        jsonl_flush(w);
    pthread_mutex_unlock(&open_mu);
}

void jsonl_stats(const struct jsonl *w, struct jsonl_stats *out)
{
    struct jsonl *m = (struct jsonl *)w; /* the lock is not part of the value */
    pthread_mutex_lock(&m->mu);
    *out = w->st;
    pthread_mutex_unlock(&m->mu);
}
