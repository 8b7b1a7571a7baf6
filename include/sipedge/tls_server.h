/*
 * tls_server: the server certificate context for SIP over TLS, built from the config
 * (tls.cert, tls.key, tls.client_ca, tls.require_client_cert) with OpenSSL: TLS 1.2
 * minimum (1.3 preferred), session resumption by tickets, optional client certificates.
 *
 * One context serves every worker (OpenSSL's SSL_CTX is safe to share across threads);
 * it is reference-counted so a reload can hand workers a new one while connections made
 * with the old one go on. A reload keeps the session ticket keys, so clients resume
 * across it.
 */
#ifndef SIPEDGE_TLS_SERVER_H
#define SIPEDGE_TLS_SERVER_H

#include <stddef.h>

#include "sipedge/config.h"

struct tls_server;
typedef struct ssl_ctx_st SSL_CTX;

/*
 * Builds a context from cfg. prev (may be NULL): a context whose ticket keys carry
 * over. Returns 0, or a negative errno with the reason (file and OpenSSL's words: an
 * unreadable file, a key that does not match the certificate) in err.
 */
int tls_server_new(struct tls_server **out, const struct config *cfg,
                   const struct tls_server *prev, char *err, size_t cap);
struct tls_server *tls_server_ref(struct tls_server *s);
void tls_server_unref(struct tls_server *s);
SSL_CTX *tls_server_ctx(const struct tls_server *s);

#endif
