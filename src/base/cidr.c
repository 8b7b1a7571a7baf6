/*
 * cidr: address prefixes parsed from text. Base code because two layers need the same
 * spelling rules: the policy loader refuses a bad allowlist entry at load time, and the
 * guard's allowlist matches sources against the parsed prefixes.
 */
#include "sipedge/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int cidr_parse(const char *text, struct cidr *out)
{
    char buf[64];
    if (text == NULL || strlen(text) >= sizeof(buf) || text[0] == '\0')
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%s", text);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end = NULL;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        prefix = strtol(slash + 1, &end, 10);
        if (*end != '\0')
            return -EINVAL;
    }
    struct cidr c = {0};
    if (inet_pton(AF_INET, buf, c.addr) == 1) {
        c.family = AF_INET;
        if (prefix > 32)
            return -EINVAL;
        c.prefix = prefix < 0 ? 32 : (uint8_t)prefix;
    } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
        c.family = AF_INET6;
        if (prefix > 128)
            return -EINVAL;
        c.prefix = prefix < 0 ? 128 : (uint8_t)prefix;
    } else {
        return -EINVAL;
    }
    /* Host bits are cleared so matching is a plain masked compare. */
    unsigned bits = c.prefix;
    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8) {
            bits -= 8;
            continue;
        }
        c.addr[i] &= (uint8_t)(0xff00u >> bits);
        bits = 0;
    }
    if (out != NULL)
        *out = c;
    return 0;
}
