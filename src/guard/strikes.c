/*
 * strikes: a ring of STRIKES_SLOTS counters, each owning window/SLOTS milliseconds. A slot
 * is recycled when its epoch (slot number) is older than the window, so adding and summing
 * are O(SLOTS) with no timers. Epochs are 32-bit and compared by difference, so they wrap.
 */
#include <string.h>

#include "guard/guard_internal.h"

void strikes_init(struct strikes *s)
{
    memset(s, 0, sizeof(*s));
}

void strikes_reset(struct strikes *s)
{
    memset(s->count, 0, sizeof(s->count));
}

static uint64_t slot_ms(uint64_t window_ms)
{
    uint64_t ms = window_ms / STRIKES_SLOTS;
    return ms == 0 ? 1 : ms;
}

uint32_t strikes_sum(const struct strikes *s, uint64_t window_ms, uint64_t now_ms)
{
    uint32_t now_epoch = (uint32_t)(now_ms / slot_ms(window_ms));
    uint64_t sum = 0;
    for (unsigned i = 0; i < STRIKES_SLOTS; i++) {
        uint32_t age = now_epoch - s->epoch[i];
        if (s->count[i] != 0 && age < STRIKES_SLOTS)
            sum += s->count[i];
    }
    return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

uint32_t strikes_add(struct strikes *s, uint32_t weight, uint64_t window_ms, uint64_t now_ms)
{
    uint32_t epoch = (uint32_t)(now_ms / slot_ms(window_ms));
    unsigned i = epoch % STRIKES_SLOTS;
    if (s->epoch[i] != epoch) {
        s->epoch[i] = epoch;
        s->count[i] = 0;
    }
    s->count[i] = UINT32_MAX - s->count[i] < weight ? UINT32_MAX : s->count[i] + weight;
    return strikes_sum(s, window_ms, now_ms);
}
