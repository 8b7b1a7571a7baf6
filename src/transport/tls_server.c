/*
 * tls_server: one OpenSSL SSL_CTX for every TLS listener of every worker, with an atomic
 * reference count (workers drop theirs from their own threads). SSL objects made from
 * the context hold their own reference to the SSL_CTX, so connections outlive a reload.
 *
 * Memory per connection is what matters here: SSL_MODE_RELEASE_BUFFERS lets an idle
 * connection give its record buffers back, partial writes and a moving write buffer let
 * the transport retry a write from its own queue. Session resumption is by tickets
 * (stateless, RFC 5077 / RFC 8446 §4.6.1), so the server cache stays small; the ticket
 * keys carry over a reload, so clients resume across it.
 */
#include "sipedge/tls_server.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_SERVER_TICKET_KEYS_LEN 80 /* OpenSSL 3: name 16 + HMAC 32 + AES 32 */
#define TLS_SERVER_SESS_CACHE 256
#define TLS_SERVER_SID_CTX "sipedge"

struct tls_server {
    atomic_uint refs;
    SSL_CTX *ctx;
};

/* "what path: OpenSSL's reason" into err; the error queue is emptied. */
static int tls_fail(char *err, size_t cap, const char *what, const char *path, int rc)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (err && cap)
        snprintf(err, cap, "%s %s: %s", what, path, reason ? reason : "failed");
    ERR_clear_error();
    return rc;
}

static int tls_client_ca(SSL_CTX *ctx, const struct config *cfg, char *err, size_t cap)
{
    if (!cfg->tls_client_ca[0]) {
        if (cfg->tls_require_client_cert) {
            if (err && cap)
                snprintf(err, cap, "tls.require_client_cert: no tls.client_ca to verify with");
            return -EINVAL;
        }
        return 0;
    }
    if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1)
        return tls_fail(err, cap, "tls.client_ca", cfg->tls_client_ca, -EINVAL);
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
    if (!names)
        return tls_fail(err, cap, "tls.client_ca", cfg->tls_client_ca, -EINVAL);
    SSL_CTX_set_client_CA_list(ctx, names);
    int mode = SSL_VERIFY_PEER;
    if (cfg->tls_require_client_cert)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    return 0;
}

int tls_server_new(struct tls_server **out, const struct config *cfg, const struct tls_server *prev,
                   char *err, size_t cap)
{
    int rc;
    if (!out || !cfg)
        return -EINVAL;
    if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
        if (err && cap)
            snprintf(err, cap, "tls.cert and tls.key are required");
        return -EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return tls_fail(err, cap, "tls", "context", -ENOMEM);

    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A peer that closes without close_notify has ended the connection, not attacked
     * it: SIP on a stream is framed by Content-Length, so truncation cannot pass. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, TLS_SERVER_SESS_CACHE);
    /* Without it a resumed session fails the handshake once client certificates are
     * verified (SSL_R_SESSION_ID_CONTEXT_UNINITIALIZED). */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SERVER_SID_CTX,
                                   sizeof(TLS_SERVER_SID_CTX) - 1);

    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        rc = tls_fail(err, cap, "tls.cert", cfg->tls_cert, -EINVAL);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        rc = tls_fail(err, cap, "tls.key", cfg->tls_key, -EINVAL);
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = tls_fail(err, cap, "tls.key", cfg->tls_key, -EINVAL);
        goto out;
    }
    rc = tls_client_ca(ctx, cfg, err, cap);
    if (rc < 0)
        goto out;

    if (prev) {
        unsigned char keys[TLS_SERVER_TICKET_KEYS_LEN];
        if (SSL_CTX_get_tlsext_ticket_keys(prev->ctx, keys, sizeof(keys)) == 1)
            SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof(keys));
        OPENSSL_cleanse(keys, sizeof(keys));
    }

    struct tls_server *s = calloc(1, sizeof(*s));
    if (!s) {
        rc = -ENOMEM;
        goto out;
    }
    atomic_init(&s->refs, 1);
    s->ctx = ctx;
    *out = s;
    return 0;

out:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

struct tls_server *tls_server_ref(struct tls_server *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void tls_server_unref(struct tls_server *s)
{
    if (!s)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(s->ctx);
    free(s);
}

SSL_CTX *tls_server_ctx(const struct tls_server *s)
{
    return s ? s->ctx : NULL;
}
