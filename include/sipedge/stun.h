/*
 * stun: STUN Binding (RFC 5389) answered on the SIP UDP ports, the keepalive of
 * RFC 5626 §4.4.2. Only Binding requests are handled; everything else is not STUN
 * for us. Pure functions, no state.
 */
#ifndef SIPEDGE_STUN_H
#define SIPEDGE_STUN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* True when the datagram's first byte says STUN rather than SIP (RFC 5626 §4.4.2:
 * STUN messages start with two zero bits, SIP with a letter or CR/LF). */
bool stun_is_stun(const void *buf, size_t len);

/*
 * Builds the Binding success response to the Binding request in req, with
 * XOR-MAPPED-ADDRESS = src (and FINGERPRINT when the request had one).
 * Returns the response length, or -EBADMSG when req is not a well-formed Binding
 * request, or -ENOSPC when out is too small (64 bytes are enough).
 */
int stun_binding_response(const void *req, size_t len, const struct sockaddr *src, void *out,
                          size_t cap);

#endif
