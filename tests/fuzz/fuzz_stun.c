/* STUN Binding answers: arbitrary bytes in, a well-formed response or a refusal out. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipedge/stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_port = htons(5060)};
    memset(&src.sin6_addr, 0x20, sizeof(src.sin6_addr));
    uint8_t out[128];
    (void)stun_is_stun(data, size);
    int n = stun_binding_response(data, size, (struct sockaddr *)&src, out, sizeof(out));
    if (n > 0 && ((size_t)n > sizeof(out) || out[0] != 0x01 || out[1] != 0x01))
        abort();
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(1)};
    n = stun_binding_response(data, size, (struct sockaddr *)&v4, out, 20);
    if (n > 0)
        abort(); /* 20 bytes can never hold a response with XOR-MAPPED-ADDRESS */
    return 0;
}
