/* stream_frame: arbitrary bytes framed whole and fed in chunks (as reads arrive) must give
 * the same messages and keepalives, and every length must stay inside the buffer and the
 * cap. The first byte picks the chunk size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/stream_internal.h"

#define FUZZ_MAX 4096
#define FUZZ_EVENTS 512

struct ev {
    int kind;
    size_t len;
};

static size_t run(const char *buf, size_t size, size_t chunk, struct ev *evs)
{
    size_t n_ev = 0, off = 0, avail = 0, scanned = 0;
    while (n_ev < FUZZ_EVENTS) {
        if (avail < size)
            avail = avail + chunk < size ? avail + chunk : size;
        struct stream_frame_res r;
        enum stream_frame_kind k = stream_frame(buf + off, avail - off, FUZZ_MAX, scanned, &r);
        if (r.kind != k)
            abort();
        if (k == STREAM_FRAME_NEED) {
            if (r.scanned > avail - off || (r.len && r.len <= avail - off) || r.len > FUZZ_MAX)
                abort();
            scanned = r.scanned;
            if (avail == size)
                break;
            continue;
        }
        evs[n_ev].kind = k;
        evs[n_ev].len = r.len;
        n_ev++;
        if (k >= STREAM_FRAME_ERR_NO_CL)
            break;
        if (r.len == 0 || r.len > avail - off || r.len > FUZZ_MAX)
            abort();
        if (k == STREAM_FRAME_PING && memcmp(buf + off, "\r\n\r\n", 4) != 0)
            abort();
        off += r.len;
        scanned = 0;
    }
    return n_ev;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ev whole[FUZZ_EVENTS], split[FUZZ_EVENTS];
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 64 + 1;
    const char *buf = (const char *)data + 1;
    size--;
    size_t a = run(buf, size, size ? size : 1, whole);
    size_t b = run(buf, size, chunk, split);
    if (a == FUZZ_EVENTS || b == FUZZ_EVENTS)
        return 0;
    if (a != b)
        abort();
    for (size_t i = 0; i < a; i++) {
        if (whole[i].kind != split[i].kind)
            abort();
        if (whole[i].kind < STREAM_FRAME_ERR_NO_CL && whole[i].len != split[i].len)
            abort();
    }
    return 0;
}
