#include "sipedge/stats_text.h"

#include <stdio.h>

void stats_text_sum(char *buf, size_t cap, const char *prefix, const char *const *names,
                    unsigned n_fields, const uint64_t *const *srcs, unsigned n_srcs)
{
    size_t off = 0;
    if (!cap)
        return;
    buf[0] = '\0';
    for (unsigned k = 0; k < n_fields && off < cap; k++) {
        unsigned long long v = 0;
        for (unsigned i = 0; i < n_srcs; i++)
            v += srcs[i][k];
        int n = snprintf(buf + off, cap - off, "%s%s%s=%llu", off ? " " : "", prefix, names[k], v);
        if (n > 0)
            off += (size_t)n;
    }
}
