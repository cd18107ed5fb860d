// OpenSSL (libssl, libcrypto) from Debian's libssl-dev, for WALTLS. Swift cannot call the
// function-like macros OpenSSL defines for some settings, so they are wrapped here, one line each.
#ifndef WALD_COPENSSL_SHIM_H
#define WALD_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

static inline int wald_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

/// Partial writes, a write buffer that may move between retries (a Swift array grows), and no
/// idle read/write buffers kept per connection.
static inline void wald_ssl_ctx_set_modes(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

/// No renegotiation (a TLS 1.2 client cannot make SSL_write wait for a read), no compression
/// (CRIME), and a peer that closes without close_notify is an ordinary end of stream: every
/// wald protocol frames its own messages, so a truncation is visible anyway.
static inline void wald_ssl_ctx_set_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF
                        | SSL_OP_CIPHER_SERVER_PREFERENCE);
}

static inline int wald_ssl_set_sni(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

#endif
