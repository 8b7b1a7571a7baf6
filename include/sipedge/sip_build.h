/*
 * sip_build: writes an outgoing message into one caller buffer.
 *
 * The builder copies ranges of a received message around the edits (insert a header,
 * drop a header line, replace a header value) so every byte is written once. It never
 * allocates; a message that does not fit fails with -ENOSPC and leaves no partial
 * result the caller could send.
 */
#ifndef SIPEDGE_SIP_BUILD_H
#define SIPEDGE_SIP_BUILD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "sipedge/slice.h"

struct sip_build {
    char *buf;
    size_t cap;
    size_t len;
    int err; /* first error (-ENOSPC), sticky */
};

void sip_build_init(struct sip_build *b, char *buf, size_t cap);
void sip_build_mem(struct sip_build *b, const void *p, size_t n);
void sip_build_str(struct sip_build *b, const char *s);
void sip_build_slice(struct sip_build *b, struct slice s);
void sip_build_fmt(struct sip_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sip_build_u32(struct sip_build *b, uint32_t v);
/* Returns 0 and the length, or b->err. */
int sip_build_finish(struct sip_build *b, size_t *len);

#endif
