/* sh_crypto.h -- the byte work of protocols such as WebSocket (RFC 6455):
** SHA-1, base64, random bytes from the kernel, the XOR mask of WebSocket
** frames and UTF-8 validation; all ours, on no library (no OpenSSL: plain
** ws:// must not load it, see sh_tls_load.c). Knows nothing about Lua (see
** bindings/l_crypto.c); nothing here keeps state or calls back. */
#ifndef SH_CRYPTO_H
#define SH_CRYPTO_H

#include <stddef.h>

#define SH_SHA1_LEN 20

/* The SHA-1 digest of n bytes into out. Always returns 0. */
int sh_sha1(const void *data, size_t n, unsigned char out[SH_SHA1_LEN]);

/* Bytes that base64 text for n bytes takes (padding included, no NUL). */
size_t sh_base64_len(size_t n);

/* Base64 (RFC 4648, with padding, no line breaks) of n bytes into out,
** which holds sh_base64_len(n) + 1 bytes (a NUL is written). Returns the
** length of the text. */
size_t sh_base64_encode(const void *in, size_t n, char *out);

/* Decode n bytes of base64 text (padded, no white space) into out, which
** holds at least n / 4 * 3 bytes. Returns the decoded length, or -1 if the
** text is not canonical base64 (a bad character, a length not a multiple
** of 4, misplaced padding, or pad bits that are not zero). */
long sh_base64_decode(const char *in, size_t n, unsigned char *out);

/* n random bytes from the kernel's generator (getrandom(2), which waits
** only until the kernel has seeded it, early at boot). Returns 0, or -1. */
int sh_random(void *out, size_t n);

/* XOR n bytes of buf in place with the 4-byte key, the key's byte
** (offset + i) % 4 over buf[i] (offset: where buf starts in the masked
** payload). Word at a time. */
void sh_xor_mask(unsigned char *buf, size_t n, const unsigned char key[4], size_t offset);

/* Whether n bytes are valid UTF-8 (RFC 3629: no overlong forms, no
** surrogates, nothing past U+10FFFF). */
int sh_utf8_valid(const unsigned char *s, size_t n);

#endif
